"""Canary shapes and arithmetic, no I/O.

The canary is a second Deployment ``<name>-canary``. Two ways to split traffic:

- by replica ratio (no route configured): the canary's pods carry the stable pods'
  labels (``app=<service>``, or a colour's after a blue-green switch), so the Service
  that selects those sends each pod its share; ``split: replicas``;
- by a Gateway API ``HTTPRoute`` (``settings.route``): the canary's pods carry only
  shiplog's labels, a canary Service ``<name>-canary`` selects them, and the route's
  backendRefs weigh the stable Service against it (see ``route.py``); ``split: gateway``.
"""

from __future__ import annotations

from adapters.targets.kubernetes.shapes import SERVICE_LABEL

TRACK_LABEL = "shiplog.io/track"
SPLIT_REPLICAS = "replicas"
SPLIT_GATEWAY = "gateway"


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas for ``weight``% of ``total``: at least one canary
    replica for any weight above 0, the rest stable."""
    canary = 0 if weight <= 0 else min(total, max(1, round(total * weight / 100)))
    return total - canary, canary


def weights(stable: int, canary: int) -> tuple[int, int]:
    """(stable, canary) traffic percentages of these ready replica counts (or weights)."""
    if stable + canary == 0:
        return 0, 0
    share = round(100 * canary / (stable + canary))
    return 100 - share, share


def selector(deployment: str, stable: dict[str, str], *, gateway: bool) -> dict[str, str]:
    """The canary pods' selector: the stable pods' labels and a track for a replica-ratio
    split (behind the stable Service), apart from them for a gateway split (the stable
    Service must not reach them)."""
    if gateway:
        return {SERVICE_LABEL: deployment, TRACK_LABEL: "canary"}
    return {**stable, TRACK_LABEL: "canary"}
