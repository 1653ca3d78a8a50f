"""Durable timers in the log's database: scheduled, cancelled, claimed when due."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from adapters.eventlog.postgres import PostgresEventLog, unavailable_as_error


@dataclass(frozen=True, slots=True)
class DueTimer:
    timer_id: str
    stream_id: str
    due_at: datetime
    purpose: str
    payload: dict[str, Any]


class PostgresTimerStore:
    TYPE = "postgres"

    def __init__(self, log: PostgresEventLog):
        self._pool: asyncpg.Pool = log.pool

    async def schedule(
        self, timer_id: str, stream_id: str, due_at: datetime, purpose: str, payload: dict[str, Any]
    ) -> None:
        """Store a timer; the same id again changes nothing (first schedule wins)."""
        with unavailable_as_error("schedule timer"):
            await self._pool.execute(
                "INSERT INTO timers (timer_id, stream_id, due_at, purpose, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (timer_id) DO NOTHING",
                timer_id,
                stream_id,
                due_at,
                purpose,
                json.dumps(payload),
            )

    async def cancel(self, timer_id: str) -> None:
        with unavailable_as_error("cancel timer"):
            await self._pool.execute(
                "UPDATE timers SET cancelled_at = now() WHERE timer_id = $1 AND fired_at IS NULL",
                timer_id,
            )

    async def due(self, now: datetime, limit: int = 500) -> list[DueTimer]:
        """Pending timers due at ``now``, oldest first."""
        with unavailable_as_error("read timers"):
            rows = await self._pool.fetch(
                "SELECT timer_id, stream_id, due_at, purpose, payload FROM timers"
                " WHERE fired_at IS NULL AND cancelled_at IS NULL AND due_at <= $1"
                " ORDER BY due_at LIMIT $2",
                now,
                limit,
            )
        return [
            DueTimer(r["timer_id"], r["stream_id"], r["due_at"], r["purpose"], json.loads(r["payload"]))
            for r in rows
        ]

    async def next_due(self) -> datetime | None:
        with unavailable_as_error("read timers"):
            return await self._pool.fetchval(
                "SELECT min(due_at) FROM timers WHERE fired_at IS NULL AND cancelled_at IS NULL"
            )

    async def mark_fired(self, timer_id: str, fired_at: datetime) -> None:
        with unavailable_as_error("mark timer fired"):
            await self._pool.execute(
                "UPDATE timers SET fired_at = $2 WHERE timer_id = $1 AND fired_at IS NULL",
                timer_id,
                fired_at,
            )
