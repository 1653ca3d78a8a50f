"""A multi-service release as people look at it: each service in each environment,
and how the release concluded there — read from the log (the release stream and the
streams of the deployments it released)."""

from __future__ import annotations

from typing import Any

from consumers.deployment import fold
from consumers.planning.releases import ReleaseState, evolve, release_stream
from events.deployment import deployment_id, deployment_stream


async def release_status(log: Any, release_id: str) -> dict[str, Any] | None:
    """``None`` when the log has no multi-service release of that id."""
    state = ReleaseState()
    for record in await log.read_stream(release_stream(release_id)):
        state = evolve(state, record.event)
    composed = state.composed
    if composed is None:
        return None
    cells: dict[str, dict[str, Any]] = {}
    for member in composed.services:
        row: dict[str, Any] = {}
        for env in composed.service_environments[member.service]:
            key = (member.service, env)
            if key in state.cancelled:
                row[env] = {"status": "cancelled"}
            elif key in state.released:
                dep = deployment_id(member.service, env, release_id)
                folded = fold(r.event for r in await log.read_stream(deployment_stream(dep)))
                row[env] = {"status": folded.status.value, "deployment_id": dep}
            else:
                row[env] = {"status": "waiting"}
        cells[member.service] = row
    return {
        "release_id": release_id,
        "environments": composed.environments,
        "services": [
            {"service": m.service, "version": m.version, "depends_on": m.depends_on}
            for m in composed.services
        ],
        "waves": composed.waves,
        "cells": cells,
        "concluded": {env: c.model_dump(mode="json") for env, c in state.concluded.items()},
    }
