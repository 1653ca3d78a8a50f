"""``AzureContainerAppsTarget``: a service as an Azure Container App in multiple-revision
mode, one revision per version, traffic weights and labels across revisions.

- a new version PATCHes the app's template (the container's image and env) with a
  revision suffix derived from the version (``v1-4-2``), keeping the traffic pinned to
  the revisions that served before, so the new revision starts at 0%; the target then
  follows the revision until it is provisioned and running (a failed revision fails
  the step). A version whose revision exists already is only routed to (and
  re-activated when it was deactivated), never rebuilt — and refused when that
  revision runs another image;
- ``rolling`` / ``promote`` send 100% to the new revision; ``set_weight`` splits the
  traffic between it and the revision that served the most before; ``preview`` puts
  the ``preview`` label on it at 0% (its own URL); ``switch`` sends it 100% with the
  ``active`` label; ``scale_down`` drops every other route and deactivates every other
  active revision.

Applied steps are recorded as digests in the app's tag ``shiplog-applied`` (a tag value
holds 256 characters: the last 18 steps), so a step re-driven after a crash, by this
process or another, is not applied twice. The snapshot is the traffic block (weights
and labels, ``latestRevision`` resolved to the revision it meant then) and the
revisions that were active; ``restore`` re-activates those and puts the block back.

Where an app lives: subscription and resource group from the release settings, else
the config; the app ``settings.container_app``, default the service's name.
``snapshot`` and ``status`` place it by the release settings they are given, as
``apply`` does; without them they use what the last ``apply`` of the service used in
this process, else those defaults. ``restore`` acts on the app its snapshot names in
full, whatever settings it is given (they give only the preview and active labels).

The official azure-mgmt-appcontainers aio client does the HTTP: its retry policy
retries 408/429/5xx and connection errors with exponential backoff (``retry_total``
times, PATCH and POST included: every request here is declarative); when it gives up,
``apply`` and ``restore`` report the step as failed (``ok=False``) instead of raising.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.mgmt.appcontainers import models
from azure.mgmt.appcontainers.aio import ContainerAppsAPIClient

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track, traffic
from adapters.targets.azure.config import (
    APPLIED_TAG,
    SNAPSHOT_FORMAT,
    TAG_VALUE_MAX,
    VERSIONS_TAG,
    AzureContainerAppsSettings,
    AzureContainerAppsTargetConfig,
)
from adapters.targets.traffic import Route
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

T = TypeVar("T")
#: app name + "--" + suffix must stay within 64 characters
MAX_REVISION_NAME = 64
NOT_YET = {"Provisioning", "Processing", "Activating", None}


class RolloutFailed(Exception):
    """The new revision failed to provision or run, or not in time."""


class _RetryPolicy(AsyncRetryPolicy):
    """The SDK's retry policy, also for PATCH and POST answered 429/502: every request
    this target sends is declarative, so sending it again is safe."""

    def _is_method_retryable(self, settings: Any, request: Any, response: Any = None) -> bool:
        return True


@dataclass(frozen=True)
class Placement:
    subscription_id: str
    resource_group: str
    app: str
    container: str | None
    preview_label: str
    active_label: str

    @property
    def name(self) -> str:
        return f"{self.resource_group}/{self.app}"


def revision_suffix(app: str, version: str, versions: dict[str, str]) -> str:
    """``v<slug of version>``; with a hash of the version when the suffix is too long,
    or names a revision that runs another version."""
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")
    suffix = f"v{slug}" if slug else "v"
    room = MAX_REVISION_NAME - len(app) - 2
    if len(suffix) <= room and versions.get(suffix, version) == version:
        return suffix
    digest = hashlib.sha256(version.encode()).hexdigest()[:8]
    return f"{suffix[: max(1, room - 9)].rstrip('-')}-{digest}"


def step_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class AzureContainerAppsTarget:
    TYPE = "azure_container_apps"
    capabilities = Capabilities(traffic_split=True, two_colours=True)

    def __init__(self, config: AzureContainerAppsTargetConfig) -> None:
        self.config = config
        self._placements: dict[tuple[str, str], Placement] = {}
        self._credential: Any = config.credential
        self._owns_credential = False
        # plain HTTP (a local fake) carries the bearer token only when told to
        self._kw: dict[str, Any] = {"enforce_https": False} if config.base_url.startswith("http:") else {}

    async def close(self, *, stop_processes: bool = False) -> None:
        """Close the credential this target created (not one it was given)."""
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """The app's traffic block (``latestRevision`` resolved), the active revisions
        and their versions; an empty state when the app does not exist."""
        where = self._placement(service, environment, _parsed(settings))
        async with self._client(where) as client:
            app = await self._get(client, where)
            if app is None:
                return Snapshot(service=service, environment=environment, state={"format": SNAPSHOT_FORMAT})
            routes = self._routes(app)
            active = await self._active(client, where)
        versions = self._versions(app, where)
        serving = traffic.serving(routes)
        version = versions.get(serving[0].revision) if len(serving) == 1 else None
        state = {
            "format": SNAPSHOT_FORMAT,
            "subscription_id": where.subscription_id,
            "resource_group": where.resource_group,
            "container_app": where.app,
            "routes": [r.as_dict() for r in routes],
            "active": active,
            "versions": {r.revision: versions[r.revision] for r in routes if r.revision in versions},
        }
        return Snapshot(service=service, environment=environment, version=version, state=state)

    async def apply(self, step: Step) -> StepResult:
        """Bring the app's revisions and traffic to what the step declares; a step id
        already applied returns ``already_applied=True`` without acting."""
        release = step.release
        settings = AzureContainerAppsSettings.of(release.settings)
        where = self._placement(release.service, release.environment, settings)
        self._placements[(release.service, release.environment)] = where
        key = step_digest(f"{step.deployment_id}/{step.step_id}")
        return await self._guarded(step.step_id, self._apply(where, step, settings, key))

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """One track per revision in the traffic block, label URLs included;
        ``reachable`` is whether the API answered (after retries)."""
        where = self._placement(service, environment, _parsed(settings))
        try:
            async with self._client(where) as client:
                app = await self._get(client, where)
        except AdapterUnavailable:
            return TargetStatus(service=service, environment=environment, reachable=False)
        if app is None:
            return TargetStatus(service=service, environment=environment, reachable=True)
        ingress = self._ingress(app)
        fqdn = ingress.fqdn if ingress is not None else None
        return TargetStatus(
            service=service,
            environment=environment,
            reachable=True,
            tracks=self._tracks(app, where, fqdn),
            endpoint=f"https://{fqdn}" if fqdn else None,
        )

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Re-activate the snapshot's revisions and put its traffic block back (the
        template stays); idempotent by step id. The app is the one the snapshot names;
        ``settings`` give only the preview and active labels."""
        state = snapshot.state
        if "routes" not in state:
            return StepResult(step_id=step_id, ok=True, detail={"restored": "nothing (no app before)"})
        # the snapshot names the app in full: it wins over settings and config
        given = _parsed(settings) or AzureContainerAppsSettings()
        where = Placement(
            state["subscription_id"],
            state["resource_group"],
            state["container_app"],
            None,
            given.preview_label,
            given.active_label,
        )
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        key = step_digest(f"restore/{step_id}/{digest}")
        return await self._guarded(step_id, self._restore(where, state, step_id, key))

    # -- steps -----------------------------------------------------------------------

    async def _apply(
        self, where: Placement, step: Step, settings: AzureContainerAppsSettings, key: str
    ) -> StepResult:
        release = step.release
        async with self._client(where) as client:
            app = await self._get(client, where)
            if app is not None and key in self._applied(app):
                return self._already(step.step_id, where)
            if app is None:
                if step.kind != "rolling":
                    raise AdapterRejected(f"container app {where.name} does not exist; {step.kind} needs one")
                app = await self._create(
                    client, where, settings, release.artifact, release.config, release.version
                )
            versions = self._versions(app, where)
            suffix = revision_suffix(where.app, release.version, versions)
            revision = f"{where.app}--{suffix}"
            existing = await self._revision(client, where, revision)
            if existing is None:
                app = await self._new_revision(client, where, app, suffix, release.artifact, release.config)
            else:
                self._same_image(existing, revision, release.artifact)
            if existing is not None and not (existing.properties and existing.properties.active):
                await self._call(
                    client.container_apps_revisions.activate_revision(
                        where.resource_group, where.app, revision, **self._kw
                    )
                )
            await self._follow(client, where, revision)
            versions[revision] = release.version
            routes = traffic.plan(
                step.kind,
                self._routes(app),
                revision,
                weight=step.weight,
                preview_tag=where.preview_label,
                active_tag=where.active_label,
            )
            app = await self._route(client, where, app, routes, versions)
            detail: dict[str, Any] = {
                "container_app": where.name,
                "revision": revision,
                "traffic": [r.as_dict() for r in routes],
            }
            if step.kind == "scale_down":
                detail["deactivated"] = await self._deactivate_others(client, where, revision)
            await self._record(client, where, app, key)
        return StepResult(step_id=step.step_id, ok=True, detail=detail)

    async def _restore(self, where: Placement, state: dict[str, Any], step_id: str, key: str) -> StepResult:
        async with self._client(where) as client:
            app = await self._get(client, where)
            if app is None:
                raise AdapterRejected(f"container app {where.name} no longer exists")
            if key in self._applied(app):
                return self._already(step_id, where)
            routes = traffic.routes_of(state["routes"])
            wanted = set(state.get("active", [])) | {r.revision for r in routes}
            activated = []
            for name in sorted(wanted):
                revision = await self._revision(client, where, name)
                if revision is not None and not (revision.properties and revision.properties.active):
                    await self._call(
                        client.container_apps_revisions.activate_revision(
                            where.resource_group, where.app, name, **self._kw
                        )
                    )
                    await self._follow(client, where, name)
                    activated.append(name)
            versions = {**self._versions(app, where), **state.get("versions", {})}
            app = await self._route(client, where, app, routes, versions)
            await self._record(client, where, app, key)
        detail = {
            "container_app": where.name,
            "traffic": [r.as_dict() for r in routes],
            "activated": activated,
        }
        return StepResult(step_id=step_id, ok=True, detail=detail)

    async def _guarded(self, step_id: str, work: Awaitable[StepResult]) -> StepResult:
        """The step's result; a failed revision or an API still unavailable after the
        retries is the step's error, not an exception."""
        try:
            return await work
        except RolloutFailed as exc:
            return StepResult(step_id=step_id, ok=False, error=f"container app rollout failed: {exc}")
        except AdapterUnavailable as exc:
            return StepResult(step_id=step_id, ok=False, error=str(exc))

    @staticmethod
    def _already(step_id: str, where: Placement) -> StepResult:
        return StepResult(
            step_id=step_id,
            ok=True,
            already_applied=True,
            detail={"container_app": where.name, "recorded": "step applied before"},
        )

    # -- the app ---------------------------------------------------------------------

    async def _create(
        self,
        client: ContainerAppsAPIClient,
        where: Placement,
        settings: AzureContainerAppsSettings,
        image: str,
        config: dict[str, str],
        version: str,
    ) -> models.ContainerApp:
        """Create the app (multiple-revision mode, its first revision at 100%)."""
        if not settings.managed_environment_id or not settings.location:
            raise AdapterRejected(
                f"container app {where.name} does not exist; give managed_environment_id and "
                "location in the release settings to create it"
            )
        suffix = revision_suffix(where.app, version, {})
        ingress = models.Ingress(
            external=True,
            target_port=settings.target_port,
            traffic=[models.TrafficWeight(latest_revision=True, weight=100)],
        )
        body = models.ContainerApp(
            location=settings.location,
            tags={VERSIONS_TAG: json.dumps({suffix: version})},
            properties=models.ContainerAppProperties(
                managed_environment_id=settings.managed_environment_id,
                configuration=models.Configuration(active_revisions_mode="Multiple", ingress=ingress),
                template=models.Template(
                    revision_suffix=suffix,
                    containers=[
                        models.Container(
                            name=where.container or where.app, image=image, env=self._env(config)
                        )
                    ],
                ),
            ),
        )
        poller = await self._call(
            client.container_apps.begin_create_or_update(where.resource_group, where.app, body, **self._kw)
        )
        await self._call(poller.result())
        await self._follow(client, where, f"{where.app}--{suffix}")
        app = await self._get(client, where)
        if app is None:
            raise AdapterRejected(f"container app {where.name} vanished after its creation")
        return app

    async def _new_revision(
        self,
        client: ContainerAppsAPIClient,
        where: Placement,
        app: models.ContainerApp,
        suffix: str,
        image: str,
        config: dict[str, str],
    ) -> models.ContainerApp:
        """PATCH the template with the new suffix, image and env; the traffic stays on
        the revisions that served before (pinned by name), so the new one gets 0%."""
        props = app.properties
        template = props.template if props is not None else None
        if template is None or not template.containers:
            raise AdapterRejected(f"container app {where.name} has no container")
        containers = [dict(c) for c in template.containers]
        names = [c.get("name") for c in containers]
        index = 0
        if where.container is not None:
            if where.container not in names:
                raise AdapterRejected(f"container app {where.name} has no container {where.container!r}")
            index = names.index(where.container)
        # the rendered config is the whole env, as the other targets set it
        containers[index] = {**containers[index], "image": image, "env": self._env(config)}
        routes = self._routes(app)
        patch = models.ContainerApp(
            location=app.location,
            properties=models.ContainerAppProperties(
                configuration=models.Configuration(
                    active_revisions_mode="Multiple",
                    ingress=models.Ingress(traffic=self._weights(routes)),
                ),
                template=models.Template(
                    {**dict(template), "revisionSuffix": suffix, "containers": containers}
                ),
            ),
        )
        return await self._update(client, where, patch)

    async def _route(
        self,
        client: ContainerAppsAPIClient,
        where: Placement,
        app: models.ContainerApp,
        routes: list[Route],
        versions: dict[str, str],
    ) -> models.ContainerApp:
        """PATCH the traffic block (and the versions tag)."""
        tags = dict(app.tags or {})
        tags[VERSIONS_TAG] = self._versions_tag(versions, routes, where)
        patch = models.ContainerApp(
            location=app.location,
            tags=tags,
            properties=models.ContainerAppProperties(
                configuration=models.Configuration(ingress=models.Ingress(traffic=self._weights(routes)))
            ),
        )
        return await self._update(client, where, patch)

    async def _record(
        self, client: ContainerAppsAPIClient, where: Placement, app: models.ContainerApp, key: str
    ) -> None:
        """Add the step's digest to the app's tag (the last few only)."""
        applied = [d for d in self._applied(app) if d != key] + [key]
        tags = {**(app.tags or {}), APPLIED_TAG: " ".join(applied[-self.config.applied_keep :])}
        await self._update(client, where, models.ContainerApp(location=app.location, tags=tags))

    async def _update(
        self, client: ContainerAppsAPIClient, where: Placement, patch: models.ContainerApp
    ) -> models.ContainerApp:
        poller = await self._call(
            client.container_apps.begin_update(where.resource_group, where.app, patch, **self._kw)
        )
        await self._call(poller.result())
        # the PATCH result may be partial: read the whole app back
        app = await self._get(client, where)
        if app is None:
            raise AdapterRejected(f"container app {where.name} vanished during an update")
        return app

    async def _follow(self, client: ContainerAppsAPIClient, where: Placement, name: str) -> None:
        """Wait until the revision is provisioned and running."""
        deadline = time.monotonic() + self.config.revision_timeout
        while True:
            revision = await self._revision(client, where, name)
            props = revision.properties if revision is not None else None
            if props is not None:
                if props.provisioning_state == "Failed" or props.running_state == "Failed":
                    reason = props.provisioning_error or props.running_state
                    raise RolloutFailed(f"revision {name}: {reason}")
                if props.provisioning_state == "Provisioned" and props.running_state not in NOT_YET:
                    return
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"revision {name} not running after {self.config.revision_timeout:g}s")
            await asyncio.sleep(self.config.revision_poll)

    async def _deactivate_others(
        self, client: ContainerAppsAPIClient, where: Placement, keep: str
    ) -> list[str]:
        others = [name for name in await self._active(client, where) if name != keep]
        for name in others:
            await self._call(
                client.container_apps_revisions.deactivate_revision(
                    where.resource_group, where.app, name, **self._kw
                )
            )
        return others

    @staticmethod
    def _same_image(revision: models.Revision, name: str, artifact: str) -> None:
        """A version's revision is never rebuilt: refuse one that runs another image."""
        props = revision.properties
        template = props.template if props is not None else None
        images = [c.image for c in (template.containers if template is not None else None) or []]
        if artifact not in images:
            raise AdapterRejected(
                f"revision {name} exists and runs {images}, not {artifact}: a version's revision "
                "is never rebuilt"
            )

    # -- reading the app -------------------------------------------------------------

    @staticmethod
    def _ingress(app: models.ContainerApp) -> models.Ingress | None:
        props = app.properties
        config = props.configuration if props is not None else None
        return config.ingress if config is not None else None

    def _routes(self, app: models.ContainerApp) -> list[Route]:
        """The traffic block with ``latestRevision`` resolved to the revision it means now."""
        props = app.properties
        latest = (props.latest_ready_revision_name or props.latest_revision_name) if props else None
        ingress = self._ingress(app)
        out = []
        for w in (ingress.traffic if ingress is not None else None) or []:
            revision = latest if w.latest_revision else w.revision_name
            if revision:
                out.append(Route(revision, int(w.weight or 0), w.label or None))
        return out

    @staticmethod
    def _weights(routes: list[Route]) -> list[models.TrafficWeight]:
        out = []
        for r in routes:
            weight = models.TrafficWeight(revision_name=r.revision, weight=r.percent, latest_revision=False)
            if r.tag:
                weight.label = r.tag
            out.append(weight)
        return out

    @staticmethod
    def _env(config: dict[str, str]) -> list[models.EnvironmentVar]:
        return [models.EnvironmentVar(name=k, value=v) for k, v in sorted(config.items())]

    @staticmethod
    def _versions(app: models.ContainerApp, where: Placement) -> dict[str, str]:
        raw = (app.tags or {}).get(VERSIONS_TAG)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        if not isinstance(value, dict):
            return {}
        return {f"{where.app}--{k}": str(v) for k, v in value.items()}

    @staticmethod
    def _versions_tag(versions: dict[str, str], routes: list[Route], where: Placement) -> str:
        """The versions of the routed revisions, by suffix; within a tag's 256 characters."""
        prefix = f"{where.app}--"
        routed = [r.revision for r in routes]
        short = {rev.removeprefix(prefix): versions[rev] for rev in routed if rev in versions}
        while short and len(json.dumps(short)) > TAG_VALUE_MAX:
            short.pop(next(iter(short)))
        return json.dumps(short, sort_keys=True)

    @staticmethod
    def _applied(app: models.ContainerApp) -> list[str]:
        return ((app.tags or {}).get(APPLIED_TAG) or "").split()

    def _tracks(self, app: models.ContainerApp, where: Placement, fqdn: str | None) -> list[Track]:
        versions = self._versions(app, where)
        routes = self._routes(app)
        props = app.properties
        newest = props.latest_revision_name if props is not None else None

        def urls(revision: str) -> list[str]:
            if not fqdn:
                return []
            host, _, domain = fqdn.partition(".")
            return [f"https://{host}---{r.tag}.{domain}" for r in routes if r.revision == revision and r.tag]

        serving = traffic.serving(routes)
        tracks = []
        for r in serving:
            role: Literal["stable", "canary", "active"] = (
                "canary" if len(serving) > 1 and r.revision == newest else "stable"
            )
            if any(x.revision == r.revision and x.tag == where.active_label for x in routes):
                role = "active"
            version = versions.get(r.revision, r.revision)
            tracks.append(Track(version=version, role=role, weight=r.percent, urls=urls(r.revision)))
        for r in routes:
            if r.percent == 0 and r.tag == where.preview_label:
                version = versions.get(r.revision, r.revision)
                tracks.append(Track(version=version, role="preview", urls=urls(r.revision)))
        return tracks

    # -- the API ---------------------------------------------------------------------

    def _placement(
        self, service: str, environment: str, settings: AzureContainerAppsSettings | None
    ) -> Placement:
        if settings is None:
            known = self._placements.get((service, environment))
            if known is not None:
                return known
            settings = AzureContainerAppsSettings()
        subscription = settings.subscription_id or self.config.subscription_id
        group = settings.resource_group or self.config.resource_group
        if not subscription or not group:
            raise InvalidInput(
                "azure_container_apps target: no subscription_id or resource_group "
                "(config or release settings)"
            )
        return Placement(
            subscription_id=subscription,
            resource_group=group,
            app=settings.container_app or service,
            container=settings.container,
            preview_label=settings.preview_label,
            active_label=settings.active_label,
        )

    @asynccontextmanager
    async def _client(self, where: Placement) -> AsyncIterator[ContainerAppsAPIClient]:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            self._owns_credential = True
        retry = _RetryPolicy(
            retry_total=self.config.retry_total,
            retry_backoff_factor=self.config.retry_backoff_factor,
            retry_backoff_max=self.config.retry_backoff_max,
        )
        async with ContainerAppsAPIClient(
            self._credential,
            where.subscription_id,
            base_url=self.config.base_url,
            polling_interval=self.config.polling_interval,
            retry_policy=retry,
        ) as client:
            yield client

    async def _get(self, client: ContainerAppsAPIClient, where: Placement) -> models.ContainerApp | None:
        try:
            app: models.ContainerApp = await self._call(
                client.container_apps.get(where.resource_group, where.app, **self._kw)
            )
        except AdapterRejected as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None
            raise
        return app

    async def _revision(
        self, client: ContainerAppsAPIClient, where: Placement, name: str
    ) -> models.Revision | None:
        try:
            revision: models.Revision = await self._call(
                client.container_apps_revisions.get_revision(
                    where.resource_group, where.app, name, **self._kw
                )
            )
        except AdapterRejected as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                return None
            raise
        return revision

    async def _active(self, client: ContainerAppsAPIClient, where: Placement) -> list[str]:
        """The names of the app's active revisions, sorted."""
        pager = client.container_apps_revisions.list_revisions(where.resource_group, where.app, **self._kw)
        names = []
        try:
            async for revision in pager:
                if revision.name and revision.properties and revision.properties.active:
                    names.append(revision.name)
        except AzureError as exc:
            raise self._translate(exc) from exc
        return sorted(names)

    async def _call(self, request: Awaitable[T]) -> T:
        try:
            return await request
        except AzureError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: AzureError) -> Exception:
        if isinstance(exc, ClientAuthenticationError):
            # the message of an authentication error never carries the token itself
            return AdapterRejected(f"azure API: credentials refused: {exc.message}")
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return AdapterUnavailable(
                f"azure API unreachable after {self.config.retry_total} retries: {exc.message}"
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            message = f"azure API {status} {exc.reason}: {exc.message}"
            if status in (408, 409, 429) or status >= 500:
                return AdapterUnavailable(f"{message} (after {self.config.retry_total} retries)")
            return AdapterRejected(message)
        return AdapterRejected(f"azure API: {type(exc).__name__}: {exc}")


def _parsed(settings: Mapping[str, Any] | None) -> AzureContainerAppsSettings | None:
    """The caller's release settings, parsed as ``apply`` parses them (None: none given)."""
    return None if settings is None else AzureContainerAppsSettings.of(dict(settings))
