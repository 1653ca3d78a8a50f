"""The ``kubernetes`` target: a service as a Deployment (and its Services) in a cluster.

Talks to the API server with kubernetes-asyncio, from a kubeconfig file or the
in-cluster service account; one namespace per environment by default. Rolling, and
canary by replica ratio (no HTTPRoute split yet), are implemented; blue-green is not
(see ``target.py`` and ``canary.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.kubernetes.config import KubernetesTargetConfig
from adapters.targets.kubernetes.target import KubernetesTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> KubernetesTarget:
    try:
        return KubernetesTarget(KubernetesTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"kubernetes target config: {exc}") from exc


register_target(KubernetesTarget.TYPE, _create)

__all__ = ["KubernetesTarget", "KubernetesTargetConfig"]
