"""Canary by replica ratio: the shapes and arithmetic, no I/O.

The canary is a second Deployment ``<name>-canary`` whose pods carry the stable pods'
``app`` label, so the Service that selects ``app=<service>`` sends each pod its share:
traffic splits by the ratio of ready replicas. A Gateway API ``HTTPRoute`` split is not
supported yet; every canary step records ``split: replica_ratio``.
"""

from __future__ import annotations

from typing import Any

from adapters.targets.kubernetes.config import VERSION_LABEL

CANARY_SUFFIX = "-canary"
TRACK_LABEL = "shiplog.io/track"
SPLIT = "replica_ratio"


def canary_name(deployment: str) -> str:
    return deployment + CANARY_SUFFIX


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for ``weight``% of ``total``: at least one canary
    replica for any weight above 0, the rest stable."""
    canary = 0 if weight <= 0 else min(total, max(1, round(total * weight / 100)))
    return total - canary, canary


def weights(stable: int, canary: int) -> tuple[int, int]:
    """(stable, canary) traffic percentages of these ready replica counts."""
    if stable + canary == 0:
        return 0, 0
    share = round(100 * canary / (stable + canary))
    return 100 - share, share


def canary_deployment(
    name: str,
    app: str,
    container: dict[str, Any],
    replicas: int,
    version: str | None,
    progress_deadline_seconds: int | None,
) -> dict[str, Any]:
    """A new canary Deployment; its own selector (the track label) keeps it apart from
    the stable one, its ``app`` label puts it behind the stable one's Service."""
    selector = {"app": app, TRACK_LABEL: "canary"}
    labels = {**selector, **({VERSION_LABEL: version} if version else {})}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
    }
    if progress_deadline_seconds:
        spec["progressDeadlineSeconds"] = progress_deadline_seconds
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
