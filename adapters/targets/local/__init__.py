"""The ``local`` target: a service as real processes on this machine.

Instances run from the release's command template on free ports; a small weighted
reverse proxy per (service, environment), its own process on a stable port, splits
the traffic between versions and serves per-version Prometheus metrics. The
target's record lives in ``LocalTargetConfig.state_dir`` and outlives the process
that drives it.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.local.config import LocalTargetConfig
from adapters.targets.local.target import LocalTarget

register_target(LocalTarget.TYPE, configured(LocalTarget, LocalTargetConfig))

__all__ = ["LocalTarget", "LocalTargetConfig"]
