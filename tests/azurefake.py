"""A small, strict fake of Azure Resource Manager for Container Apps, over real HTTP
(aiohttp).

Enough for azure-mgmt-appcontainers' aio client: container apps GET, PUT (create: an
``Azure-AsyncOperation`` long-running operation) and PATCH (JSON merge patch: a
``Location`` long-running operation), revisions GET / list / activate / deactivate.
Every request needs ``api-version`` and ``Authorization: Bearer <token>``. Request
bodies are checked against the SDK's own models: a key a model does not declare, or a
read-only key (which the SDK never sends), is refused with 400 — as is traffic that
does not add up to 100, names an unknown or inactive revision, or repeats a label; a
template changed under an existing revision suffix; deactivating a revision that
still has traffic.

A template change creates a revision ``<app>--<suffix>``; it is ``Provisioning`` /
``Activating`` for ``ready_after`` seconds, then ``Provisioned`` / ``Running`` (a
revision of an image in ``never_ready`` ends ``Failed``). ``fail(status, n)`` answers
the next ``n`` requests with ``status`` (5xx, 429); every request is recorded with its
Authorization header.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import types
import typing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from azure.mgmt.appcontainers import models
from azure.mgmt.appcontainers._utils.model_base import Model

from tests.threadedapp import InjectedFailures, ThreadedApp

PROVIDER = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{app}"
DOMAIN = "fake-env.eastus.azurecontainerapps.io"


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status)


# -- strictness: the SDK's models say which keys exist ---------------------------------


def _fields(cls: type[Model]) -> dict[str, tuple[Any, Any]]:
    """REST name -> (rest field, type hint) of a model class."""
    cls({})  # the model base computes its field table on first use
    hints = typing.get_type_hints(cls, globalns=vars(models._models), localns={"_models": models})
    table: dict[str, Any] = getattr(cls, "_attr_to_rest_field")  # noqa: B009 - instance-only in the stubs
    return {f._rest_name: (f, hints.get(attr)) for attr, f in table.items()}


def _model_in(hint: Any) -> tuple[str, type[Model]] | None:
    """('one' | 'list' | 'dict', model class) for a hint holding a model, else None."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            found = _model_in(arg)
            if found is not None:
                return found
        return None
    if origin is list:
        inner = _model_in(typing.get_args(hint)[0])
        return ("list", inner[1]) if inner else None
    if origin is dict:
        inner = _model_in(typing.get_args(hint)[1])
        return ("dict", inner[1]) if inner else None
    if isinstance(hint, type) and issubclass(hint, Model):
        return ("one", hint)
    return None


