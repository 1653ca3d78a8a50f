"""Configuration of the local target: where it keeps its record and how it runs things.

Defaults live here as named constants; the composition root builds a
``LocalTargetConfig`` from its settings and passes it in — the target itself never
reads the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HEALTH_PATH = "/healthz"
#: how long a new instance may take to answer 200 on its health path
DEFAULT_HEALTH_TIMEOUT_S = 30.0
#: how long a stopped process gets between SIGTERM and SIGKILL
DEFAULT_STOP_TIMEOUT_S = 5.0
#: how long the proxy may take to load a new routing table
DEFAULT_ROUTING_TIMEOUT_S = 5.0
#: how many applied step results the record keeps per (service, environment)
DEFAULT_APPLIED_KEEP = 1000


class LocalTargetConfig(BaseModel):
    """Everything the local target needs; built by the caller, validated here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path
    host: str = DEFAULT_HOST
    #: inclusive range the proxies' ports are taken from; ``None`` = any free port.
    #: A proxy keeps its port across restarts while the port is free.
    proxy_ports: tuple[int, int] | None = None
    #: working directory of the service commands unless a release's settings name a
    #: ``cwd``; ``None`` = the driving process's working directory.
    workdir: Path | None = None
    #: the interpreter that runs the proxy (``python -m adapters.targets.local.proxy``)
    python: str = Field(default_factory=lambda: sys.executable)
    health_timeout: float = Field(default=DEFAULT_HEALTH_TIMEOUT_S, gt=0)
    stop_timeout: float = Field(default=DEFAULT_STOP_TIMEOUT_S, gt=0)
    routing_timeout: float = Field(default=DEFAULT_ROUTING_TIMEOUT_S, gt=0)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1)

    @model_validator(mode="after")
    def _check_ports(self) -> LocalTargetConfig:
        if self.proxy_ports is not None:
            low, high = self.proxy_ports
            if not 0 < low <= high < 65536:
                raise ValueError(f"proxy_ports must be 0 < low <= high < 65536, got {self.proxy_ports}")
        return self
