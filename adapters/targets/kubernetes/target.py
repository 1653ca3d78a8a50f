"""``KubernetesTarget``: rolling updates and replica-ratio canaries of a Deployment,
followed by watching its status.

A ``rolling`` step strategic-merge-patches the Deployment's container image and env
(field manager ``shiplog``), its replicas and version label, creating the Deployment
when it does not exist; then it watches the Deployment until the controller has seen
the new generation and every replica is updated and available. A ``Progressing``
condition that turns False with reason ``ProgressDeadlineExceeded`` fails the step.

A ``set_weight`` step runs the new version as a second Deployment ``<name>-canary``
behind the same Service, with ``round(replicas * weight / 100)`` replicas (at least one)
and the stable Deployment scaled to the rest; ``promote`` rolls the stable Deployment to
the new version at full replicas, then deletes the canary (see ``canary.py``).
Blue-green steps (``preview``, ``switch``, ``scale_down``) are refused.

Applied step ids and their results live in an annotation of the Deployment, so a step
re-driven after a crash, by this process or another, is not applied twice.

Where a service lives: namespace = ``settings.namespace``, else
``config.namespaces[environment]``, else the environment's name; Deployment and
container named like the service unless the settings say otherwise. ``snapshot`` is
called without settings: it uses what the last ``apply`` of the service used in this
process, else those defaults.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.kubernetes import canary
from adapters.targets.kubernetes.config import (
    APPLIED_ANNOTATION,
    FIELD_MANAGER,
    SNAPSHOT_FORMAT,
    VERSION_LABEL,
    KubernetesSettings,
    KubernetesTargetConfig,
)
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput


class RolloutFailed(Exception):
    """The rollout did not complete; the message starts with the reason."""


@dataclass(frozen=True)
class Placement:
    kubeconfig: Path | None
    context: str | None
    namespace: str
    deployment: str
    container: str
    services: list[str] | None


class KubernetesTarget:
    TYPE = "kubernetes"
    #: traffic split by replica ratio (canary); no second colour (blue-green) yet
    capabilities = Capabilities(traffic_split=True, two_colours=False)

    def __init__(self, config: KubernetesTargetConfig) -> None:
        self.config = config
        self._placements: dict[tuple[str, str], Placement] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(self, service: str, environment: str) -> Snapshot:
        """The Deployment's image, env, replicas and version, and the selectors of its
        Services; an empty state when the Deployment does not exist."""
        where = self._placement(service, environment, None)
        async with self._api(where) as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            dep = await self._read(apps.read_namespaced_deployment(where.deployment, where.namespace))
            if dep is None:
                return Snapshot(service=service, environment=environment, state={"format": SNAPSHOT_FORMAT})
            container = self._container(dep, where)
            selectors: dict[str, dict[str, str]] = {}
            for name in where.services if where.services is not None else [service]:
                svc = await self._read(core.read_namespaced_service(name, where.namespace))
                if svc is not None:
                    selectors[name] = dict(svc.spec.selector or {})
            version = (dep.spec.template.metadata.labels or {}).get(VERSION_LABEL)
            canary_dep = await self._read(
                apps.read_namespaced_deployment(canary.canary_name(where.deployment), where.namespace)
            )
            state = {
                "format": SNAPSHOT_FORMAT,
                "namespace": where.namespace,
                "deployment": where.deployment,
                "container": where.container,
                "image": container.image,
                # whole entries, so valueFrom (secret and config map references) comes back too
                "env": api.sanitize_for_serialization(container.env or []),
                "replicas": dep.spec.replicas,
                "version": version,
                "services": selectors,
                "canary": self._canary_state(api, canary_dep, where),
            }
            return Snapshot(service=service, environment=environment, version=version, state=state)

    async def apply(self, step: Step) -> StepResult:
        """Roll the Deployment to the release (``rolling`` only); a step id already
        applied returns its recorded result with ``already_applied=True``."""
        if step.kind not in ("rolling", "set_weight", "promote"):
            raise InvalidInput(
                f"kubernetes target: strategy step {step.kind!r} is not supported yet "
                "(rolling and canary by replica ratio only)"
            )
        release = step.release
        settings = KubernetesSettings.of(release.settings)
        where = self._placement(release.service, release.environment, settings)
        self._placements[(release.service, release.environment)] = where
        env = [{"name": k, "value": v} for k, v in sorted(release.config.items())]
        if step.kind == "set_weight":
            return await self._set_weight(where, step, env, settings)
        result = await self._converge(
            where,
            key=f"{step.deployment_id}/{step.step_id}",
            step_id=step.step_id,
            image=release.artifact,
            env=env,
            replicas=step.replicas,
            version=release.version,
            selectors={},
            create=settings,
        )
        if step.kind == "promote" and result.ok:
            # only once the stable Deployment serves the new version at full replicas
            deleted = await self._delete_canary(where)
            result = result.model_copy(
                update={"detail": {**result.detail, "split": canary.SPLIT, "canary_deleted": deleted}}
            )
        return result

    async def status(self, service: str, environment: str) -> TargetStatus:
        """The Deployment's version as the one track, with the URLs of nothing (pods are
        reached through the Service); ``reachable`` is whether the API server answers."""
        where = self._placement(service, environment, None)
        try:
            async with self._api(where) as api:
                apps = client.AppsV1Api(api)
                dep = await self._read(apps.read_namespaced_deployment(where.deployment, where.namespace))
                canary_dep = await self._read(
                    apps.read_namespaced_deployment(canary.canary_name(where.deployment), where.namespace)
                )
        except AdapterUnavailable:
            return TargetStatus(service=service, environment=environment, reachable=False)

        def ready(d: Any) -> int:
            return 0 if d is None else int(d.status.available_replicas or 0)

        # the Service spreads requests over ready pods: weights are ready-replica ratios
        stable_w, canary_w = canary.weights(ready(dep), ready(canary_dep))
        tracks = []
        roles: list[tuple[Any, Literal["stable", "canary"], int]] = [
            (dep, "stable", stable_w),
            (canary_dep, "canary", canary_w),
        ]
        for d, role, weight in roles:
            if ready(d) > 0:
                version = (d.spec.template.metadata.labels or {}).get(VERSION_LABEL, "unknown")
                tracks.append(Track(version=version, role=role, weight=weight))
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=tracks)

    async def restore(self, snapshot: Snapshot, *, step_id: str) -> StepResult:
        """Put back the snapshot's image, env, replicas, version label and Service
        selectors exactly, then wait for the rollout; idempotent by step id."""
        state = snapshot.state
        if "image" not in state:
            return StepResult(step_id=step_id, ok=True, detail={"restored": "nothing (no Deployment before)"})
        base = self._placement(snapshot.service, snapshot.environment, None)
        where = Placement(
            base.kubeconfig,
            base.context,
            state["namespace"],
            state["deployment"],
            state["container"],
            base.services,
        )
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        result = await self._converge(
            where,
            key=f"restore/{step_id}/{digest}",
            step_id=step_id,
            image=state["image"],
            env=state["env"],
            replicas=state["replicas"],
            version=state.get("version"),
            selectors=state.get("services") or {},
            create=None,
        )
        if not result.ok:
            return result
        # a canary started since the snapshot goes; one that ran then comes back as it was
        before = state.get("canary")
        if before is None:
            await self._delete_canary(where)
        else:
            failed = await self._restore_canary(where, before)
            if failed is not None:
                return StepResult(step_id=step_id, ok=False, error=failed, detail=result.detail)
        return result

    # -- converging ------------------------------------------------------------------

    async def _converge(
        self,
        where: Placement,
        *,
        key: str,
        step_id: str,
        image: str,
        env: list[dict[str, Any]],
        replicas: int,
        version: str | None,
        selectors: dict[str, dict[str, str]],
        create: KubernetesSettings | None,
    ) -> StepResult:
        async with self._api(where) as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            dep = await self._read(apps.read_namespaced_deployment(where.deployment, where.namespace))
            applied = self._applied(dep)
            if key in applied:
                return StepResult.model_validate({**applied[key], "already_applied": True})
            if dep is None:
                if create is None:
                    raise AdapterRejected(f"deployment {where.namespace}/{where.deployment} does not exist")
                body: Any = self._new_deployment(where, create, image, env, replicas, version)
                dep = await self._call(
                    apps.create_namespaced_deployment(where.namespace, body, field_manager=FIELD_MANAGER)
                )
            else:
                self._container(dep, where)  # a patch naming another container would add one
                patch = self._patch(where, image, env, replicas, version)
                dep = await self._call(
                    apps.patch_namespaced_deployment(
                        where.deployment, where.namespace, patch, field_manager=FIELD_MANAGER
                    )
                )
            for name, selector in selectors.items():
                await self._call(
                    core.patch_namespaced_service(
                        name,
                        where.namespace,
                        {"spec": {"selector": {"$patch": "replace", **selector}}},
                        field_manager=FIELD_MANAGER,
                    )
                )
            detail: dict[str, Any] = {
                "namespace": where.namespace,
                "deployment": where.deployment,
                "image": image,
            }
            try:
                detail["generation"] = await self._follow(apps, where, dep)
            except RolloutFailed as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc), detail=detail)
            result = StepResult(step_id=step_id, ok=True, detail=detail)
            await self._record(apps, where, applied, key, result)
            return result

    async def _record(
        self, apps: Any, where: Placement, applied: dict[str, Any], key: str, result: StepResult
    ) -> None:
        """Keep the step's result in the Deployment's annotation (the last few only)."""
        applied[key] = result.model_dump(mode="json")
        keep = dict(list(applied.items())[-self.config.applied_keep :])
        await self._call(
            apps.patch_namespaced_deployment(
                where.deployment,
                where.namespace,
                {"metadata": {"annotations": {APPLIED_ANNOTATION: json.dumps(keep)}}},
                field_manager=FIELD_MANAGER,
            )
        )

    # -- canary by replica ratio -----------------------------------------------------

    async def _set_weight(
        self, where: Placement, step: Step, env: list[dict[str, Any]], settings: KubernetesSettings
    ) -> StepResult:
        """Run the canary with its share of ``step.replicas`` and scale the stable
        Deployment to the rest; the Service selecting ``app`` splits by that ratio."""
        if step.weight is None:
            raise InvalidInput("set_weight needs a weight")
        release = step.release
        key = f"{step.deployment_id}/{step.step_id}"
        stable_n, canary_n = canary.split_replicas(step.replicas, step.weight)
        side = replace(where, deployment=canary.canary_name(where.deployment))
        async with self._api(where) as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            dep = await self._read(apps.read_namespaced_deployment(where.deployment, where.namespace))
            if dep is None:
                raise AdapterRejected(
                    f"deployment {where.namespace}/{where.deployment} does not exist; "
                    "a canary needs a stable one"
                )
            applied = self._applied(dep)
            if key in applied:
                return StepResult.model_validate({**applied[key], "already_applied": True})
            container = self._container(dep, where)
            app = (dep.spec.template.metadata.labels or {}).get("app", where.deployment)
            canary_dep = await self._ensure_canary(
                apps,
                side,
                app=app,
                container={
                    **api.sanitize_for_serialization(container),
                    "image": release.artifact,
                    "env": env,
                },
                replicas=canary_n,
                version=release.version,
                deadline=settings.progress_deadline_seconds,
            )
            dep = await self._call(
                apps.patch_namespaced_deployment(
                    where.deployment,
                    where.namespace,
                    {"spec": {"replicas": stable_n}},
                    field_manager=FIELD_MANAGER,
                )
            )
            detail: dict[str, Any] = {
                "namespace": where.namespace,
                "deployment": where.deployment,
                "canary": side.deployment,
                "image": release.artifact,
                "split": canary.SPLIT,
                "replicas": {"stable": stable_n, "canary": canary_n},
                "weight": canary.weights(stable_n, canary_n)[1],
            }
            detail["service_selector"] = await self._select_both(core, where, app)
            try:
                await self._follow(apps, side, canary_dep)
                await self._follow(apps, where, dep)
            except RolloutFailed as exc:
                return StepResult(step_id=step.step_id, ok=False, error=str(exc), detail=detail)
            result = StepResult(step_id=step.step_id, ok=True, detail=detail)
            await self._record(apps, where, applied, key, result)
            return result

    async def _ensure_canary(
        self,
        apps: Any,
        side: Placement,
        *,
        app: str,
        container: dict[str, Any],
        replicas: int,
        version: str | None,
        deadline: int | None,
    ) -> Any:
        """Create the canary Deployment, or patch it to this image, env and replicas."""
        current = await self._read(apps.read_namespaced_deployment(side.deployment, side.namespace))
        if current is None:
            body = canary.canary_deployment(side.deployment, app, container, replicas, version, deadline)
            return await self._call(
                apps.create_namespaced_deployment(side.namespace, body, field_manager=FIELD_MANAGER)
            )
        self._container(current, side)
        patch = self._patch(side, container["image"], container.get("env") or [], replicas, version)
        return await self._call(
            apps.patch_namespaced_deployment(
                side.deployment, side.namespace, patch, field_manager=FIELD_MANAGER
            )
        )

    async def _select_both(self, core: Any, where: Placement, app: str) -> dict[str, str] | None:
        """Point the service's Services at ``app=<app>`` — stable and canary pods alike —
        unless their selector already picks both; ``None`` when there is no Service."""
        wanted = {"app": app}
        found = None
        for name in where.services if where.services is not None else [where.deployment]:
            svc = await self._read(core.read_namespaced_service(name, where.namespace))
            if svc is None:
                continue
            selector = dict(svc.spec.selector or {})
            stable_labels = {"app": app}
            canary_labels = {"app": app, canary.TRACK_LABEL: "canary"}
            if not (canary.selects(selector, stable_labels) and canary.selects(selector, canary_labels)):
                await self._call(
                    core.patch_namespaced_service(
                        name,
                        where.namespace,
                        {"spec": {"selector": {"$patch": "replace", **wanted}}},
                        field_manager=FIELD_MANAGER,
                    )
                )
                selector = wanted
            found = selector
        return found

    async def _delete_canary(self, where: Placement) -> bool:
        """Delete the canary Deployment; False when there was none."""
        async with self._api(where) as api:
            try:
                await self._call(
                    client.AppsV1Api(api).delete_namespaced_deployment(
                        canary.canary_name(where.deployment), where.namespace
                    )
                )
            except AdapterRejected as exc:
                if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                    return False
                raise
        return True

    async def _restore_canary(self, where: Placement, before: dict[str, Any]) -> str | None:
        """Put the canary of the snapshot back; the error of its rollout, if any."""
        side = replace(where, deployment=canary.canary_name(where.deployment))
        async with self._api(where) as api:
            apps = client.AppsV1Api(api)
            container = {"name": where.container, "image": before["image"], "env": before["env"]}
            dep = await self._ensure_canary(
                apps,
                side,
                app=before["app"],
                container=container,
                replicas=before["replicas"],
                version=before.get("version"),
                deadline=None,
            )
            try:
                await self._follow(apps, side, dep)
            except RolloutFailed as exc:
                return str(exc)
        return None

    def _canary_state(self, api: Any, dep: Any, where: Placement) -> dict[str, Any] | None:
        if dep is None:
            return None
        side = replace(where, deployment=dep.metadata.name)
        container = self._container(dep, side)
        labels = dep.spec.template.metadata.labels or {}
        return {
            "image": container.image,
            "env": api.sanitize_for_serialization(container.env or []),
            "replicas": dep.spec.replicas,
            "version": labels.get(VERSION_LABEL),
            "app": labels.get("app", where.deployment),
        }

    async def _follow(self, apps: Any, where: Placement, dep: Any) -> int:
        """Watch the Deployment until its rollout of ``dep``'s generation completes."""
        generation = dep.metadata.generation
        deadline = time.monotonic() + self.config.rollout_timeout
        resource_version = dep.metadata.resource_version
        if self._done(dep, generation):
            return int(generation)
        while time.monotonic() < deadline:
            w = watch.Watch()
            try:
                async for event in w.stream(
                    apps.list_namespaced_deployment,
                    where.namespace,
                    field_selector=f"metadata.name={where.deployment}",
                    resource_version=resource_version,
                    timeout_seconds=max(
                        1, min(self.config.watch_timeout, int(deadline - time.monotonic()) + 1)
                    ),
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        resource_version = None  # expired: start again from the current state
                        break
                    resource_version = obj.metadata.resource_version
                    if self._done(obj, generation):
                        return int(generation)
            except ApiException as exc:
                raise self._translate(exc) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise AdapterUnavailable(f"kubernetes API: {exc}") from exc
            finally:
                await w.close()
        raise RolloutFailed(f"RolloutTimeout: {where.namespace}/{where.deployment} not rolled out in time")

    @staticmethod
    def _done(dep: Any, generation: int) -> bool:
        status = dep.status
        if (status.observed_generation or 0) < generation:
            return False
        for cond in status.conditions or []:
            if (
                cond.type == "Progressing"
                and cond.status == "False"
                and cond.reason == "ProgressDeadlineExceeded"
            ):
                raise RolloutFailed(f"ProgressDeadlineExceeded: {cond.message}")
        replicas = dep.spec.replicas
        return bool(
            (status.updated_replicas or 0) == replicas and (status.available_replicas or 0) == replicas
        )

    # -- shapes ----------------------------------------------------------------------

    @staticmethod
    def _patch(
        where: Placement, image: str, env: list[dict[str, Any]], replicas: int, version: str | None
    ) -> dict[str, Any]:
        labels = {VERSION_LABEL: version}  # None removes the label
        return {
            "spec": {
                "replicas": replicas,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {"name": where.container, "image": image, "env": [{"$patch": "replace"}, *env]}
                        ]
                    },
                },
            }
        }

    @staticmethod
    def _new_deployment(
        where: Placement,
        settings: KubernetesSettings,
        image: str,
        env: list[dict[str, Any]],
        replicas: int,
        version: str | None,
    ) -> dict[str, Any]:
        selector = {"app": where.deployment}
        container: dict[str, Any] = {"name": where.container, "image": image, "env": env}
        if settings.port:
            container["ports"] = [{"containerPort": settings.port}]
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**selector, **({VERSION_LABEL: version} if version else {})}},
                "spec": {"containers": [container]},
            },
        }
        if settings.progress_deadline_seconds:
            spec["progressDeadlineSeconds"] = settings.progress_deadline_seconds
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": where.deployment},
            "spec": spec,
        }

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
        )

    @asynccontextmanager
    async def _api(self, where: Placement) -> AsyncIterator[client.ApiClient]:
        configuration = client.Configuration()
        try:
            if where.kubeconfig is not None:
                await config.load_kube_config(
                    config_file=str(where.kubeconfig),
                    context=where.context,
                    client_configuration=configuration,
                )
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise InvalidInput(f"kubernetes client configuration: {exc}") from exc
        async with client.ApiClient(configuration=configuration) as api:
            yield api

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except ApiException as exc:
            raise self._translate(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AdapterUnavailable(f"kubernetes API: {exc}") from exc

    async def _read(self, request: Any) -> Any:
        """The object, or ``None`` when the API server says 404."""
        try:
            return await self._call(request)
        except AdapterRejected as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 404:
                return None
            raise

    @staticmethod
    def _translate(exc: ApiException) -> Exception:
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        message = f"kubernetes API {exc.status} {exc.reason}: {body}"
        if exc.status in (409, 429) or (exc.status or 0) >= 500:
            return AdapterUnavailable(message)
        return AdapterRejected(message)
