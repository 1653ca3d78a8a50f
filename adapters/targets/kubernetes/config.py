"""Configuration of the kubernetes target and the release settings it reads.

Defaults live here as named constants; the composition root builds a
``KubernetesTargetConfig`` and passes it in — the target never reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from events.errors import InvalidInput

FIELD_MANAGER = "shiplog"
#: how long a rollout may take before the step gives up (beyond the Deployment's own
#: progressDeadlineSeconds, which fails it earlier with ProgressDeadlineExceeded)
DEFAULT_ROLLOUT_TIMEOUT_S = 900.0
#: server-side timeout of one watch request; the watch is re-opened until the rollout ends
DEFAULT_WATCH_TIMEOUT_S = 60
#: how many applied step results the Deployment's annotation keeps
DEFAULT_APPLIED_KEEP = 20
VERSION_LABEL = "app.kubernetes.io/version"
APPLIED_ANNOTATION = "shiplog.io/applied-steps"
SNAPSHOT_FORMAT = 1


class KubernetesTargetConfig(BaseModel):
    """Defaults for every release; a release's settings override the cluster ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: kubeconfig file; ``None`` and no ``kubeconfig`` setting = in-cluster config
    kubeconfig: Path | None = None
    context: str | None = None
    #: environment -> namespace, for environments not named like their namespace
    namespaces: dict[str, str] = Field(default_factory=dict)
    rollout_timeout: float = Field(default=DEFAULT_ROLLOUT_TIMEOUT_S, gt=0)
    watch_timeout: int = Field(default=DEFAULT_WATCH_TIMEOUT_S, ge=1)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1)


class KubernetesSettings(BaseModel):
    """The release settings the target reads (``Release.settings``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kubeconfig: Path | None = None
    context: str | None = None
    #: default: the environment's name
    namespace: str | None = None
    #: default: the service's name
    deployment: str | None = None
    #: the container whose image and env are set; default: the service's name
    container: str | None = None
    #: Services whose selectors a snapshot records and a restore puts back;
    #: default: a Service named like the service, when it exists
    services: list[str] | None = None
    #: container port, used when the target creates the Deployment
    port: int | None = Field(default=None, ge=1, le=65535)
    progress_deadline_seconds: int | None = Field(default=None, ge=1)

    @classmethod
    def of(cls, settings: dict[str, Any]) -> KubernetesSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise InvalidInput(f"kubernetes release settings: {exc}") from exc