def check(body: Any, cls: type[Model], path: str = "") -> None:
    """Refuse keys ``cls`` does not declare and read-only keys, recursively."""
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", f"{path or 'body'}: expected an object")
    fields = _fields(cls)
    for key, value in body.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise ArmError(400, "InvalidRequestContent", f"Could not find member '{where}' on {cls.__name__}")
        field, hint = fields[key]
        if field._visibility == ["read"]:
            raise ArmError(400, "InvalidRequestContent", f"'{where}' is read-only")
        if value is None:
            continue
        found = _model_in(hint)
        if found is None:
            continue
        shape, inner = found
        if shape == "one":
            check(value, inner, where)
        elif shape == "list":
            for i, item in enumerate(value):
                check(item, inner, f"{where}[{i}]")
        else:
            for k, item in value.items():
                check(item, inner, f"{where}.{k}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Revision:
    name: str
    template: dict[str, Any]
    created: str
    ready_at: float
    failed: bool
    active: bool = True


@dataclass
class Operation:
    done_at: float
    app: tuple[str, str, str]


class AzureFake(InjectedFailures):
    def __init__(self, *, ready_after: float = 0.05, token: str = "fake-token") -> None:
        self.ready_after = ready_after
        self.token = token
        self.apps: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.revisions: dict[tuple[str, str, str], dict[str, Revision]] = {}
        self.operations: dict[str, Operation] = {}
        self.never_ready: set[str] = set()
        #: (method, path, Authorization header) of every request, and the status answered
        self.requests: list[tuple[str, str, str | None]] = []
        self.answered: list[int] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(PROVIDER, self._get)
        app.router.add_put(PROVIDER, self._put)
        app.router.add_patch(PROVIDER, self._patch)
        app.router.add_get(PROVIDER + "/revisions", self._list_revisions)
        app.router.add_get(PROVIDER + "/revisions/{rev}", self._get_revision)
        app.router.add_post(PROVIDER + "/revisions/{rev}/{action:activate|deactivate}", self._activation)
        app.router.add_get("/operations/{op}", self._operation)
        app.router.add_get("/operationResults/{op}", self._operation_result)
        return app

    # -- observation (for tests) -----------------------------------------------------

    def traffic(self, key: tuple[str, str, str]) -> list[dict[str, Any]]:
        return list(self.apps[key]["properties"]["configuration"]["ingress"].get("traffic") or [])

    def serving(self, key: tuple[str, str, str]) -> dict[str, int]:
        """Revision -> weight actually routed."""
        out: dict[str, int] = {}
        latest = self._latest_ready(key)
        for w in self.traffic(key):
            name = latest if w.get("latestRevision") else w.get("revisionName")
            if w.get("weight") and name:
                out[name] = out.get(name, 0) + int(w["weight"])
        return out

    def image(self, key: tuple[str, str, str], revision: str) -> str:
        return str(self.revisions[key][revision].template["containers"][0]["image"])

    # -- handlers --------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.path, auth))
        try:
            status = self.injected(request.method)
            if status is not None:
                code = "TooManyRequests" if status == 429 else "InternalServerError"
                raise ArmError(status, code, f"injected {status}")
            if auth != f"Bearer {self.token}":
                raise ArmError(401, "AuthenticationFailed", "missing or invalid bearer token")
            if "api-version" not in request.query:
                raise ArmError(
                    400, "MissingApiVersionParameter", "The api-version query parameter is required"
                )
            response: web.StreamResponse = await handler(request)
        except ArmError as exc:
            response = exc.response()
        self.answered.append(response.status)
        return response

    def _key(self, request: web.Request) -> tuple[str, str, str]:
        info = request.match_info
        return info["sub"], info["rg"].lower(), info["app"]

    def _app(self, request: web.Request) -> tuple[tuple[str, str, str], dict[str, Any]]:
        key = self._key(request)
        app = self.apps.get(key)
        if app is None:
            raise ArmError(404, "ResourceNotFound", f"container app {key[2]} not found")
        return key, app

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise ArmError(400, "InvalidRequestContent", "body is not JSON") from None
        check(body, models.ContainerApp)
        return dict(body)

    async def _get(self, request: web.Request) -> web.Response:
        key, _ = self._app(request)
        return web.json_response(self._app_json(key))

    async def _put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        if key in self.apps:
            raise ArmError(409, "Conflict", "this fake creates apps only")
        body = await self._body(request)
        props = body.get("properties") or {}
        if not body.get("location") or not props.get("managedEnvironmentId"):
            raise ArmError(400, "InvalidRequestContent", "location and managedEnvironmentId are required")
        app = {
            "id": request.path,
            "name": key[2],
            "type": "Microsoft.App/containerApps",
            "location": body["location"],
            "tags": body.get("tags") or {},
            "properties": {
                "managedEnvironmentId": props["managedEnvironmentId"],
                "configuration": props.get("configuration") or {},
                "template": {},
            },
        }
        self.revisions[key] = {}
        done_at = self._apply_template(key, app, props.get("template") or {})
        self._check_traffic(key, app)
        self.apps[key] = app
        op = self._operation_for(key, done_at)
        headers = {"Azure-AsyncOperation": f"{request.url.origin()}/operations/{op}?api-version=x"}
        return web.json_response(self._app_json(key, "InProgress"), status=201, headers=headers)

    async def _patch(self, request: web.Request) -> web.Response:
        key, current = self._app(request)
        body = await self._body(request)
        merged = merge_patch(current, body)
        template = merged["properties"].get("template") or {}
        merged["properties"]["template"] = current["properties"]["template"]
        revisions = copy.deepcopy(self.revisions[key])
        try:
            done_at = self._apply_template(key, merged, template)
            self._check_traffic(key, merged)
        except ArmError:
            self.revisions[key] = revisions
            raise
        self.apps[key] = merged
        op = self._operation_for(key, done_at)
        location = f"{request.url.origin()}/operationResults/{op}?api-version=x"
        return web.Response(status=202, headers={"Location": location, "Retry-After": "0"})

    async def _operation(self, request: web.Request) -> web.Response:
        """The ``Azure-AsyncOperation`` status document."""
        op = self.operations.get(request.match_info["op"])
        if op is None:
            raise ArmError(404, "NotFound", "no such operation")
        done = time.monotonic() >= op.done_at
        return web.json_response(
            {"name": request.match_info["op"], "status": "Succeeded" if done else "InProgress"}
        )

    async def _operation_result(self, request: web.Request) -> web.Response:
        """The ``Location`` of a PATCH: 202 until done, then the app."""
        op = self.operations.get(request.match_info["op"])
        if op is None:
            raise ArmError(404, "NotFound", "no such operation")
        if time.monotonic() < op.done_at:
            return web.Response(status=202, headers={"Retry-After": "0"})
        return web.json_response(self._app_json(op.app))

    async def _list_revisions(self, request: web.Request) -> web.Response:
        key, _ = self._app(request)
        return web.json_response(
            {"value": [self._revision_json(key, r) for r in self.revisions[key].values()]}
        )

    async def _get_revision(self, request: web.Request) -> web.Response:
        key, _ = self._app(request)
        revision = self.revisions[key].get(request.match_info["rev"])
        if revision is None:
            raise ArmError(
                404, "ContainerAppRevisionNotFound", f"revision {request.match_info['rev']} not found"
            )
        return web.json_response(self._revision_json(key, revision))

    async def _activation(self, request: web.Request) -> web.Response:
        key, _ = self._app(request)
        revision = self.revisions[key].get(request.match_info["rev"])
        if revision is None:
            raise ArmError(
                404, "ContainerAppRevisionNotFound", f"revision {request.match_info['rev']} not found"
            )
        if request.match_info["action"] == "deactivate":
            if self.serving(key).get(revision.name):
                raise ArmError(
                    400, "ContainerAppRevisionInUse", f"revision {revision.name} still has traffic"
                )
            revision.active = False
        else:
            revision.active = True
        return web.Response(status=200)

    # -- the model -------------------------------------------------------------------

    def _apply_template(
        self, key: tuple[str, str, str], app: dict[str, Any], template: dict[str, Any]
    ) -> float:
        """Store ``template``; a changed one makes a revision. The time it is ready."""
        now = time.monotonic()
        current = app["properties"].get("template") or {}
        strip = {k: v for k, v in template.items() if k != "revisionSuffix"}
        if not template or strip == {k: v for k, v in current.items() if k != "revisionSuffix"}:
            app["properties"]["template"] = template or current
            return now
        containers = template.get("containers") or []
        if not containers or not containers[0].get("image"):
            raise ArmError(400, "ContainerAppImageRequired", "template.containers[0].image is required")
        suffix = template.get("revisionSuffix") or uuid.uuid4().hex[:7]
        name = f"{key[2]}--{suffix}"
        if name in self.revisions[key]:
            raise ArmError(
                400, "ContainerAppRevisionSuffixConflict", f"revision suffix {suffix} already exists"
            )
        image = containers[0]["image"]
        self.revisions[key][name] = Revision(
            name, strip, _now(), now + self.ready_after, failed=image in self.never_ready
        )
        app["properties"]["template"] = template
        app["properties"]["latestRevisionName"] = name
        return now + self.ready_after

    def _check_traffic(self, key: tuple[str, str, str], app: dict[str, Any]) -> None:
        ingress = (app["properties"].get("configuration") or {}).get("ingress") or {}
        weights = ingress.get("traffic") or []
        revisions = self.revisions[key]
        labels: set[str] = set()
        total = 0
        for w in weights:
            name = w.get("revisionName")
            if w.get("latestRevision") and name:
                raise ArmError(400, "ContainerAppInvalidTraffic", "latestRevision and revisionName both set")
            if name and (name not in revisions or not revisions[name].active):
                raise ArmError(400, "ContainerAppInvalidTraffic", f"revision {name} not found or inactive")
            if label := w.get("label"):
                if label in labels:
                    raise ArmError(400, "ContainerAppInvalidTraffic", f"label {label} used twice")
                labels.add(label)
            total += int(w.get("weight") or 0)
        if weights and total != 100:
            raise ArmError(400, "ContainerAppInvalidTraffic", f"traffic weights add up to {total}, not 100")
        mode = (app["properties"].get("configuration") or {}).get("activeRevisionsMode", "Single")
        if mode != "Multiple" and len([w for w in weights if w.get("weight")]) > 1:
            raise ArmError(
                400, "ContainerAppInvalidTraffic", "traffic split needs activeRevisionsMode Multiple"
            )

    def _operation_for(self, key: tuple[str, str, str], done_at: float) -> str:
        op = uuid.uuid4().hex
        self.operations[op] = Operation(done_at, key)
        return op

    def _ready(self, revision: Revision) -> bool:
        return time.monotonic() >= revision.ready_at and not revision.failed

    def _latest_ready(self, key: tuple[str, str, str]) -> str | None:
        ready = [r for r in self.revisions[key].values() if self._ready(r)]
        return ready[-1].name if ready else None

    def _app_json(self, key: tuple[str, str, str], state: str = "Succeeded") -> dict[str, Any]:
        app = copy.deepcopy(self.apps[key])
        props = app["properties"]
        props["provisioningState"] = state
        props["latestReadyRevisionName"] = self._latest_ready(key)
        props.setdefault("configuration", {}).setdefault("ingress", {})["fqdn"] = f"{key[2]}.{DOMAIN}"
        props["latestRevisionFqdn"] = f"{props.get('latestRevisionName')}.{DOMAIN}"
        return app

    def _revision_json(self, key: tuple[str, str, str], revision: Revision) -> dict[str, Any]:
        now = time.monotonic()
        if now < revision.ready_at:
            provisioning, running = "Provisioning", "Activating"
        elif revision.failed:
            provisioning, running = "Failed", "Failed"
        else:
            provisioning, running = "Provisioned", "Running" if revision.active else "Stopped"
        props: dict[str, Any] = {
            "createdTime": revision.created,
            "fqdn": f"{revision.name}.{DOMAIN}",
            "template": revision.template,
            "active": revision.active,
            "replicas": 1 if revision.active else 0,
            "trafficWeight": self.serving(key).get(revision.name, 0),
            "provisioningState": provisioning,
            "runningState": running,
        }
        if provisioning == "Failed":
            props["provisioningError"] = "container exited with code 1"
        return {
            "id": f"{self.apps[key]['id']}/revisions/{revision.name}",
            "name": revision.name,
            "type": "Microsoft.App/containerApps/revisions",
            "properties": props,
        }


class AzureFakeServer(ThreadedApp):
    """The fake on its own event loop in a thread (``tests.threadedapp``)."""

    def __init__(self, fake: AzureFake | None = None) -> None:
        self.fake = fake or AzureFake()
        super().__init__(self.fake.app())


@contextlib.contextmanager
def azure_fake_server(fake: AzureFake | None = None) -> Iterator[AzureFakeServer]:
    server = AzureFakeServer(fake)
    server.start()
    try:
        yield server
    finally:
        server.stop()
