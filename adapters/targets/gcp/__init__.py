"""The ``cloud_run`` target: a service as a Google Cloud Run service, one revision per
version, traffic split by revision (canary) and tagged previews (blue-green).

Talks to the Cloud Run Admin API v2 with google-cloud-run's REST transport (in a
worker thread); see ``target.py`` and ``config.CloudRunSettings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.gcp.config import CloudRunSettings, CloudRunTargetConfig
from adapters.targets.gcp.target import CloudRunTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> CloudRunTarget:
    try:
        return CloudRunTarget(CloudRunTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"cloud_run target config: {exc}") from exc


register_target(CloudRunTarget.TYPE, _create)

__all__ = ["CloudRunSettings", "CloudRunTarget", "CloudRunTargetConfig"]
