"""``KubernetesTarget``: a service as Deployments, Services and (optionally) a Gateway
API ``HTTPRoute``, rolled out by rolling update, blue-green or canary; every step follows
the Deployments it changed by watching their status.

Names (``shapes.py``): the service's own Deployment ``<name>`` (``settings.deployment``,
default the service) and Services (``settings.services``, default ``[<name>]``; the first
is the *active* Service), and what shiplog runs beside them: the colour Deployments
``<name>-blue`` / ``<name>-green``, the preview Service ``<name>-preview``, the canary
Deployment ``<name>-canary`` and, with a route, the canary Service ``<name>-canary``.
The *active* Deployment is the colour the active Service's selector picks, else
``<name>``; rolling, canary and status work on it.

- ``rolling`` strategic-merge-patches the active Deployment's container image and env
  (field manager ``shiplog``), replicas and version label, creating ``<name>`` when it
  does not exist, then watches it until the controller has seen the new generation and
  every replica is updated and available. A ``Progressing`` condition False with reason
  ``ProgressDeadlineExceeded`` fails the step.
- blue-green (``bluegreen.py``): ``preview`` runs the release as the other colour's
  Deployment (blue beside the uncoloured ``<name>``; its pods carry colour labels, not
  ``app``, so the active Service does not reach them) and points the preview Service at
  it; ``switch`` waits until that colour is available, replaces the active Services'
  selectors with the colour's and notes the time; ``scale_down`` waits until
  ``scale_down_delay_seconds`` after the switch, then scales every other Deployment of
  the service to zero.
- canary (``canary.py``): ``set_weight`` runs the release as ``<name>-canary`` with
  ``round(replicas * weight / 100)`` replicas (at least one). With ``settings.route`` the
  canary gets its own Service and, once available, the route's backendRefs get
  ``100 - weight`` on the stable Service and ``weight`` on the canary's (``route.py``,
  through the CustomObjectsApi; the stable Deployment is left as it is); otherwise the
  canary's pods sit behind the stable Service and the stable Deployment is scaled to the
  rest of the replicas. The result's ``split`` says which (``gateway`` or ``replicas``).
  ``promote`` rolls the stable Deployment to the release at full replicas, puts the
  route back to 100% stable, then deletes the canary Service and Deployment.
- ``snapshot`` records the whole spec of every Deployment the service has, the selector
  and ports of every Service, the route's backendRefs — and which of them did not exist
  (``snapshots.py``). ``restore`` puts the Deployments back and waits until they are
  available, then the selectors and route weights, then deletes what did not exist (a
  snapshot taken before the first deployment removes everything it created).

Talking to the API server (errors translated, 404 as absent, conflicts retried, rollouts
followed) is ``kube.py``. Applied step ids and their results live in an annotation of
the Deployment the step ended on; every Deployment of the service is searched before
acting, so a step re-driven after a crash, by this process or another, is not applied
twice.

Where a service lives: namespace = ``settings.namespace``, else
``config.namespaces[environment]``, else the environment's name; the container named like
the service unless the settings say otherwise. ``snapshot`` and ``status`` place the
service by the release settings they are given, exactly as ``apply`` does; without
them they use what the last ``apply`` of the service used in this process, else those
defaults (so no route). The snapshot records the cluster (kubeconfig, context),
namespace and names, so ``restore`` acts where it was taken whatever settings it is
given; they place only a snapshot that predates those records.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.kubernetes import bluegreen, canary, kube, route, shapes, snapshots
from adapters.targets.kubernetes.config import (
    APPLIED_ANNOTATION,
    FIELD_MANAGER,
    SNAPSHOT_FORMAT,
    SWITCHED_ANNOTATION,
    VERSION_LABEL,
    KubernetesSettings,
    KubernetesTargetConfig,
    RouteRef,
)
from adapters.targets.kubernetes.kube import RolloutFailed
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput


@dataclass(frozen=True)
class Placement:
    kubeconfig: Path | None
    context: str | None
    namespace: str
    deployment: str
    container: str
    services: list[str] | None
    route: RouteRef | None = None
    scale_down_delay: float = 0.0

    @property
    def active_service(self) -> str:
        return (self.services or [self.deployment])[0]

    def side(self, name: str) -> Placement:
        """The same service, another of its Deployments."""
        return replace(self, deployment=name)

    def coloured(self, colour: str | None) -> Placement:
        return self if colour is None else self.side(shapes.colour_name(self.deployment, colour))


@dataclass(frozen=True)
class Job:
    """One step being applied: the client, where, and what the release asks for."""

    api: Any
    where: Placement
    step: Step
    settings: KubernetesSettings
    env: list[dict[str, Any]]

    @property
    def apps(self) -> Any:
        return client.AppsV1Api(self.api)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)


#: what a step handler returns: the result's detail, and the Deployment to record it on
Outcome = tuple[dict[str, Any], str]


class KubernetesTarget:
    TYPE = "kubernetes"
    #: canary by route weights or replica ratio; blue-green by colour Deployments
    capabilities = Capabilities(traffic_split=True, two_colours=True)

    def __init__(self, config: KubernetesTargetConfig) -> None:
        self.config = config
        self._placements: dict[tuple[str, str], Placement] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """Every Deployment's spec, every Service's selector and ports, the route's
        backendRefs — ``None`` for each that does not exist (see ``snapshots.py``)."""
        where = self._placement(service, environment, _parsed(settings))
        async with kube.connect(where.kubeconfig, where.context) as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            deployments: dict[str, Any] = {}
            for name in shapes.managed_deployments(where.deployment):
                dep = await kube.read(apps.read_namespaced_deployment(name, where.namespace))
                deployments[name] = (
                    None if dep is None else {"spec": api.sanitize_for_serialization(dep.spec)}
                )
            services: dict[str, Any] = {}
            for name in shapes.managed_services(where.deployment, where.services):
                svc = await kube.read(core.read_namespaced_service(name, where.namespace))
                services[name] = (
                    None
                    if svc is None
                    else {
                        "selector": dict(svc.spec.selector or {}),
                        "ports": api.sanitize_for_serialization(svc.spec.ports or []),
                    }
                )
            route_state = None
            if where.route is not None:
                namespace = where.route.namespace or where.namespace
                obj = await kube.read(self._get_route(api, namespace, where.route.name))
                if obj is not None:
                    rules = (obj.get("spec") or {}).get("rules") or []
                    route_state = {
                        "namespace": namespace,
                        "name": where.route.name,
                        "backendRefs": route.backend_refs(rules),
                    }
        active_svc = services.get(where.active_service)
        colour = bluegreen.active_colour(active_svc["selector"] if active_svc else None)
        active = deployments.get(where.coloured(colour).deployment)
        version = None
        if active is not None:
            version = (active["spec"]["template"].get("metadata") or {}).get("labels", {}).get(VERSION_LABEL)
        state = {
            "format": SNAPSHOT_FORMAT,
            "kubeconfig": None if where.kubeconfig is None else str(where.kubeconfig),
            "context": where.context,
            "namespace": where.namespace,
            "deployment": where.deployment,
            "container": where.container,
            "version": version,
            "deployments": deployments,
            "services": services,
            "route": route_state,
        }
        return Snapshot(service=service, environment=environment, version=version, state=state)

    async def apply(self, step: Step) -> StepResult:
        """Bring the service to the state the step declares; a step id already applied
        returns its recorded result with ``already_applied=True``."""
        release = step.release
        settings = KubernetesSettings.of(release.settings)
        where = self._placement(release.service, release.environment, settings)
        self._placements[(release.service, release.environment)] = where
        env = [{"name": k, "value": v} for k, v in sorted(release.config.items())]
        key = f"{step.deployment_id}/{step.step_id}"
        handlers = {
            "rolling": self._rolling,
            "promote": self._promote,
            "set_weight": self._set_weight,
            "preview": self._preview,
            "switch": self._switch,
            "scale_down": self._scale_down,
        }
        async with kube.connect(where.kubeconfig, where.context) as api:
            recorded = await self._recorded(api, where, key)
            if recorded is not None:
                return recorded
            job = Job(api, where, step, settings, env)
            try:
                detail, record_on = await handlers[step.kind](job)
            except RolloutFailed as exc:
                detail = {"namespace": where.namespace, "deployment": where.deployment}
                return StepResult(step_id=step.step_id, ok=False, error=str(exc), detail=detail)
            result = StepResult(step_id=step.step_id, ok=True, detail=detail)
            await self._record(job.apps, where.side(record_on), key, result)
            return result

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """The active Deployment (``stable``, or ``active`` for a colour) and the canary
        with their traffic weights — from the route when one is configured, else the
        ratio of ready replicas — and any other Deployment with ready pods as a
        ``preview`` at weight 0; ``reachable`` is whether the API server answers."""
        where = self._placement(service, environment, _parsed(settings))
        try:
            async with kube.connect(where.kubeconfig, where.context) as api:
                apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
                deps = {
                    name: await kube.read(apps.read_namespaced_deployment(name, where.namespace))
                    for name in shapes.managed_deployments(where.deployment)
                }
                svc = await kube.read(core.read_namespaced_service(where.active_service, where.namespace))
                route_obj = None
                if where.route is not None:
                    namespace = where.route.namespace or where.namespace
                    route_obj = await kube.read(self._get_route(api, namespace, where.route.name))
        except AdapterUnavailable:
            return TargetStatus(service=service, environment=environment, reachable=False)

        def ready(d: Any) -> int:
            return 0 if d is None else int(d.status.available_replicas or 0)

        colour = bluegreen.active_colour(svc.spec.selector if svc is not None else None)
        stable_name = where.coloured(colour).deployment
        canary_name = shapes.canary_name(where.deployment)
        stable, canary_dep = deps[stable_name], deps[canary_name]
        weights = None
        if route_obj is not None and where.route is not None:
            rules = (route_obj.get("spec") or {}).get("rules") or []
            weights = route.weights(rules, self._backends(where, where.route))
        stable_w, canary_w = canary.weights(*(weights or (ready(stable), ready(canary_dep))))
        tracks = []
        for name, dep in deps.items():
            if ready(dep) == 0:
                continue
            version = (dep.spec.template.metadata.labels or {}).get(VERSION_LABEL, "unknown")
            if name == stable_name:
                tracks.append(Track(version=version, role="active" if colour else "stable", weight=stable_w))
            elif name == canary_name:
                tracks.append(Track(version=version, role="canary", weight=canary_w))
            else:
                tracks.append(Track(version=version, role="preview", weight=0))
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=tracks)

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Put back exactly the snapshot's Deployments, and once they are available the
        Service selectors and route weights, then delete what did not exist then;
        idempotent by step id. Where: what the snapshot records, else ``settings``."""
        base = self._placement(snapshot.service, snapshot.environment, _parsed(settings))
        state = snapshots.upcast(snapshot.state, base.deployment, base.container)
        where = replace(
            base,
            # a snapshot taken before it named its cluster: where snapshot would look
            kubeconfig=Path(state["kubeconfig"]) if state.get("kubeconfig") else base.kubeconfig,
            context=state["context"] if "context" in state else base.context,
            namespace=state.get("namespace") or base.namespace,
            deployment=state["deployment"],
            container=state["container"],
        )
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        key = f"restore/{step_id}/{digest}"
        async with kube.connect(where.kubeconfig, where.context) as api:
            recorded = await self._recorded(api, where, key)
            if recorded is not None:
                return recorded
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            detail: dict[str, Any] = {"namespace": where.namespace, "restored": [], "deleted": []}
            # traffic goes back only to what runs again, and leaves what goes only then
            rollouts = []
            for name, entry in state["deployments"].items():
                if entry is not None:
                    rollouts.append(
                        (where.side(name), await self._restore_deployment(api, where.side(name), entry))
                    )
                    detail["restored"].append(f"deployment/{name}")
            try:
                for side, dep in rollouts:
                    await self._follow(apps, side, dep)
            except RolloutFailed as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc), detail=detail)
            for name, entry in state["services"].items():
                if entry is not None:
                    await self._restore_service(core, where.namespace, name, entry)
            if state.get("route"):
                detail["route"] = await self._restore_route(api, state["route"])
            for name, entry in state["services"].items():
                if entry is None and await kube.delete(core.delete_namespaced_service(name, where.namespace)):
                    detail["deleted"].append(f"service/{name}")
            for name, entry in state["deployments"].items():
                if entry is None and await kube.delete(
                    apps.delete_namespaced_deployment(name, where.namespace)
                ):
                    detail["deleted"].append(f"deployment/{name}")
            result = StepResult(step_id=step_id, ok=True, detail=detail)
            if rollouts:
                # nothing left to record on after restoring the snapshot of nothing: a second
                # such restore finds nothing to delete, which is as harmless
                await self._record(apps, rollouts[0][0], key, result)
            return result

    # -- rolling and promote ---------------------------------------------------------

    async def _rolling(self, job: Job) -> Outcome:
        active = job.where.coloured((await self._active(job))[0])
        release = job.step.release
        dep = await kube.read(job.apps.read_namespaced_deployment(active.deployment, active.namespace))
        if dep is None:
            if active.deployment != job.where.deployment:
                raise AdapterRejected(f"deployment {active.namespace}/{active.deployment} does not exist")
            body: Any = self._new_deployment(
                active, job.settings, release.artifact, job.env, job.step.replicas, release.version
            )
            dep = await kube.call(
                job.apps.create_namespaced_deployment(active.namespace, body, field_manager=FIELD_MANAGER)
            )
        else:
            self._container(dep, active)  # a patch naming another container would add one
            patch = self._patch(active, release.artifact, job.env, job.step.replicas, release.version)
            dep = await kube.call(
                job.apps.patch_namespaced_deployment(
                    active.deployment, active.namespace, patch, field_manager=FIELD_MANAGER
                )
            )
        detail = {
            "namespace": active.namespace,
            "deployment": active.deployment,
            "image": release.artifact,
            "generation": await self._follow(job.apps, active, dep),
        }
        return detail, active.deployment

    async def _promote(self, job: Job) -> Outcome:
        """Roll the stable Deployment to the release at full replicas; only then move all
        traffic to it and remove the canary."""
        detail, record_on = await self._rolling(job)
        where = job.where
        if where.route is not None:
            detail["split"] = canary.SPLIT_GATEWAY
            detail["weights"] = await self._set_route(job.api, where, where.route, None)
            detail["canary_service_deleted"] = await kube.delete(
                job.core.delete_namespaced_service(shapes.canary_name(where.deployment), where.namespace)
            )
        else:
            detail["split"] = canary.SPLIT_REPLICAS
        detail["canary_deleted"] = await kube.delete(
            job.apps.delete_namespaced_deployment(shapes.canary_name(where.deployment), where.namespace)
        )
        return detail, record_on

    # -- blue-green ------------------------------------------------------------------

    async def _preview(self, job: Job) -> Outcome:
        """The release as the other colour's Deployment, the preview Service on it."""
        where, release = job.where, job.step.release
        colour, active_svc = await self._active(job)
        new = bluegreen.other(colour)
        side = where.coloured(new)
        active = await kube.read(
            job.apps.read_namespaced_deployment(where.coloured(colour).deployment, where.namespace)
        )
        selector = bluegreen.selector(where.deployment, new)
        dep = await self._ensure_side(job, side, selector, self._template(job, active), job.step.replicas)
        ports = shapes.service_ports(self._ports(job, active_svc), job.settings.port)
        preview = shapes.preview_name(where.deployment)
        await self._ensure_service(job, preview, selector, ports)
        detail = {
            "namespace": where.namespace,
            "colour": new,
            "deployment": side.deployment,
            "image": release.artifact,
            "preview_service": preview,
            "generation": await self._follow(job.apps, side, dep),
        }
        return detail, side.deployment

    async def _switch(self, job: Job) -> Outcome:
        """Point the active Services at the colour that runs the release, once it is
        available (re-driven after the switch, that colour is the active one)."""
        where, release = job.where, job.step.release
        colour, _ = await self._active(job)
        for candidate in (bluegreen.other(colour), colour):
            if candidate is None:
                continue
            side = where.coloured(candidate)
            dep = await kube.read(job.apps.read_namespaced_deployment(side.deployment, side.namespace))
            if dep is not None and self._runs(dep, side, release.artifact, release.version):
                break
        else:
            raise AdapterRejected(
                f"no colour of {where.namespace}/{where.deployment} runs {release.version}: preview it first"
            )
        await self._follow(job.apps, side, dep)  # no traffic to a colour that is not available
        selector = bluegreen.selector(where.deployment, candidate)
        preview = await kube.read(
            job.core.read_namespaced_service(shapes.preview_name(where.deployment), where.namespace)
        )
        ports = shapes.service_ports(self._ports(job, preview), job.settings.port)
        for name in where.services or [where.deployment]:
            await self._ensure_service(job, name, selector, ports)
        if candidate != colour:
            await kube.call(
                job.apps.patch_namespaced_deployment(
                    side.deployment,
                    side.namespace,
                    {"metadata": {"annotations": {SWITCHED_ANNOTATION: f"{time.time():.3f}"}}},
                    field_manager=FIELD_MANAGER,
                )
            )
        detail = {
            "namespace": where.namespace,
            "colour": candidate,
            "deployment": side.deployment,
            "services": where.services or [where.deployment],
            "service_selector": selector,
        }
        return detail, side.deployment

    async def _scale_down(self, job: Job) -> Outcome:
        """Once ``scale_down_delay_seconds`` have passed since the switch, scale every
        Deployment of the service but the active one (which must run the release) to 0."""
        where, release = job.where, job.step.release
        colour, _ = await self._active(job)
        active = where.coloured(colour)
        dep = await kube.read(job.apps.read_namespaced_deployment(active.deployment, active.namespace))
        if dep is None or not self._runs(dep, active, release.artifact, release.version):
            raise AdapterRejected(
                f"{release.version} is not what {where.namespace}/{where.active_service} serves: "
                "switch to it before scaling the rest down"
            )
        wait = 0.0
        if colour is not None:
            switched = (dep.metadata.annotations or {}).get(SWITCHED_ANNOTATION)
            wait = bluegreen.scale_down_wait(switched, where.scale_down_delay)
            await asyncio.sleep(wait)
        stopped = []
        for name in shapes.managed_deployments(where.deployment):
            other = await kube.read(job.apps.read_namespaced_deployment(name, where.namespace))
            if name == active.deployment or other is None or not other.spec.replicas:
                continue
            other = await kube.call(
                job.apps.patch_namespaced_deployment(
                    name, where.namespace, {"spec": {"replicas": 0}}, field_manager=FIELD_MANAGER
                )
            )
            await self._follow(job.apps, where.side(name), other)
            stopped.append(name)
        detail = {
            "namespace": where.namespace,
            "deployment": active.deployment,
            "scaled_down": stopped,
            "waited_seconds": round(wait, 3),
        }
        return detail, active.deployment

    # -- canary ----------------------------------------------------------------------

    async def _set_weight(self, job: Job) -> Outcome:
        """Start or update the canary and split traffic by the route's weights when one
        is configured, else by replica ratio behind the stable Service."""
        step, where, release = job.step, job.where, job.step.release
        if step.weight is None:
            raise InvalidInput("set_weight needs a weight")
        stable = where.coloured((await self._active(job))[0])
        dep = await kube.read(job.apps.read_namespaced_deployment(stable.deployment, stable.namespace))
        if dep is None:
            raise AdapterRejected(
                f"deployment {stable.namespace}/{stable.deployment} does not exist; "
                "a canary needs a stable one"
            )
        side = where.side(shapes.canary_name(where.deployment))
        # the stable pods' own labels: a replica-ratio canary carries them too
        stable_labels = dict(dep.spec.selector.match_labels or {})
        stable_n, canary_n = canary.split_replicas(step.replicas, step.weight)
        detail: dict[str, Any] = {
            "namespace": where.namespace,
            "deployment": stable.deployment,
            "canary": side.deployment,
            "image": release.artifact,
        }
        if where.route is not None:
            selector = canary.selector(where.deployment, stable_labels, gateway=True)
            canary_dep = await self._ensure_side(job, side, selector, self._template(job, dep), canary_n)
            svc = await kube.read(job.core.read_namespaced_service(where.active_service, where.namespace))
            if svc is None:
                raise AdapterRejected(
                    f"service {where.namespace}/{where.active_service} does not exist; "
                    "the route's stable backend needs it"
                )
            ports = shapes.service_ports(self._ports(job, svc), job.settings.port)
            await self._ensure_service(job, shapes.canary_name(where.deployment), selector, ports)
            await self._follow(job.apps, side, canary_dep)  # no traffic to a canary not available
            detail["weights"] = await self._set_route(job.api, where, where.route, step.weight)
            detail.update(split=canary.SPLIT_GATEWAY, weight=step.weight, replicas={"canary": canary_n})
            return detail, stable.deployment
        selector = canary.selector(where.deployment, stable_labels, gateway=False)
        canary_dep = await self._ensure_side(job, side, selector, self._template(job, dep), canary_n)
        dep = await kube.call(
            job.apps.patch_namespaced_deployment(
                stable.deployment,
                stable.namespace,
                {"spec": {"replicas": stable_n}},
                field_manager=FIELD_MANAGER,
            )
        )
        detail.update(
            split=canary.SPLIT_REPLICAS,
            replicas={"stable": stable_n, "canary": canary_n},
            weight=canary.weights(stable_n, canary_n)[1],
            service_selector=await self._select_both(job, stable_labels),
        )
        await self._follow(job.apps, side, canary_dep)
        await self._follow(job.apps, stable, dep)
        return detail, stable.deployment

    async def _select_both(self, job: Job, stable_labels: dict[str, str]) -> dict[str, str] | None:
        """Point the service's Services at the stable pods' labels — which the canary's
        pods carry too — unless their selector already picks both; ``None`` when there
        is no Service."""
        where = job.where
        wanted = stable_labels
        found = None
        for name in where.services if where.services is not None else [where.deployment]:
            svc = await kube.read(job.core.read_namespaced_service(name, where.namespace))
            if svc is None:
                continue
            selector = dict(svc.spec.selector or {})
            canary_labels = {**stable_labels, canary.TRACK_LABEL: "canary"}
            if not (shapes.selects(selector, stable_labels) and shapes.selects(selector, canary_labels)):
                await self._set_selector(job.core, where.namespace, name, wanted)
                selector = wanted
            found = selector
        return found

    async def _set_route(
        self, api: Any, where: Placement, ref: RouteRef, weight: int | None
    ) -> dict[str, int]:
        """Put ``100 - weight`` on the stable Service and ``weight`` on the canary in the
        route (``None``: 100 on stable, the canary's ref removed)."""
        backends = self._backends(where, ref)
        await self._edit_route(
            api,
            ref.namespace or where.namespace,
            ref.name,
            lambda rules: route.set_weights(rules, backends, weight),
        )
        return {"stable": 100 - (weight or 0), "canary": weight or 0}

    # -- restoring -------------------------------------------------------------------

    async def _restore_deployment(self, api: Any, side: Placement, entry: dict[str, Any]) -> Any:
        """Put one Deployment back as the snapshot had it; the Deployment to follow."""
        apps = client.AppsV1Api(api)
        current = await kube.read(apps.read_namespaced_deployment(side.deployment, side.namespace))
        if "spec" in entry:
            if current is None:
                body: Any = {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": side.deployment},
                    "spec": entry["spec"],
                }
                return await kube.call(
                    apps.create_namespaced_deployment(side.namespace, body, field_manager=FIELD_MANAGER)
                )

            # the whole spec, replaced with the read resourceVersion (the controller's status
            # writes conflict: read again); metadata, with the applied-steps annotation, stays
            async def attempt() -> Any:
                now = await kube.call(apps.read_namespaced_deployment(side.deployment, side.namespace))
                body = api.sanitize_for_serialization(now)
                body["spec"] = entry["spec"]
                body.pop("status", None)
                return await kube.call(
                    apps.replace_namespaced_deployment(
                        side.deployment, side.namespace, body, field_manager=FIELD_MANAGER
                    )
                )

            return await kube.on_conflict_again(attempt)
        if current is None:  # a format-1 entry: patch what it kept, create from its body
            if entry.get("create") is None:
                raise AdapterRejected(f"deployment {side.namespace}/{side.deployment} does not exist")
            return await kube.call(
                apps.create_namespaced_deployment(
                    side.namespace, entry["create"], field_manager=FIELD_MANAGER
                )
            )
        return await kube.call(
            apps.patch_namespaced_deployment(
                side.deployment, side.namespace, entry["patch"], field_manager=FIELD_MANAGER
            )
        )

    async def _restore_service(self, core: Any, namespace: str, name: str, entry: dict[str, Any]) -> None:
        current = await kube.read(core.read_namespaced_service(name, namespace))
        if current is None:
            body: Any = shapes.service(
                name, entry["selector"], shapes.service_ports(entry.get("ports"), None)
            )
            await kube.call(core.create_namespaced_service(namespace, body, field_manager=FIELD_MANAGER))
        elif dict(current.spec.selector or {}) != entry["selector"]:
            await self._set_selector(core, namespace, name, entry["selector"])

    async def _restore_route(self, api: Any, before: dict[str, Any]) -> str:
        await self._edit_route(
            api,
            before["namespace"],
            before["name"],
            lambda rules: route.with_backend_refs(rules, before["backendRefs"]),
        )
        return f"{before['namespace']}/{before['name']}"

    async def _edit_route(
        self,
        api: Any,
        namespace: str,
        name: str,
        change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> None:
        """Read the route, change its rules, replace it with the read resourceVersion (a
        concurrent write is a conflict, read again, never lost); ``change`` raising
        ``LookupError`` or ``ValueError`` means the route cannot take the change."""
        custom = client.CustomObjectsApi(api)

        async def attempt() -> None:
            obj = await kube.call(self._get_route(api, namespace, name))
            rules = (obj.get("spec") or {}).get("rules") or []
            try:
                new_rules = change(rules)
            except (LookupError, ValueError) as exc:
                raise AdapterRejected(f"httproute {namespace}/{name}: {exc}") from exc
            if new_rules != rules:
                obj["spec"]["rules"] = new_rules
                await kube.call(
                    custom.replace_namespaced_custom_object(
                        route.GROUP,
                        route.VERSION,
                        namespace,
                        route.PLURAL,
                        name,
                        obj,
                        field_manager=FIELD_MANAGER,
                    )
                )

        await kube.on_conflict_again(attempt)

    # -- helpers of the steps --------------------------------------------------------

    async def _active(self, job: Job) -> tuple[str | None, Any]:
        """The colour the active Service picks (``None``: the uncoloured Deployment) and
        the Service (``None`` when it does not exist)."""
        svc = await kube.read(job.core.read_namespaced_service(job.where.active_service, job.where.namespace))
        return bluegreen.active_colour(svc.spec.selector if svc is not None else None), svc

    def _template(self, job: Job, dep: Any) -> dict[str, Any]:
        """The release's container: the given Deployment's, with the release's image and
        env, or a new one from the settings."""
        release = job.step.release
        if dep is not None:
            base = job.api.sanitize_for_serialization(self._container(dep, job.where.side(dep.metadata.name)))
            return {**base, "image": release.artifact, "env": job.env}
        container: dict[str, Any] = {"name": job.where.container, "image": release.artifact, "env": job.env}
        if job.settings.port:
            container["ports"] = [{"containerPort": job.settings.port}]
        return container

    @staticmethod
    def _ports(job: Job, svc: Any) -> list[dict[str, Any]] | None:
        return None if svc is None else job.api.sanitize_for_serialization(svc.spec.ports or [])

    async def _ensure_side(
        self, job: Job, side: Placement, selector: dict[str, str], container: dict[str, Any], replicas: int
    ) -> Any:
        """Create a Deployment beside the service's own, or patch it to this image, env,
        replicas and version."""
        release = job.step.release
        current = await kube.read(job.apps.read_namespaced_deployment(side.deployment, side.namespace))
        if current is None:
            body = shapes.deployment(
                side.deployment,
                selector,
                container,
                replicas,
                release.version,
                job.settings.progress_deadline_seconds,
            )
            return await kube.call(
                job.apps.create_namespaced_deployment(side.namespace, body, field_manager=FIELD_MANAGER)
            )
        self._container(current, side)
        patch = self._patch(side, container["image"], container.get("env") or [], replicas, release.version)
        return await kube.call(
            job.apps.patch_namespaced_deployment(
                side.deployment, side.namespace, patch, field_manager=FIELD_MANAGER
            )
        )

    async def _ensure_service(
        self, job: Job, name: str, selector: dict[str, str], ports: list[dict[str, Any]]
    ) -> None:
        """Create the Service with this selector, or set the selector of the one there."""
        namespace = job.where.namespace
        current = await kube.read(job.core.read_namespaced_service(name, namespace))
        if current is None:
            body = shapes.service(name, selector, ports)
            await kube.call(job.core.create_namespaced_service(namespace, body, field_manager=FIELD_MANAGER))
        elif dict(current.spec.selector or {}) != selector:
            await self._set_selector(job.core, namespace, name, selector)

    async def _set_selector(self, core: Any, namespace: str, name: str, selector: dict[str, str]) -> None:
        await kube.call(
            core.patch_namespaced_service(
                name,
                namespace,
                {"spec": {"selector": {"$patch": "replace", **selector}}},
                field_manager=FIELD_MANAGER,
            )
        )

    @staticmethod
    def _backends(where: Placement, ref: RouteRef) -> route.Backends:
        return route.Backends(
            stable=where.active_service,
            canary=shapes.canary_name(where.deployment),
            route_namespace=ref.namespace or where.namespace,
            namespace=where.namespace,
        )

    @staticmethod
    def _get_route(api: Any, namespace: str, name: str) -> Any:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            route.GROUP, route.VERSION, namespace, route.PLURAL, name
        )

    def _runs(self, dep: Any, where: Placement, image: str, version: str) -> bool:
        labels = dep.spec.template.metadata.labels or {}
        return bool(labels.get(VERSION_LABEL) == version and self._container(dep, where).image == image)

    # -- applied steps ---------------------------------------------------------------

    async def _recorded(self, api: Any, where: Placement, key: str) -> StepResult | None:
        """The recorded result of this step key on any Deployment of the service."""
        apps = client.AppsV1Api(api)
        for name in shapes.managed_deployments(where.deployment):
            applied = self._applied(await kube.read(apps.read_namespaced_deployment(name, where.namespace)))
            if key in applied:
                return StepResult.model_validate({**applied[key], "already_applied": True})
        return None

    async def _record(self, apps: Any, where: Placement, key: str, result: StepResult) -> None:
        """Keep the step's result in the Deployment's annotation (the last few only)."""
        dep = await kube.read(apps.read_namespaced_deployment(where.deployment, where.namespace))
        if dep is None:
            return
        applied = self._applied(dep)
        applied[key] = result.model_dump(mode="json")
        keep = dict(list(applied.items())[-self.config.applied_keep :])
        await kube.call(
            apps.patch_namespaced_deployment(
                where.deployment,
                where.namespace,
                {"metadata": {"annotations": {APPLIED_ANNOTATION: json.dumps(keep)}}},
                field_manager=FIELD_MANAGER,
            )
        )

    # -- following a rollout ---------------------------------------------------------

    async def _follow(self, apps: Any, where: Placement, dep: Any) -> int:
        """Watch the Deployment until its rollout of ``dep``'s generation completes."""
        return await kube.follow(
            apps,
            where.namespace,
            where.deployment,
            dep,
            within=self.config.rollout_timeout,
            watch_timeout=self.config.watch_timeout,
        )

    # -- shapes ----------------------------------------------------------------------

    @staticmethod
    def _patch(
        where: Placement, image: str, env: list[dict[str, Any]], replicas: int, version: str | None
    ) -> dict[str, Any]:
        return snapshots.container_patch(where.container, image, env, replicas, version)

    @staticmethod
    def _new_deployment(
        where: Placement,
        settings: KubernetesSettings,
        image: str,
        env: list[dict[str, Any]],
        replicas: int,
        version: str | None,
    ) -> dict[str, Any]:
        container: dict[str, Any] = {"name": where.container, "image": image, "env": env}
        if settings.port:
            container["ports"] = [{"containerPort": settings.port}]
        return shapes.deployment(
            where.deployment,
            {"app": where.deployment},
            container,
            replicas,
            version,
            settings.progress_deadline_seconds,
        )

    @staticmethod
    def _applied(dep: Any) -> dict[str, dict[str, Any]]:
        if dep is None:
            return {}
        raw = (dep.metadata.annotations or {}).get(APPLIED_ANNOTATION)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _container(dep: Any, where: Placement) -> Any:
        for container in dep.spec.template.spec.containers:
            if container.name == where.container:
                return container
        raise AdapterRejected(
            f"deployment {where.namespace}/{where.deployment} has no container {where.container!r}"
        )

    # -- the API ---------------------------------------------------------------------

    def _placement(self, service: str, environment: str, settings: KubernetesSettings | None) -> Placement:
        if settings is None:
            known = self._placements.get((service, environment))
            if known is not None:
                return known
            settings = KubernetesSettings()
        return Placement(
            kubeconfig=settings.kubeconfig or self.config.kubeconfig,
            context=settings.context or self.config.context,
            namespace=settings.namespace or self.config.namespaces.get(environment, environment),
            deployment=settings.deployment or service,
            container=settings.container or service,
            services=settings.services,
            route=settings.route,
            scale_down_delay=settings.scale_down_delay_seconds,
        )


def _parsed(settings: Mapping[str, Any] | None) -> KubernetesSettings | None:
    """The caller's release settings, parsed as ``apply`` parses them (None: none given)."""
    return None if settings is None else KubernetesSettings.of(dict(settings))
