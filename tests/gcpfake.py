"""A small, strict fake of the Cloud Run Admin API v2 (REST), over real HTTP (aiohttp).

Enough for google-cloud-run's ``ServicesClient`` and ``RevisionsClient`` with the REST
transport: services GET, create (POST ``?serviceId=``) and update (PATCH of the whole
service), revisions GET, and long-running operations (GET ``.../operations/<id>``).
Request bodies are parsed with ``run_v2.Service.from_json``, which rejects any field
the API does not declare; unknown query parameters, a stale ``etag``, a revision name not prefixed by the
service's, a template changed under an existing revision's name, traffic naming an
unknown revision, percentages not adding up to 100, duplicate tags and reserved
annotation prefixes are refused as the real API refuses them (400 / 409 / 404, with a
Google error body).

Each update that changes the template creates a revision; the operation is done, and
the traffic routed, ``ready_after`` seconds later (a revision of an image listed in
``never_ready`` never gets ready: its operation ends with an error and the traffic
stays as it was). ``fail(status, n)`` answers the next ``n`` requests with ``status``
(5xx, 429). Every request is recorded with its Authorization header, and when
``token`` is set a request without ``Bearer <token>`` is refused with 401.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.cloud import run_v2

from tests.threadedapp import InjectedFailures, ThreadedApp

SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"
QUERY = {"$alt", "updateMask", "validateOnly", "allowMissing", "serviceId"}
RESERVED = ("run.googleapis.com", "cloud.googleapis.com", "serving.knative.dev", "autoscaling.knative.dev")
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


class GoogleError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def response(self) -> web.Response:
        status = STATUS_NAMES.get(self.code, "UNKNOWN")
        body = {"error": {"code": self.code, "message": self.message, "status": status}}
        return web.json_response(body, status=self.code)


@dataclass
class Revision:
    name: str
    service: str
    image: str
    template: dict[str, Any]
    ready_at: float


@dataclass
class Operation:
    name: str
    service: str
    done_at: float
    failed: str | None = None
    #: the traffic to put back when the operation fails
    previous: list[Any] = field(default_factory=list)


class GcpFake(InjectedFailures):
    def __init__(self, *, ready_after: float = 0.05, token: str | None = None) -> None:
        self.ready_after = ready_after
        self.token = token
        self.services: dict[str, run_v2.Service] = {}
        self.revisions: dict[str, Revision] = {}
        self.operations: dict[str, Operation] = {}
        #: service -> its newest operation, the only one that settles it
        self.latest: dict[str, str] = {}
        self.never_ready: set[str] = set()
        #: (method, path, Authorization header) of every request, and the status answered
        self.requests: list[tuple[str, str, str | None]] = []
        self.answered: list[int] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        base = "/v2/projects/{project}/locations/{location}"
        app.router.add_get(base + "/services/{service}", self._get)
        app.router.add_post(base + "/services", self._create)
        app.router.add_patch(base + "/services/{service}", self._update)
        app.router.add_get(base + "/services/{service}/revisions/{revision}", self._get_revision)
        app.router.add_get(base + "/operations/{operation}", self._operation)
        return app

    # -- observation (for tests) -----------------------------------------------------

    def serving(self, name: str) -> dict[str, int]:
        """Revision -> percent actually routed (traffic of a finished update only)."""
        svc = self.services[name]
        out: dict[str, int] = {}
        for t in svc.traffic:
            if t.percent:
                out[t.revision] = out.get(t.revision, 0) + t.percent
        return out

    # -- handlers --------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.path, auth))
        try:
            code = self.injected(request.method)
            if code is not None:
                raise GoogleError(code, f"injected {code}")
            if self.token is not None and auth != f"Bearer {self.token}":
                raise GoogleError(401, "Request had invalid authentication credentials.")
            unknown = set(request.query) - QUERY
            if unknown:
                raise GoogleError(400, f"Invalid JSON payload received. Unknown name {sorted(unknown)}")
            self._settle()
            response: web.StreamResponse = await handler(request)
        except GoogleError as exc:
            response = exc.response()
        self.answered.append(response.status)
        return response

    async def _get(self, request: web.Request) -> web.Response:
        svc = self._service(request)
        return web.json_response(self._json(svc))

    async def _get_revision(self, request: web.Request) -> web.Response:
        name = "/".join(request.path.split("/")[2:])
        rev = self.revisions.get(name)
        if rev is None:
            raise GoogleError(404, f"Revision '{name}' was not found")
        revision = run_v2.Revision(
            name=name,
            service=rev.service,
            containers=[run_v2.Container(image=rev.image)],
            annotations=rev.template.get("annotations") or {},
            reconciling=time.monotonic() < rev.ready_at,
        )
        return web.json_response(json.loads(run_v2.Revision.to_json(revision)))

    async def _create(self, request: web.Request) -> web.Response:
        parent = "/".join(request.path.split("/")[2:6])
        service_id = request.query.get("serviceId", "")
        if not service_id:
            raise GoogleError(400, "service_id is required")
        name = f"{parent}/services/{service_id}"
        if name in self.services:
            raise GoogleError(409, f"Resource '{service_id}' already exists.")
        body = await self._body(request)
        if body.name:
            raise GoogleError(400, "service.name must be empty on create; use service_id")
        body.name = name
        body.uid = str(uuid.uuid4())
        body.generation = 0
        body.uri = f"https://{service_id}-fake.a.run.app"
        return web.json_response(self._change(name, None, body))

    async def _update(self, request: web.Request) -> web.Response:
        current = self._service(request)
        body = await self._body(request)
        # the transport moves service.name into the URL (HTTP transcoding)
        if body.name and body.name != current.name:
            raise GoogleError(400, f"service.name {body.name!r} does not match the URL")
        body.name = current.name
        if body.etag and body.etag != current.etag:
            raise GoogleError(409, "etag mismatch: the service changed since it was read")
        return web.json_response(self._change(current.name, current, body))

    async def _operation(self, request: web.Request) -> web.Response:
        name = "/".join(request.path.split("/")[2:])
        op = self.operations.get(name)
        if op is None:
            raise GoogleError(404, f"operation {name} not found")
        return web.json_response(self._operation_json(op))

    # -- the model -------------------------------------------------------------------

    async def _body(self, request: web.Request) -> run_v2.Service:
        text = await request.text()
        try:
            # rejects any field the API does not declare
            return run_v2.Service.from_json(text)
        except Exception as exc:
            raise GoogleError(400, f"Invalid JSON payload received. {exc}") from None

    def _service(self, request: web.Request) -> run_v2.Service:
        name = "/".join(request.path.split("/")[2:8])
        svc = self.services.get(name)
        if svc is None:
            raise GoogleError(404, f"Resource '{name}' was not found")
        return svc

    def _change(self, name: str, current: run_v2.Service | None, body: run_v2.Service) -> dict[str, Any]:
        short = name.rsplit("/", 1)[1]
        for key in [*body.annotations, *body.template.annotations]:
            if key.split("/", 1)[0].endswith(RESERVED):
                raise GoogleError(400, f"annotation {key!r} uses a reserved prefix")
        template = json.loads(run_v2.RevisionTemplate.to_json(body.template))
        template.pop("revision", None)
        revision = body.template.revision or f"{short}-{uuid.uuid4().hex[:5]}"
        if not revision.startswith(f"{short}-"):
            raise GoogleError(400, f"revision name {revision!r} must start with '{short}-'")
        existing = self.revisions.get(f"{name}/revisions/{revision}")
        changed = current is None or json.loads(
            run_v2.RevisionTemplate.to_json(current.template)
        ) != json.loads(run_v2.RevisionTemplate.to_json(body.template))
        if changed and existing is not None and existing.template != template:
            raise GoogleError(
                409, f"Revision named '{revision}' with different configuration already exists."
            )
        if not body.template.containers or not body.template.containers[0].image:
            raise GoogleError(400, "template.containers[0].image is required")
        known = {r.name for r in self.revisions.values() if r.service == name}
        known.add(revision)
        tags: set[str] = set()
        total = 0
        for t in body.traffic:
            if t.type_ == REVISION and t.revision not in known:
                raise GoogleError(400, f"Revision '{t.revision}' referenced in traffic not found")
            if t.tag:
                if t.tag in tags:
                    raise GoogleError(400, f"duplicate traffic tag {t.tag!r}")
                tags.add(t.tag)
            total += t.percent
        if body.traffic and total != 100:
            raise GoogleError(400, f"traffic percentages add up to {total}, not 100")
        now = time.monotonic()
        done_at = now
        if changed and existing is None:
            image = body.template.containers[0].image
            self.revisions[f"{name}/revisions/{revision}"] = Revision(
                revision, name, image, template, now + self.ready_after
            )
            done_at = now + self.ready_after
        stored = run_v2.Service(body)
        stored.template.revision = revision
        previous = list(current.traffic) if current is not None else []
        stored.generation = (current.generation if current is not None else 0) + 1
        stored.etag = uuid.uuid4().hex
        stored.reconciling = True
        if not body.traffic:
            stored.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=100)]
        if current is not None:
            stored.uid, stored.uri = current.uid, current.uri
        self.services[name] = stored
        op_name = f"{name.rsplit('/services/', 1)[0]}/operations/{uuid.uuid4()}"
        image = body.template.containers[0].image
        op = Operation(op_name, name, done_at, previous=previous)
        if changed and existing is None and image in self.never_ready:
            op.failed = f"Revision '{revision}' is not ready and cannot serve traffic."
        self.operations[op_name] = op
        self.latest[name] = op_name
        return self._operation_json(op)

    def _settle(self) -> None:
        """Finish the operations whose time has come."""
        now = time.monotonic()
        for op in [self.operations[n] for n in self.latest.values()]:
            svc = self.services.get(op.service)
            if svc is None or not svc.reconciling or now < op.done_at:
                continue
            svc.reconciling = False
            svc.observed_generation = svc.generation
            if op.failed:
                svc.traffic = op.previous
            else:
                svc.latest_ready_revision = f"{op.service}/revisions/{svc.template.revision}"
            svc.latest_created_revision = f"{op.service}/revisions/{svc.template.revision}"
            svc.traffic_statuses = [
                run_v2.TrafficTargetStatus(
                    type_=t.type_,
                    revision=t.revision,
                    percent=t.percent,
                    tag=t.tag,
                    uri=f"https://{t.tag}---{svc.uri.removeprefix('https://')}" if t.tag else "",
                )
                for t in svc.traffic
            ]

    def _json(self, svc: run_v2.Service) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(run_v2.Service.to_json(svc))
        return data

    def _operation_json(self, op: Operation) -> dict[str, Any]:
        self._settle()
        svc = self.services[op.service]
        done = time.monotonic() >= op.done_at
        out: dict[str, Any] = {
            "name": op.name,
            "metadata": {"@type": SERVICE_TYPE, **self._json(svc)},
            "done": done,
        }
        if done and op.failed:
            out["error"] = {"code": 9, "message": op.failed}
        elif done:
            out["response"] = {"@type": SERVICE_TYPE, **self._json(svc)}
        return out


class GcpFakeServer(ThreadedApp):
    """The fake on its own event loop in a thread (``tests.threadedapp``)."""

    def __init__(self, fake: GcpFake | None = None) -> None:
        self.fake = fake or GcpFake()
        super().__init__(self.fake.app())


@contextlib.contextmanager
def gcp_fake_server(fake: GcpFake | None = None) -> Iterator[GcpFakeServer]:
    server = GcpFakeServer(fake)
    server.start()
    try:
        yield server
    finally:
        server.stop()
