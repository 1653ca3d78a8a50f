"""The snapshot's shape, and the upcaster from older formats — no I/O.

Format 2 (``state``): ``namespace``, ``deployment`` (the service's own), ``container``,
``version`` (of the active Deployment), and for every name the target manages:

- ``deployments``: name -> ``{"spec": <the whole Deployment spec>}``, or ``None`` when
  it did not exist (restore deletes it);
- ``services``: name -> ``{"selector": ..., "ports": ...}``, or ``None`` (deleted);
- ``route``: ``{"namespace", "name", "backendRefs": [one list per rule]}`` when a route
  is configured and existed, else ``None`` (left alone).

Format 1 (rolling and replica-ratio canary only) kept the image, env, replicas and
version of the Deployment and its canary, and the selectors of the Services that
existed; it upcasts to entries that patch those fields (``{"patch": ...}``, with a
``create`` body for the canary) and restores exactly what it restored before.
"""

from __future__ import annotations

from typing import Any

from adapters.targets.kubernetes import canary, shapes
from adapters.targets.kubernetes.config import VERSION_LABEL


def container_patch(
    container: str, image: str, env: list[dict[str, Any]], replicas: int, version: str | None
) -> dict[str, Any]:
    """A strategic-merge patch of one container's image and env (replaced whole), the
    replicas and the version label (``None`` removes it)."""
    return {
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {VERSION_LABEL: version}},
                "spec": {
                    "containers": [{"name": container, "image": image, "env": [{"$patch": "replace"}, *env]}]
                },
            },
        }
    }


def snapshot_v1_to_v2(state: dict[str, Any], deployment: str, container: str) -> dict[str, Any]:
    """A format-1 state as format 2; ``deployment`` and ``container`` name the service's
    own when the state does not (a format-1 snapshot of nothing)."""
    if "image" not in state:
        return {
            "format": 2,
            "namespace": state.get("namespace"),
            "deployment": deployment,
            "container": container,
            "version": None,
            "deployments": {},  # format 1 restored nothing here; neither does this
            "services": {},
            "route": None,
        }
    name, cname = state["deployment"], state["container"]
    deployments: dict[str, Any] = {
        name: {
            "patch": container_patch(
                cname, state["image"], state["env"], state["replicas"], state.get("version")
            )
        }
    }
    before = state.get("canary")
    if before is None:
        deployments[shapes.canary_name(name)] = None
    else:
        entry = {"name": cname, "image": before["image"], "env": before["env"]}
        deployments[shapes.canary_name(name)] = {
            "patch": container_patch(
                cname, before["image"], before["env"], before["replicas"], before.get("version")
            ),
            "create": shapes.deployment(
                shapes.canary_name(name),
                canary.selector(name, {"app": before["app"]}, gateway=False),
                entry,
                before["replicas"],
                before.get("version"),
                None,
            ),
        }
    services = {
        n: {"selector": selector, "ports": None} for n, selector in (state.get("services") or {}).items()
    }
    return {
        "format": 2,
        "namespace": state["namespace"],
        "deployment": name,
        "container": cname,
        "version": state.get("version"),
        "deployments": deployments,
        "services": services,
        "route": None,
    }


def upcast(state: dict[str, Any], deployment: str, container: str) -> dict[str, Any]:
    if state.get("format", 1) < 2:
        return snapshot_v1_to_v2(state, deployment, container)
    return state
