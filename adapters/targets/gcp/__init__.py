"""The ``cloud_run`` target: a service as a Google Cloud Run service, one revision per
version, traffic split by revision (canary) and tagged previews (blue-green).

Talks to the Cloud Run Admin API v2 with google-cloud-run's REST transport (in a
worker thread); see ``target.py`` and ``config.CloudRunSettings``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.gcp.config import CloudRunSettings, CloudRunTargetConfig
from adapters.targets.gcp.target import CloudRunTarget

register_target(CloudRunTarget.TYPE, configured(CloudRunTarget, CloudRunTargetConfig), CloudRunSettings)

__all__ = ["CloudRunSettings", "CloudRunTarget", "CloudRunTargetConfig"]
