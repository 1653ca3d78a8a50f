"""A small, strict fake of the Kubernetes API server, over real HTTP (aiohttp).

Enough for the real kubernetes-asyncio client: apps/v1 Deployments, v1 Services and
gateway.networking.k8s.io/v1 HTTPRoutes in a namespace — GET (list, ``watch=true``
JSON-lines streams with ``resourceVersion``, ``timeoutSeconds`` and a ``metadata.name``
field selector), POST, PUT (optimistic concurrency on ``resourceVersion``), PATCH
(strategic-merge with ``name`` merge keys and ``$patch: replace``, JSON merge, apply
with a required ``fieldManager``), DELETE
(a ``Success`` Status and a ``DELETED`` watch event; 404 when absent).
Objects carry uid, generation (bumped only when the spec changes) and resourceVersion;
errors are real ``Status`` objects (404, 409, 415, 422). HTTPRoutes are a custom
resource: no strategic-merge patch (415, as the real server), JSON patch (RFC 6902) and
JSON merge patch instead; their rules and backendRefs are checked against the Gateway API
schema (unknown fields, a Service backendRef without a port, weights outside
0..1000000 are 422). Services need ports and string selectors.

A simulated controller advances each Deployment's rollout every ``tick`` seconds:
observedGeneration, then updatedReplicas one at a time, then availableReplicas and the
``Progressing``/``Available`` conditions. Pods of an image in ``never_available`` never
become available; after the Deployment's ``progressDeadlineSeconds`` (times
``deadline_scale``) its Progressing condition turns False with reason
``ProgressDeadlineExceeded``, as the real controller does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
KINDS = {
    "deployments": ("apps/v1", "Deployment"),
    "services": ("v1", "Service"),
    "httproutes": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
#: the URL prefix each resource is served under
PREFIXES = {
    "deployments": "/apis/apps/v1",
    "services": "/api/v1",
    "httproutes": "/apis/gateway.networking.k8s.io/v1",
}
PATCH_TYPES = {
    "application/strategic-merge-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
}
#: custom resources have no strategic-merge patch
CUSTOM_PATCH_TYPES = {
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
}
RULE_FIELDS = {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"}
BACKEND_REF_FIELDS = {"group", "kind", "name", "namespace", "port", "weight", "filters"}
MAX_RULES = MAX_BACKEND_REFS = 16
MAX_WEIGHT = 1_000_000


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def response(self) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        return web.json_response(body, status=self.code)


def strategic_merge(orig: Any, patch: Any) -> Any:
    """Strategic-merge: maps merge (null deletes), lists of named maps merge by
    ``name``, ``$patch: replace`` replaces a map or list, other lists are replaced."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace" or not isinstance(orig, dict):
            return {k: strategic_merge(None, v) for k, v in patch.items() if not k.startswith("$")}
        out = dict(orig)
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(out.get(key), value)
        return out
    if isinstance(patch, list):
        named = all(isinstance(x, dict) and ("name" in x or "$patch" in x) for x in patch)
        replace = any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch)
        items = [x for x in patch if not (isinstance(x, dict) and "$patch" in x)]
        if not named or replace or not isinstance(orig, list):
            return [strategic_merge(None, x) for x in items]
        out_list = list(orig)
        for item in items:
            idx = next((i for i, o in enumerate(out_list) if o.get("name") == item["name"]), None)
            if idx is None:
                out_list.append(strategic_merge(None, item))
            else:
                out_list[idx] = strategic_merge(out_list[idx], item)
        return out_list
    return patch


