"""The objects the target creates, and the names it manages beside a service's own
Deployment — no I/O."""

from __future__ import annotations

from typing import Any

from adapters.targets.kubernetes.config import VERSION_LABEL

#: on pods shiplog starts beside the service's own (colours, gateway canaries): which
#: service they belong to, in place of the ``app`` label its Services select by
SERVICE_LABEL = "shiplog.io/service"
CANARY_SUFFIX = "-canary"
PREVIEW_SUFFIX = "-preview"
COLOURS = ("blue", "green")


def canary_name(deployment: str) -> str:
    return deployment + CANARY_SUFFIX


def preview_name(deployment: str) -> str:
    return deployment + PREVIEW_SUFFIX


def colour_name(deployment: str, colour: str) -> str:
    return f"{deployment}-{colour}"


def managed_deployments(deployment: str) -> list[str]:
    """Every Deployment of the service: its own, the canary, the two colours."""
    return [deployment, canary_name(deployment), *(colour_name(deployment, c) for c in COLOURS)]


def managed_services(deployment: str, services: list[str] | None) -> list[str]:
    """Every Service of the service: its own (the first is the active one), the preview
    Service and the canary Service."""
    own = services if services is not None else [deployment]
    return [*own, preview_name(deployment), canary_name(deployment)]


def deployment(
    name: str,
    selector: dict[str, str],
    container: dict[str, Any],
    replicas: int,
    version: str | None,
    progress_deadline_seconds: int | None,
) -> dict[str, Any]:
    """A new Deployment of ``container`` whose pods carry ``selector`` and the version."""
    labels = {**selector, **({VERSION_LABEL: version} if version else {})}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
    }
    if progress_deadline_seconds:
        spec["progressDeadlineSeconds"] = progress_deadline_seconds
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def service(name: str, selector: dict[str, str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": ports},
    }


def service_ports(ports: list[dict[str, Any]] | None, container_port: int | None) -> list[dict[str, Any]]:
    """The ports of a Service beside an existing one (its ports, less the node ports the
    cluster assigns), else one port to the container's port (80 when none is known)."""
    if ports:
        return [{k: v for k, v in p.items() if k != "nodePort"} for p in ports]
    port = container_port or 80
    return [{"name": "http", "port": port, "targetPort": port}]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
