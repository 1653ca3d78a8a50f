"""The API server, through kubernetes-asyncio: connecting, calling with errors
translated into shiplog's (``AdapterUnavailable`` retryable, ``AdapterRejected`` not),
reading with 404 as ``None``, replacing again on conflict, and following a rollout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from events.errors import AdapterRejected, AdapterUnavailable, InvalidInput

T = TypeVar("T")
#: read-change-replace attempts before a conflict is reported (retryable)
CONFLICT_ATTEMPTS = 5


class RolloutFailed(Exception):
    """The rollout did not complete; the message starts with the reason."""


@asynccontextmanager
async def connect(kubeconfig: Path | None, context: str | None) -> AsyncIterator[client.ApiClient]:
    """A client from the kubeconfig file, else the in-cluster service account."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(kubeconfig), context=context, client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise InvalidInput(f"kubernetes client configuration: {exc}") from exc
    async with client.ApiClient(configuration=configuration) as api:
        yield api


async def call(request: Awaitable[Any]) -> Any:
    try:
        return await request
    except ApiException as exc:
        raise translate(exc) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise AdapterUnavailable(f"kubernetes API: {exc}") from exc


def status_of(exc: Exception) -> int | None:
    """The HTTP status of the API error behind a translated error."""
    cause = exc.__cause__
    return cause.status if isinstance(cause, ApiException) else None


async def read(request: Awaitable[Any]) -> Any:
    """The object, or ``None`` when the API server says 404."""
    try:
        return await call(request)
    except AdapterRejected as exc:
        if status_of(exc) == 404:
            return None
        raise


async def delete(request: Awaitable[Any]) -> bool:
    """Delete; False when there was nothing to delete."""
    return await read(request) is not None


async def on_conflict_again(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a read-change-replace again while the API server answers 409 Conflict
    (someone wrote in between), up to ``CONFLICT_ATTEMPTS`` times."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except AdapterUnavailable as exc:
            if status_of(exc) != 409:
                raise
    return await attempt()


def translate(exc: ApiException) -> Exception:
    body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
    message = f"kubernetes API {exc.status} {exc.reason}: {body}"
    if exc.status in (409, 429) or (exc.status or 0) >= 500:
        return AdapterUnavailable(message)
    return AdapterRejected(message)


async def follow(apps: Any, namespace: str, name: str, dep: Any, *, within: float, watch_timeout: int) -> int:
    """Watch the Deployment until its rollout of ``dep``'s generation completes: the
    controller has seen it and every replica is updated and available. Raises
    ``RolloutFailed`` on ``ProgressDeadlineExceeded``, deletion, or after ``within``
    seconds."""
    generation = dep.metadata.generation
    deadline = time.monotonic() + within
    resource_version = dep.metadata.resource_version
    if done(dep, generation):
        return int(generation)
    while time.monotonic() < deadline:
        w = watch.Watch()
        try:
            async for event in w.stream(
                apps.list_namespaced_deployment,
                namespace,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=max(1, min(watch_timeout, int(deadline - time.monotonic()) + 1)),
            ):
                obj = event["object"]
                if event["type"] == "ERROR":
                    resource_version = None  # expired: start again from the current state
                    break
                if event["type"] == "DELETED":
                    raise RolloutFailed(f"Deleted: {namespace}/{name} was deleted")
                resource_version = obj.metadata.resource_version
                if done(obj, generation):
                    return int(generation)
        except ApiException as exc:
            raise translate(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AdapterUnavailable(f"kubernetes API: {exc}") from exc
        finally:
            await w.close()
    raise RolloutFailed(f"RolloutTimeout: {namespace}/{name} not rolled out in time")


def done(dep: Any, generation: int) -> bool:
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
    return bool((status.updated_replicas or 0) == replicas and (status.available_replicas or 0) == replicas)