def json_patch(orig: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace and test (what shiplog could send)."""
    doc = copy.deepcopy(orig)
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace", "test"):
            raise ApiError(422, "Invalid", f"unsupported JSON patch operation {op!r}")
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        try:
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key: Any = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
            if op["op"] == "test":
                if node[key] != op["value"]:
                    raise ApiError(422, "Invalid", f"the test of {op['path']} failed")
            elif op["op"] == "remove":
                del node[key]
            elif op["op"] == "add" and isinstance(node, list):
                node.insert(key, op["value"])
            else:
                present = 0 <= key < len(node) if isinstance(node, list) else key in node
                if op["op"] == "replace" and not present:
                    raise KeyError(key)
                node[key] = op["value"]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the JSON patch path {op['path']} does not exist") from exc
    return doc


def merge_patch(orig: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(orig) if isinstance(orig, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class KubeFake:
    def __init__(self, *, tick: float = 0.05, deadline_scale: float = 1.0) -> None:
        self.tick = tick
        self.deadline_scale = deadline_scale
        #: images whose pods never become available
        self.never_available: set[str] = set()
        #: every request as (method, path, content type), for assertions
        self.requests: list[tuple[str, str, str]] = []
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self._rv = 0
        self._events: list[tuple[int, str, str, str, Obj]] = []  # rv, resource, ns, type, obj
        self._changed = asyncio.Condition()
        self._rollouts: dict[tuple[str, str], float] = {}  # (ns, name) -> rollout start
        self._controller: asyncio.Task[None] | None = None
        self._closing = False

    # -- the app ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        for prefix in sorted(set(PREFIXES.values())):
            coll = prefix + "/namespaces/{ns}/{resource}"
            app.router.add_get(coll, self._list)
            app.router.add_post(coll, self._create)
            app.router.add_get(coll + "/{name}", self._get)
            app.router.add_put(coll + "/{name}", self._replace)
            app.router.add_patch(coll + "/{name}", self._patch)
            app.router.add_delete(coll + "/{name}", self._delete)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._close_watches)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self._controller = asyncio.create_task(self._control_loop())

    async def _close_watches(self, _app: web.Application) -> None:
        self._closing = True
        await self._notify()

    async def _stop(self, _app: web.Application) -> None:
        if self._controller:
            self._controller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controller

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.content_type))
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as exc:
            return exc.response()

    # -- helpers ---------------------------------------------------------------------

    def _resource(self, request: web.Request) -> tuple[str, str, str]:
        resource = request.match_info["resource"]
        if resource not in KINDS or not request.path.startswith(PREFIXES[resource] + "/"):
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource {request.path}"
            )
        return resource, request.match_info["ns"], request.match_info.get("name", "")

    async def _body(self, request: web.Request, allowed: set[str]) -> Any:
        if request.content_type not in allowed:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(sorted(allowed)),
            )
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"error decoding body: {exc}") from exc
        if request.content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(
                    400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
        elif not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "body must be an object")
        return body

    def _validate(self, resource: str, obj: Obj, name: str) -> None:
        api_version, kind = KINDS[resource]
        errors = []
        if obj.get("kind", kind) != kind or obj.get("apiVersion", api_version) != api_version:
            raise ApiError(400, "BadRequest", f"expected {api_version} {kind}")
        if obj.get("metadata", {}).get("name") != name:
            errors.append("metadata.name: Invalid value: must match the name in the URL")
        spec = obj.get("spec") or {}
        if resource == "deployments":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector:
                errors.append("spec.selector: Required value")
            elif any(labels.get(k) != v for k, v in selector.items()):
                errors.append(
                    "spec.template.metadata.labels: Invalid value: "
                    "`selector` does not match template `labels`"
                )
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            if not containers:
                errors.append("spec.template.spec.containers: Required value")
            for i, c in enumerate(containers):
                if not c.get("name") or not c.get("image"):
                    errors.append(f"spec.template.spec.containers[{i}]: name and image are required")
                for j, env in enumerate(c.get("env") or []):
                    if not env.get("name"):
                        errors.append(f"spec.template.spec.containers[{i}].env[{j}].name: Required value")
            if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 0:
                errors.append("spec.replicas: Invalid value")
        elif resource == "services":
            errors += self._service_errors(spec)
        else:
            errors += self._route_errors(spec)
        if errors:
            raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: ' + "; ".join(errors))

    @staticmethod
    def _service_errors(spec: Obj) -> list[str]:
        errors = []
        selector = spec.get("selector") or {}
        if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
            errors.append("spec.selector: Invalid value: must be a map of strings")
        ports = spec.get("ports")
        if not isinstance(ports, list) or not ports:
            errors.append("spec.ports: Required value")
        for i, port in enumerate(ports or []):
            number = port.get("port") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errors.append(f"spec.ports[{i}].port: Invalid value: must be between 1 and 65535")
        return errors

    @staticmethod
    def _route_errors(spec: Obj) -> list[str]:
        """The HTTPRoute CRD's structural schema and CEL rules, for rules and backendRefs."""
        errors = []
        rules = spec.get("rules", [])
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            return [f"spec.rules: Invalid value: a list of at most {MAX_RULES}"]
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                errors.append(f"spec.rules[{i}]: Invalid value: must be an object")
                continue
            errors += [f'spec.rules[{i}]: unknown field "{k}"' for k in sorted(set(rule) - RULE_FIELDS)]
            refs = rule.get("backendRefs", [])
            if not isinstance(refs, list) or len(refs) > MAX_BACKEND_REFS:
                errors.append(f"spec.rules[{i}].backendRefs: Invalid value: a list of at most 16")
                continue
            for j, ref in enumerate(refs):
                at = f"spec.rules[{i}].backendRefs[{j}]"
                if not isinstance(ref, dict):
                    errors.append(f"{at}: Invalid value: must be an object")
                    continue
                errors += [f'{at}: unknown field "{k}"' for k in sorted(set(ref) - BACKEND_REF_FIELDS)]
                if not isinstance(ref.get("name"), str) or not ref.get("name"):
                    errors.append(f"{at}.name: Required value")
                is_service = ref.get("kind", "Service") == "Service" and ref.get("group", "") == ""
                port = ref.get("port")
                if port is None and is_service:
                    errors.append(f"{at}: Invalid value: Must have port for Service reference")
                elif port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
                    errors.append(f"{at}.port: Invalid value: must be between 1 and 65535")
                weight = ref.get("weight", 1)
                if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
                    errors.append(f"{at}.weight: Invalid value: must be between 0 and {MAX_WEIGHT}")
        return errors

    def _store(self, resource: str, ns: str, name: str, obj: Obj, *, event: str, manager: str | None) -> Obj:
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        if manager:
            entries = [m for m in meta.get("managedFields") or [] if m.get("manager") != manager]
            entries.append(
                {"manager": manager, "operation": "Update", "apiVersion": KINDS[resource][0], "time": _now()}
            )
            meta["managedFields"] = entries
        self.objects[(resource, ns, name)] = obj
        self._events.append((self._rv, resource, ns, event, copy.deepcopy(obj)))
        return obj

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _find(self, resource: str, ns: str, name: str) -> Obj:
        try:
            return self.objects[(resource, ns, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found') from None

    def _write(self, resource: str, ns: str, name: str, old: Obj, new: Obj, manager: str | None) -> Obj:
        api_version, kind = KINDS[resource]
        new.setdefault("apiVersion", api_version)
        new.setdefault("kind", kind)
        self._validate(resource, new, name)
        meta = new["metadata"]
        for key in ("uid", "creationTimestamp", "namespace"):
            meta[key] = old["metadata"][key]
        new["status"] = old.get("status", {})  # the main resource never writes status
        if "generation" in old["metadata"]:
            spec_changed = new.get("spec") != old.get("spec")
            meta["generation"] = old["metadata"]["generation"] + (1 if spec_changed else 0)
        if new == old:
            return old  # a no-op write changes nothing, not even resourceVersion
        return self._store(resource, ns, name, new, event="MODIFIED", manager=manager)

    # -- handlers --------------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.Response:
        resource, ns, name = self._resource(request)
        return web.json_response(self._find(resource, ns, name))

    async def _create(self, request: web.Request) -> web.Response:
        resource, ns, _ = self._resource(request)
        obj = await self._body(request, {"application/json"})
        name = (obj.get("metadata") or {}).get("name", "")
        if (resource, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        api_version, kind = KINDS[resource]
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        self._validate(resource, obj, name)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), namespace=ns)
        meta.pop("resourceVersion", None)
        obj["status"] = {}
        if resource == "deployments":
            meta["generation"] = 1
            obj["spec"].setdefault("replicas", 1)
            obj["spec"].setdefault("progressDeadlineSeconds", 600)
        elif resource == "httproutes":
            meta["generation"] = 1
        else:
            obj["spec"].setdefault("clusterIP", f"10.96.0.{len(self.objects) + 10}")
            obj["spec"].setdefault("type", "ClusterIP")
        self._store(resource, ns, name, obj, event="ADDED", manager=request.query.get("fieldManager"))
        await self._notify()
        return web.json_response(obj, status=201)

    async def _replace(self, request: web.Request) -> web.Response:
        resource, ns, name = self._resource(request)
        new = await self._body(request, {"application/json"})
        old = self._find(resource, ns, name)
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv is None:
            raise ApiError(
                422, "Invalid", "metadata.resourceVersion: Invalid value: must be specified for an update"
            )
        if rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        stored = self._write(resource, ns, name, copy.deepcopy(old), new, request.query.get("fieldManager"))
        await self._notify()
        return web.json_response(stored)

    async def _patch(self, request: web.Request) -> web.Response:
        resource, ns, name = self._resource(request)
        patch = await self._body(request, CUSTOM_PATCH_TYPES if resource == "httproutes" else PATCH_TYPES)
        manager = request.query.get("fieldManager")
        if request.content_type == "application/apply-patch+yaml" and not manager:
            raise ApiError(422, "Invalid", "PATCH, fieldManager: Required value: is required for apply patch")
        old = self._find(resource, ns, name)
        rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        if rv is not None and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified',
            )
        if request.content_type == "application/json-patch+json":
            new = json_patch(old, patch)
        elif request.content_type == "application/merge-patch+json":
            new = merge_patch(copy.deepcopy(old), patch)
        else:
            new = strategic_merge(copy.deepcopy(old), patch)
        new.pop("status", None)
        stored = self._write(resource, ns, name, copy.deepcopy(old), new, manager)
        await self._notify()
        return web.json_response(stored)

    async def _delete(self, request: web.Request) -> web.Response:
        resource, ns, name = self._resource(request)
        obj = self._find(resource, ns, name)
        del self.objects[(resource, ns, name)]
        self._rollouts.pop((ns, name), None)
        self._rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((self._rv, resource, ns, "DELETED", gone))
        await self._notify()
        # without finalizers the object goes at once and the server answers a Status
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": KINDS[resource][0].rpartition("/")[0],
                "kind": resource,
                "uid": obj["metadata"]["uid"],
            },
        }
        return web.json_response(body)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        resource, ns, _ = self._resource(request)
        selector = request.query.get("fieldSelector", "")
        only = None
        if selector:
            key, _, value = selector.partition("=")
            if key != "metadata.name":
                raise ApiError(400, "BadRequest", f'"{key}" is not a known field selector')
            only = value
        if request.query.get("watch") in ("1", "t", "T", "true", "TRUE", "True"):  # Go ParseBool
            return await self._watch(request, resource, ns, only)
        api_version, kind = KINDS[resource]
        items = [
            o
            for (r, n, name), o in sorted(self.objects.items())
            if r == resource and n == ns and only in (None, name)
        ]
        return web.json_response(
            {
                "apiVersion": api_version,
                "kind": kind + "List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, resource: str, ns: str, only: str | None
    ) -> web.StreamResponse:
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        since = request.query.get("resourceVersion")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        def matches(r: str, n: str, obj: Obj) -> bool:
            return r == resource and n == ns and only in (None, obj["metadata"]["name"])

        async def send(kind: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if since in (None, "", "0"):
            last = self._rv
            for (r, n, _), obj in sorted(self.objects.items()):
                if matches(r, n, obj):
                    await send("ADDED", obj)
        else:
            last = int(since)
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0 and not self._closing:
                for rv, r, n, kind, obj in [e for e in self._events if e[0] > last]:
                    last = rv
                    if matches(r, n, obj):
                        await send(kind, obj)
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped watching (it saw what it waited for)
        return response

    # -- the controller --------------------------------------------------------------

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            changed = False
            for (resource, ns, name), obj in list(self.objects.items()):
                if resource == "deployments":
                    status = self._advance(ns, name, obj)
                    if status != obj.get("status"):
                        new = copy.deepcopy(obj)
                        new["status"] = status
                        self._store(resource, ns, name, new, event="MODIFIED", manager=None)
                        changed = True
            if changed:
                await self._notify()

    def _advance(self, ns: str, name: str, obj: Obj) -> Obj:
        spec, status = obj["spec"], copy.deepcopy(obj.get("status") or {})
        generation = obj["metadata"]["generation"]
        replicas = spec.get("replicas", 1)
        images = {c["image"] for c in spec["template"]["spec"]["containers"]}
        if status.get("observedGeneration") != generation:
            status["observedGeneration"] = generation
            status["updatedReplicas"] = 0
            self._rollouts[(ns, name)] = time.monotonic()
            status["conditions"] = [self._condition("Progressing", "True", "ReplicaSetUpdated")]
            return status
        updated = status.get("updatedReplicas", 0)
        stuck = bool(images & self.never_available)
        if updated < replicas:
            updated += 1
        elif updated > replicas:
            updated = replicas
        status["updatedReplicas"] = updated
        status["replicas"] = replicas
        available = 0 if stuck else updated
        status["availableReplicas"] = available
        status["readyReplicas"] = available
        status["unavailableReplicas"] = max(replicas - available, 0)
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        started = self._rollouts.get((ns, name), time.monotonic())
        deadline = spec.get("progressDeadlineSeconds", 600) * self.deadline_scale
        progressing = conditions.get("Progressing") or self._condition(
            "Progressing", "True", "ReplicaSetUpdated"
        )
        if available == replicas == updated:
            if progressing.get("reason") != "NewReplicaSetAvailable":
                progressing = self._condition("Progressing", "True", "NewReplicaSetAvailable")
        elif (
            time.monotonic() - started > deadline and progressing.get("reason") != "ProgressDeadlineExceeded"
        ):
            progressing = self._condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet of "{name}" has timed out progressing.',
            )
        conditions["Progressing"] = progressing
        avail = "True" if available >= replicas else "False"
        if (conditions.get("Available") or {}).get("status") != avail:
            conditions["Available"] = self._condition(
                "Available",
                avail,
                "MinimumReplicasAvailable" if avail == "True" else "MinimumReplicasUnavailable",
            )
        status["conditions"] = [conditions[k] for k in ("Available", "Progressing") if k in conditions]
        return status

    @staticmethod
    def _condition(type_: str, status: str, reason: str, message: str = "") -> Obj:
        now = _now()
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message or reason,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
