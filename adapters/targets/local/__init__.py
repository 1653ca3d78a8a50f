"""The ``local`` target: a service as real processes on this machine.

Instances run from the release's command template on free ports; a small weighted
reverse proxy per (service, environment), its own process on a stable port, splits
the traffic between versions and serves per-version Prometheus metrics. The
target's record lives in ``LocalTargetConfig.state_dir`` and outlives the process
that drives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.local.config import LocalTargetConfig
from adapters.targets.local.target import LocalTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> LocalTarget:
    try:
        return LocalTarget(LocalTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"local target config: {exc}") from exc


register_target(LocalTarget.TYPE, _create)

__all__ = ["LocalTarget", "LocalTargetConfig"]
