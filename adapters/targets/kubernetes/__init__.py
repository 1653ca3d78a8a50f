"""The ``kubernetes`` target: a service as a Deployment (and its Services) in a cluster.

Talks to the API server with kubernetes-asyncio, from a kubeconfig file or the
in-cluster service account; one namespace per environment by default. Rolling updates,
blue-green (colour Deployments, a preview Service, the active Service's selector
switched, the old colour scaled down after a delay) and canary (split by a Gateway API
HTTPRoute's backend weights when a route is configured, else by replica ratio); see
``target.py``, ``bluegreen.py``, ``canary.py``, ``route.py`` and ``snapshots.py``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.kubernetes.config import KubernetesSettings, KubernetesTargetConfig
from adapters.targets.kubernetes.target import KubernetesTarget

register_target(
    KubernetesTarget.TYPE, configured(KubernetesTarget, KubernetesTargetConfig), KubernetesSettings
)

__all__ = ["KubernetesTarget", "KubernetesTargetConfig"]
