"""Lanes: at most one active deployment per (service, environment), and never an
older version over a newer one.

A deployment claims its lane before its first change. If another is active it
queues; when the active one ends, every queued deployment is woken to claim again,
and the ones older than the newest (queued, active or serving) are told they are
outdated — so of two builds in quick succession the newer ends up serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from packaging.version import InvalidVersion, Version

from adapters.eventlog.postgres import PostgresEventLog, unavailable_as_error


def version_key(version: str) -> tuple[int, Version | str]:
    """Order versions by PEP 440 / semver-ish rules where they parse, else as text."""
    try:
        return (1, Version(version.removeprefix("v")))
    except InvalidVersion:
        return (0, version)


def older(a: str, b: str) -> bool:
    ka, kb = version_key(a), version_key(b)
    if ka[0] != kb[0]:
        return False  # incomparable kinds: never call either older
    return ka[1] < kb[1]  # type: ignore[operator]


_UNQUEUE = "DELETE FROM lane_queue WHERE service = $1 AND environment = $2 AND deployment_id = $3"


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: bool
    #: the deployment this one waits behind, when queued
    behind: str | None = None
    #: why this deployment must not run at all (a newer version is there)
    outdated: str | None = None


class PostgresLanes:
    TYPE = "postgres"

    def __init__(self, log: PostgresEventLog):
        self._pool: asyncpg.Pool = log.pool

    async def claim(self, service: str, environment: str, deployment_id: str, version: str) -> Claim:
        with unavailable_as_error("claim lane"):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO lanes (service, environment) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    service,
                    environment,
                )
                lane = await conn.fetchrow(
                    "SELECT active_deployment, active_version, serving_version FROM lanes"
                    " WHERE service = $1 AND environment = $2 FOR UPDATE",
                    service,
                    environment,
                )
                if lane["active_deployment"] == deployment_id:
                    return Claim(True)
                queued = await conn.fetch(
                    "SELECT deployment_id, version FROM lane_queue WHERE service = $1"
                    " AND environment = $2 AND deployment_id <> $3",
                    service,
                    environment,
                    deployment_id,
                )
                newer = [
                    v
                    for v in (
                        lane["serving_version"],
                        lane["active_version"],
                        *(q["version"] for q in queued),
                    )
                    if v is not None and older(version, v)
                ]
                if newer:
                    await conn.execute(
                        _UNQUEUE,
                        service,
                        environment,
                        deployment_id,
                    )
                    return Claim(
                        False,
                        outdated=f"{version} is older than {max(newer, key=version_key)}"
                        f" in {service}/{environment}",
                    )
                if lane["active_deployment"] is None:
                    await conn.execute(
                        "UPDATE lanes SET active_deployment = $3, active_version = $4, updated_at = now()"
                        " WHERE service = $1 AND environment = $2",
                        service,
                        environment,
                        deployment_id,
                        version,
                    )
                    await conn.execute(
                        _UNQUEUE,
                        service,
                        environment,
                        deployment_id,
                    )
                    return Claim(True)
                await conn.execute(
                    "INSERT INTO lane_queue (service, environment, deployment_id, version)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    service,
                    environment,
                    deployment_id,
                    version,
                )
                return Claim(False, behind=lane["active_deployment"])

    async def release(
        self, service: str, environment: str, deployment_id: str, serving_version: str | None
    ) -> list[str]:
        """End ``deployment_id``'s hold on its lane (if it holds it) and record what
        serves now. Returns the queued deployments to wake, newest first."""
        with unavailable_as_error("release lane"):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE lanes SET active_deployment = NULL, active_version = NULL,"
                    " serving_version = coalesce($4, serving_version), updated_at = now()"
                    " WHERE service = $1 AND environment = $2 AND active_deployment = $3",
                    service,
                    environment,
                    deployment_id,
                    serving_version,
                )
                await conn.execute(
                    _UNQUEUE,
                    service,
                    environment,
                    deployment_id,
                )
                queued = await conn.fetch(
                    "SELECT deployment_id, version FROM lane_queue WHERE service = $1 AND environment = $2",
                    service,
                    environment,
                )
        ordered = sorted(queued, key=lambda q: version_key(q["version"]), reverse=True)
        return [q["deployment_id"] for q in ordered]

    async def serving(self, service: str, environment: str) -> str | None:
        with unavailable_as_error("read lane"):
            return await self._pool.fetchval(
                "SELECT serving_version FROM lanes WHERE service = $1 AND environment = $2",
                service,
                environment,
            )
