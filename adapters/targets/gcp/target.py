"""``CloudRunTarget``: a service as a Cloud Run (v2) service, one revision per version,
traffic split by revision.

Every step is one ``UpdateService`` of the whole service followed through its
long-running operation (the new revision ready, the traffic routed), then a second,
smaller update that records the step in the service's annotation
``shiplog.io/applied-steps`` — so a step re-driven after a crash, by this process or
another, is not applied twice (its recorded result comes back ``already_applied``).

- a new version sets ``template.revision`` to a name derived from the version
  (``<service>-<version slug>``), the container's image and env, and the template
  annotation ``shiplog.io/version``; a version whose revision exists already is only
  routed to, never rebuilt (and refused when that revision runs another image);
- ``rolling`` / ``promote`` send 100% to the new revision; ``set_weight`` splits the
  traffic between it and the revision that served the most before; ``preview`` tags it
  (``preview`` by default: its own URL) at 0%; ``switch`` sends it 100%;
  ``scale_down`` drops every other route (Cloud Run scales untouched revisions to zero).

The snapshot is the traffic block, with a ``LATEST`` route resolved to the revision
it meant then (restoring ``LATEST`` later would mean the new revision); ``restore``
puts it back without touching the template.

Where a service lives: project and region from the release settings, else the config;
the Cloud Run service ``settings.service_name``, default the service's name.
``snapshot`` and ``status`` place it by the release settings they are given, as
``apply`` does; without them they use what the last ``apply`` of the service used in
this process, else those defaults. ``restore`` acts on the service its snapshot names
in full, whatever settings it is given (they give only the preview tag).

google-cloud-run's REST transport is synchronous: every call runs in a worker thread.
Requests answered 5xx or 429 are retried with backoff by the client's retry policy
(bounded by ``retry_timeout``); when it gives up, ``apply`` and ``restore`` report the
step as failed (``ok=False``) instead of raising.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import requests
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import run_v2
from google.longrunning import operations_pb2

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track, traffic
from adapters.targets.gcp.config import (
    APPLIED_ANNOTATION,
    SNAPSHOT_FORMAT,
    VERSION_ANNOTATION,
    VERSIONS_ANNOTATION,
    CloudRunSettings,
    CloudRunTargetConfig,
)
from adapters.targets.traffic import Route
from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

T = TypeVar("T")
C = TypeVar("C", run_v2.ServicesClient, run_v2.RevisionsClient)
RETRYABLE = (
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.TooManyRequests,
    requests.exceptions.ConnectionError,
)
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
MAX_NAME = 63


class RolloutFailed(Exception):
    """The long-running operation ended in an error (the revision never got ready...)."""


@dataclass(frozen=True)
class Placement:
    project: str
    region: str
    service: str
    container: str | None
    preview_tag: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        return f"{self.parent}/services/{self.service}"


def revision_name(service: str, version: str, versions: dict[str, str]) -> str:
    """``<service>-<slug of version>``; with a hash of the version when the slug is
    too long, or names a revision that runs another version."""
    slug = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "v"
    name = f"{service}-{slug}"
    if len(name) <= MAX_NAME and versions.get(name, version) == version:
        return name
    digest = hashlib.sha256(version.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


class CloudRunTarget:
    TYPE = "cloud_run"
    capabilities = Capabilities(traffic_split=True, two_colours=True)

    def __init__(self, config: CloudRunTargetConfig) -> None:
        self.config = config
        self._placements: dict[tuple[str, str], Placement] = {}
        self._client: run_v2.ServicesClient | None = None
        self._revisions_client: run_v2.RevisionsClient | None = None
        self._retry = gretry.Retry(
            predicate=gretry.if_exception_type(*RETRYABLE),
            initial=config.retry_initial,
            maximum=config.retry_maximum,
            multiplier=2.0,
            timeout=config.retry_timeout,
        )

    async def close(self, *, stop_processes: bool = False) -> None:
        """Close the HTTP sessions of the clients."""
        for client in (self._client, self._revisions_client):
            if client is not None:
                await asyncio.to_thread(client.transport.close)
        self._client = self._revisions_client = None

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """The service's traffic block (``LATEST`` resolved to a revision name) and the
        versions of its revisions; an empty state when the service does not exist."""
        where = self._placement(service, environment, _parsed(settings))
        svc = await self._thread(self._get, where)
        if svc is None:
            return Snapshot(service=service, environment=environment, state={"format": SNAPSHOT_FORMAT})
        routes = self._routes(svc)
        versions = self._versions(svc)
        serving = traffic.serving(routes)
        version = versions.get(serving[0].revision) if len(serving) == 1 else None
        state = {
            "format": SNAPSHOT_FORMAT,
            "name": where.name,
            "routes": [r.as_dict() for r in routes],
            "versions": {r.revision: versions[r.revision] for r in routes if r.revision in versions},
        }
        return Snapshot(service=service, environment=environment, version=version, state=state)

    async def apply(self, step: Step) -> StepResult:
        """Bring the service's revisions and traffic to what the step declares; a step
        id already applied returns its recorded result with ``already_applied=True``."""
        release = step.release
        settings = CloudRunSettings.of(release.settings)
        where = self._placement(release.service, release.environment, settings)
        self._placements[(release.service, release.environment)] = where
        key = f"{step.deployment_id}/{step.step_id}"
        return await self._guarded(step.step_id, lambda: self._apply(where, step, settings, key))

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """One track per revision in the traffic block, with its tag URL; ``reachable``
        is whether the API answered (after retries)."""
        where = self._placement(service, environment, _parsed(settings))
        try:
            svc = await self._thread(self._get, where)
        except AdapterUnavailable:
            return TargetStatus(service=service, environment=environment, reachable=False)
        if svc is None:
            return TargetStatus(service=service, environment=environment, reachable=True)
        return TargetStatus(
            service=service,
            environment=environment,
            reachable=True,
            tracks=self._tracks(svc, where),
            endpoint=svc.uri or None,
        )

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Put the snapshot's traffic block back (the template stays); idempotent by
        step id. The service is the one the snapshot names; ``settings`` give only the
        preview tag."""
        state = snapshot.state
        if "routes" not in state:
            return StepResult(step_id=step_id, ok=True, detail={"restored": "nothing (no service before)"})
        # the snapshot names the service in full: it wins over settings and config
        _, project, _, region, _, name = str(state["name"]).split("/")
        given = _parsed(settings) or CloudRunSettings()
        where = Placement(project, region, name, None, given.preview_tag)
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        key = f"restore/{step_id}/{digest}"
        return await self._guarded(step_id, lambda: self._restore(where, state, step_id, key))

    # -- steps (run in a worker thread) ----------------------------------------------

    def _apply(self, where: Placement, step: Step, settings: CloudRunSettings, key: str) -> StepResult:
        release = step.release
        svc = self._get(where)
        if svc is not None and key in (applied := self._applied(svc)):
            return StepResult.model_validate({**applied[key], "already_applied": True})
        if svc is None:
            if step.kind != "rolling":
                raise AdapterRejected(f"cloud run service {where.name} does not exist; {step.kind} needs one")
            svc = self._create(where, release.artifact, release.config, release.version, settings)
        versions = self._versions(svc)
        revision = revision_name(where.service, release.version, versions)
        existing = self._revision(f"{where.name}/revisions/{revision}")
        if existing is None:
            self._set_template(svc, where, revision, release.artifact, release.config, release.version)
        elif release.artifact not in [c.image for c in existing.containers]:
            raise AdapterRejected(
                f"revision {revision} exists and runs {[c.image for c in existing.containers]}, "
                f"not {release.artifact}: a version's revision is never rebuilt"
            )
        versions[revision] = release.version
        routes = traffic.plan(
            step.kind,
            self._routes(svc),
            revision,
            weight=step.weight,
            preview_tag=where.preview_tag,
        )
        svc = self._update(svc, routes, versions)
        detail: dict[str, Any] = {
            "service": where.name,
            "revision": revision,
            "traffic": [r.as_dict() for r in routes],
        }
        if svc.uri:
            detail["uri"] = svc.uri
        result = StepResult(step_id=step.step_id, ok=True, detail=detail)
        self._record(svc, key, result)
        return result

    def _restore(self, where: Placement, state: dict[str, Any], step_id: str, key: str) -> StepResult:
        svc = self._get(where)
        if svc is None:
            raise AdapterRejected(f"cloud run service {state['name']} no longer exists")
        if key in (applied := self._applied(svc)):
            return StepResult.model_validate({**applied[key], "already_applied": True})
        routes = traffic.routes_of(state["routes"])
        versions = {**self._versions(svc), **state.get("versions", {})}
        svc = self._update(svc, routes, versions)
        result = StepResult(
            step_id=step_id,
            ok=True,
            detail={"service": state["name"], "traffic": [r.as_dict() for r in routes]},
        )
        self._record(svc, key, result)
        return result

    async def _guarded(self, step_id: str, work: Callable[[], StepResult]) -> StepResult:
        """The step's result; a rollout that failed or an API still unavailable after the
        retries is the step's error, not an exception."""
        try:
            return await self._thread(work)
        except RolloutFailed as exc:
            return StepResult(step_id=step_id, ok=False, error=f"cloud run rollout failed: {exc}")
        except AdapterUnavailable as exc:
            return StepResult(step_id=step_id, ok=False, error=str(exc))

    # -- the service -----------------------------------------------------------------

    def _create(
        self,
        where: Placement,
        image: str,
        config: dict[str, str],
        version: str,
        settings: CloudRunSettings,
    ) -> run_v2.Service:
        """Create the service with the release's revision at 100%."""
        container = run_v2.Container(name=where.container or where.service, image=image)
        if settings.port:
            container.ports = [run_v2.ContainerPort(container_port=settings.port)]
        revision = revision_name(where.service, version, {})
        svc = run_v2.Service(
            template=run_v2.RevisionTemplate(containers=[container]),
            traffic=[run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=100)],
        )
        self._set_template(svc, where, revision, image, config, version)
        svc.annotations[VERSIONS_ANNOTATION] = json.dumps({revision: version})
        operation = self._call(
            lambda: self._services().create_service(
                parent=where.parent, service=svc, service_id=where.service, retry=self._retry
            )
        )
        return self._follow(operation)

    @staticmethod
    def _set_template(
        svc: run_v2.Service,
        where: Placement,
        revision: str,
        image: str,
        config: dict[str, str],
        version: str,
    ) -> None:
        template = svc.template
        containers = list(template.containers)
        index = 0
        if where.container is not None:
            names = [c.name for c in containers]
            if where.container not in names:
                raise AdapterRejected(f"cloud run service {where.name} has no container {where.container!r}")
            index = names.index(where.container)
        elif not containers:
            raise AdapterRejected(f"cloud run service {where.name} has no container")
        container = containers[index]
        container.image = image
        # the rendered config is the whole env, as the other targets set it
        container.env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(config.items())]
        containers[index] = container
        template.containers = containers
        template.revision = revision
        template.annotations[VERSION_ANNOTATION] = version
        svc.template = template

    def _update(self, svc: run_v2.Service, routes: list[Route], versions: dict[str, str]) -> run_v2.Service:
        """Send the whole service with these routes and follow the operation."""
        svc.traffic = [
            run_v2.TrafficTarget(type_=REVISION, revision=r.revision, percent=r.percent, tag=r.tag or "")
            for r in routes
        ]
        # keep the versions of what can still serve: routed revisions and the template's
        keep = {r.revision for r in routes} | {svc.template.revision}
        svc.annotations[VERSIONS_ANNOTATION] = json.dumps(
            {rev: v for rev, v in versions.items() if rev in keep}, sort_keys=True
        )
        operation = self._call(lambda: self._services().update_service(service=svc, retry=self._retry))
        return self._follow(operation)

    def _record(self, svc: run_v2.Service, key: str, result: StepResult) -> None:
        """Keep the step's result in the service's annotation (the last few only)."""
        applied = self._applied(svc)
        applied[key] = result.model_dump(mode="json")
        keep = dict(list(applied.items())[-self.config.applied_keep :])
        svc.annotations[APPLIED_ANNOTATION] = json.dumps(keep)
        operation = self._call(lambda: self._services().update_service(service=svc, retry=self._retry))
        self._follow(operation)

    def _follow(self, operation: Any) -> run_v2.Service:
        """Poll the long-running operation to its end (each poll retried like any call);
        an operation that ends in an error, or not in time, fails the step."""
        raw: operations_pb2.Operation = operation.operation
        deadline = time.monotonic() + self.config.operation_timeout
        delay = self.config.poll_initial
        while not raw.done:
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"operation {raw.name} not done after {self.config.operation_timeout:g}s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, self.config.poll_maximum)
            raw = self._call(
                functools.partial(
                    self._services().get_operation,
                    operations_pb2.GetOperationRequest(name=raw.name),
                    retry=self._retry,
                )
            )
        if raw.HasField("error"):
            raise RolloutFailed(f"{raw.error.message} (code {raw.error.code})")
        return run_v2.Service.deserialize(raw.response.value)

    def _get(self, where: Placement) -> run_v2.Service | None:
        try:
            return self._call(lambda: self._services().get_service(name=where.name, retry=self._retry))
        except AdapterRejected as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return None
            raise

    def _revision(self, name: str) -> run_v2.Revision | None:
        try:
            return self._call(lambda: self._revisions().get_revision(name=name, retry=self._retry))
        except AdapterRejected as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return None
            raise

    # -- reading the service ---------------------------------------------------------

    @staticmethod
    def _routes(svc: run_v2.Service) -> list[Route]:
        """The traffic block with ``LATEST`` resolved to the revision it means now."""
        latest = svc.latest_ready_revision.rsplit("/", 1)[-1] or svc.template.revision
        out = []
        for t in svc.traffic:
            revision = t.revision if t.type_ == REVISION else latest
            out.append(Route(revision, t.percent, t.tag or None))
        return out

    @staticmethod
    def _versions(svc: run_v2.Service) -> dict[str, str]:
        raw = svc.annotations.get(VERSIONS_ANNOTATION)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    @staticmethod
    def _applied(svc: run_v2.Service) -> dict[str, Any]:
        raw = svc.annotations.get(APPLIED_ANNOTATION)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _tracks(self, svc: run_v2.Service, where: Placement) -> list[Track]:
        versions = self._versions(svc)
        routes = self._routes(svc)
        urls: dict[str, list[str]] = {}
        for status in svc.traffic_statuses:
            if status.uri:
                urls.setdefault(status.revision or svc.template.revision, []).append(status.uri)
        serving = traffic.serving(routes)
        newest = svc.template.revision
        tracks = []
        for r in serving:
            role: Literal["stable", "canary"] = (
                "canary" if len(serving) > 1 and r.revision == newest else "stable"
            )
            tracks.append(
                Track(
                    version=versions.get(r.revision, r.revision),
                    role=role,
                    weight=r.percent,
                    urls=urls.get(r.revision, []),
                )
            )
        for r in routes:
            if r.percent == 0 and r.tag == where.preview_tag:
                tracks.append(
                    Track(
                        version=versions.get(r.revision, r.revision),
                        role="preview",
                        urls=urls.get(r.revision, []),
                    )
                )
        return tracks

    # -- the API ---------------------------------------------------------------------

    def _placement(self, service: str, environment: str, settings: CloudRunSettings | None) -> Placement:
        if settings is None:
            known = self._placements.get((service, environment))
            if known is not None:
                return known
            settings = CloudRunSettings()
        project = settings.project or self.config.project
        region = settings.region or self.config.region
        if not project or not region:
            raise InvalidInput("cloud_run target: no project or region (config or release settings)")
        return Placement(
            project=project,
            region=region,
            service=settings.service_name or service,
            container=settings.container,
            preview_tag=settings.preview_tag,
        )

    def _services(self) -> run_v2.ServicesClient:
        if self._client is None:
            self._client = self._make(run_v2.ServicesClient)
        return self._client

    def _revisions(self) -> run_v2.RevisionsClient:
        if self._revisions_client is None:
            self._revisions_client = self._make(run_v2.RevisionsClient)
        return self._revisions_client

    def _make(self, cls: Callable[..., C]) -> C:
        try:
            return cls(
                credentials=self.config.credentials,
                transport="rest",
                client_options=ClientOptions(api_endpoint=self.config.api_endpoint),
            )
        except auth_exceptions.DefaultCredentialsError as exc:
            raise InvalidInput(f"cloud_run target: no Google credentials: {exc}") from exc

    @staticmethod
    async def _thread(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (gexc.GoogleAPICallError, gexc.RetryError, requests.exceptions.RequestException) as exc:
            raise self._translate(exc) from exc
        except auth_exceptions.GoogleAuthError as exc:
            raise AdapterRejected(f"cloud run API: credentials refused: {type(exc).__name__}") from exc

    def _translate(self, exc: Exception) -> Exception:
        if isinstance(exc, gexc.RetryError):
            cause = exc.cause
            return AdapterUnavailable(
                f"cloud run API still unavailable after retrying for {self.config.retry_timeout:g}s: "
                f"{self._describe(cause)}"
            )
        if isinstance(exc, RETRYABLE) or isinstance(exc, requests.exceptions.RequestException):
            return AdapterUnavailable(f"cloud run API: {self._describe(exc)}")
        if isinstance(exc, gexc.Conflict | gexc.Aborted):
            return AdapterUnavailable(f"cloud run API: {self._describe(exc)}")
        return AdapterRejected(f"cloud run API: {self._describe(exc)}")

    @staticmethod
    def _describe(exc: BaseException | None) -> str:
        if isinstance(exc, gexc.GoogleAPICallError):
            return f"{exc.code} {exc.message}"
        return f"{type(exc).__name__}: {exc}"


def _parsed(settings: Mapping[str, Any] | None) -> CloudRunSettings | None:
    """The caller's release settings, parsed as ``apply`` parses them (None: none given)."""
    return None if settings is None else CloudRunSettings.of(dict(settings))
