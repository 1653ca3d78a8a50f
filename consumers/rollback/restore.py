"""Restoring a snapshot and checking it: the rollback consumer's I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from adapters.targets import Snapshot
from consumers.deployment import DeploymentState
from consumers.rollback.core import Restored
from events.deployment import DeploymentPlanned
from events.errors import ShiplogError
from events.rollback import RollbackStarted

HEALTH_TIMEOUT_S = 10.0


async def restore(
    ports: Any, plan: DeploymentPlanned, state: DeploymentState, started: RollbackStarted
) -> Restored:
    target = ports.targets(plan.target.type, plan.target.settings)
    snapshot = Snapshot.model_validate(
        state.snapshot or {"service": plan.service, "environment": plan.environment}
    )
    try:
        # the plan's settings: a restarted process may need them (dbmigrate's database)
        result = await target.restore(snapshot, step_id=started.step_id, settings=plan.target.settings)
    except ShiplogError as exc:
        if exc.retryable:
            raise
        return Restored(ok=False, healthy=False, detail={}, error=f"{type(exc).__name__}: {exc}")
    if not result.ok:
        return Restored(ok=False, healthy=False, detail=result.detail, error=result.error)
    path = str(
        (plan.analysis.get("health") or {}).get("path", plan.target.settings.get("health_path", "/healthz"))
    )
    ok, detail = await healthy(
        target, plan.service, plan.environment, snapshot.version, path, plan.target.settings
    )
    return Restored(ok=True, healthy=ok, detail={**result.detail, "health": detail})


async def healthy(
    target: Any,
    service: str,
    environment: str,
    version: str | None,
    path: str,
    settings: Mapping[str, Any] | None,
) -> tuple[bool, dict[str, Any]]:
    """Every instance of ``version`` answers its health path (None: nothing runs);
    ``settings`` are the release's target settings, placing the service. A target
    without instances (serverless) has nothing to probe and keeps its versions healthy
    itself: ``version`` is healthy when it serves (a track of it with weight)."""
    status = await target.status(service, environment, settings)
    if version is None:
        return (not status.tracks), {"tracks": 0}
    if not target.capabilities.instances:
        weight = sum(t.weight for t in status.tracks if t.version == version)
        if weight > 0:
            return True, {"serving": version, "weight": weight, "probed": False}
        return False, {"error": f"{version} does not serve after restore", "probed": False}
    urls = [u for t in status.tracks if t.version == version for u in t.urls]
    if not urls:
        return False, {"error": f"no instance of {version} found after restore"}
    async with httpx.AsyncClient(timeout=2.0) as client:
        deadline = asyncio.get_running_loop().time() + HEALTH_TIMEOUT_S
        while True:
            codes = []
            for url in urls:
                try:
                    codes.append((await client.get(url.rstrip("/") + path)).status_code)
                except httpx.HTTPError:
                    codes.append(0)
            if all(c == 200 for c in codes):
                return True, {"urls": urls, "codes": codes}
            if asyncio.get_running_loop().time() > deadline:
                return False, {"urls": urls, "codes": codes}
            await asyncio.sleep(0.2)
