"""The event log on PostgreSQL, via asyncpg.

Ordering guarantee for tailing readers
--------------------------------------
Every append that writes events first locks the single ``log_head`` row
(``SELECT ... FOR UPDATE``), takes the next global positions and the previous
hash from it, and updates it in the same transaction. Appends therefore commit
strictly one after another, in position order: an append with later positions
cannot commit before one with earlier positions, because it cannot even obtain
its positions until the earlier one has committed (PostgreSQL makes a
transaction visible before it releases its row locks). A reader that has seen
position N and asks for ``position > N`` can never later find a new row below
what it saw — there are no gaps that fill in afterwards. The same lock is what
makes the hash chain possible: each row's hash needs the previous row's hash.

Positions come from the head row, not from a sequence, so a rolled-back append
leaves no hole and the positions stay dense — which lets ``verify`` treat any
hole as a deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Histogram

from adapters.eventlog.chain import GENESIS, chain_hash
from adapters.eventlog.records import (
    AppendResult,
    Handled,
    RawRecord,
    RecordedEvent,
    VerifyReport,
)
from adapters.eventlog.schema import migrate
from events.envelope import CloudEvent
from events.errors import AdapterUnavailable, ConcurrencyConflict, InvalidInput
from events.registry import REGISTRY, EventRegistry
from events.topics import topic_for

#: how long an append takes, lock wait and commit included (shiplog's own /metrics)
APPEND_SECONDS = Histogram(
    "shiplog_event_append_seconds",
    "Time to append events to the log (one transaction), by outcome",
    ["outcome"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = "shiplog"
#: How long a tailing reader waits for a NOTIFY before looking anyway. The NOTIFY
#: is the wake-up; this only bounds the damage of a lost notification.
TAIL_SAFETY_POLL_S = 5.0

#: asyncpg failures that mean "the database is not there right now".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InterfaceError,  # connection closed under us
    asyncpg.exceptions.InternalClientError,
)

_COLUMNS = (
    "position, stream_id, stream_version, event_id, event_type, topic, partition_key,"
    " correlation_id, publish, recorded_at, body, hash"
)


@contextlib.contextmanager
def unavailable_as_error(what: str):
    """Translate connection trouble into the retryable ``AdapterUnavailable``."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise AdapterUnavailable(f"database unavailable during {what}: {exc}") from exc


@contextlib.asynccontextmanager
async def _head_locked(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction holding the head row's lock: BEGIN and the lock in one round
    trip (the simple query protocol takes both statements at once)."""
    await conn.execute("BEGIN; SELECT 1 FROM log_head FOR UPDATE")
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(*UNAVAILABLE):
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


def _raw(row: asyncpg.Record) -> RawRecord:
    return RawRecord(*row)


class PostgresEventLog:
    """Append-only event streams in one PostgreSQL schema, with a global hash chain."""

    TYPE = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        registry: EventRegistry = REGISTRY,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._pool = pool
        self._dsn = dsn
        self.schema = schema
        self.channel = f"{schema}_appended"
        self._registry = registry
        self._clock = clock

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        registry: EventRegistry = REGISTRY,
        min_size: int = 1,
        max_size: int = 10,
        migrate_schema: bool = True,
    ) -> PostgresEventLog:
        if not schema.replace("_", "").isalnum():
            raise InvalidInput(f"log schema name {schema!r} must be alphanumeric")
        with unavailable_as_error("connect"):
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"search_path": schema, "application_name": "shiplog"},
                # Connections carry no session state (locks are transaction-scoped,
                # LISTEN uses its own connection), so skip the reset round trip.
                reset=_no_reset,
            )
        assert pool is not None
        self = cls(pool, dsn, schema=schema, registry=registry)
        if migrate_schema:
            await self.migrate()
        return self

    async def migrate(self) -> list[int]:
        with unavailable_as_error("migrate"):
            async with self._pool.acquire() as conn:
                return await migrate(conn, self.schema)

    async def close(self) -> None:
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def dsn(self) -> str:
        return self._dsn

    # -- writing ------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[CloudEvent],
        expected_version: int | None,
        *,
        handled: Handled | None = None,
        publish: bool = True,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` if it is at ``expected_version``.

        ``expected_version`` is the version the caller read (0: the stream must not
        exist; None: no check). A stale one raises ``ConcurrencyConflict`` and
        writes nothing. Re-appending events whose ids are all already in this
        stream is acknowledged (``duplicate=True``) and writes nothing; some but not
        all already present is a conflict. ``handled`` is written in the same
        transaction; if that consumer already handled that event, nothing is
        written and the result is a duplicate. ``publish=False`` records events
        that came from outside, which the relay must not publish again.
        """
        if not events and handled is None:
            return AppendResult(stream_version=await self.stream_version(stream_id), position=0)
        ids = [e.id for e in events]
        if len(set(ids)) != len(ids):
            raise InvalidInput("an append may not hold the same event id twice")
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._append(stream_id, events, expected_version, handled, publish, ids)
            outcome = "duplicate" if result.duplicate else "appended"
            return result
        except ConcurrencyConflict:
            outcome = "conflict"
            raise
        finally:
            APPEND_SECONDS.labels(outcome).observe(time.perf_counter() - started)

    async def _append(
        self,
        stream_id: str,
        events: Sequence[CloudEvent],
        expected_version: int | None,
        handled: Handled | None,
        publish: bool,
        ids: list[str],
    ) -> AppendResult:
        # Serialise before taking the head lock: the lock serialises every writer.
        prepared = [(e, e.canonical_json(), topic_for(e.type).name) for e in events]
        with unavailable_as_error("append"):
            try:
                async with self._pool.acquire() as conn:
                    if not events:
                        async with conn.transaction():
                            return await self._record_handled_only(conn, stream_id, handled)  # type: ignore[arg-type]
                    async with _head_locked(conn):
                        return await self._append_locked(
                            conn, stream_id, prepared, expected_version, handled, publish
                        )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "events_event_id_key":
                    # Event ids are checked by their unique index rather than by a
                    # query on every append; nothing was written, so now look closer.
                    async with self._pool.acquire() as conn:
                        return await self._existing_ids(conn, stream_id, ids)
                # A handled-only append takes no head lock, so it can record the same
                # (consumer, event_id) between our check and our insert. Nothing was
                # written; a retry finds the record and returns a duplicate.
                raise ConcurrencyConflict(
                    f"a concurrent append to {stream_id} recorded the same thing first"
                ) from exc

    async def _existing_ids(
        self, conn: asyncpg.Connection, stream_id: str, ids: list[str], expected: int | None = None
    ) -> AppendResult:
        """Why an append cannot go ahead: a retry of one already done (all its ids are
        in this stream: acknowledged), a partial overlap, or a stale expected version."""
        current, existing = await conn.fetchrow(
            """
            SELECT (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1),
                   (SELECT coalesce(array_agg(e.stream_id), '{}')
                      FROM unnest($2::text[]) AS u(id) JOIN events e ON e.event_id = u.id)
            """,
            stream_id,
            ids,
        )
        if existing:
            if len(existing) == len(ids) and all(s == stream_id for s in existing):
                return AppendResult(stream_version=current, position=0, duplicate=True)
            raise ConcurrencyConflict(
                f"{len(existing)} of {len(ids)} event ids are already in the log"
                f" (stream {stream_id}): a partial overlap is a conflict"
            )
        raise ConcurrencyConflict(f"stream {stream_id} is at version {current}, expected {expected}")

    async def _record_handled_only(
        self, conn: asyncpg.Connection, stream_id: str, handled: Handled
    ) -> AppendResult:
        inserted = await conn.fetchval(
            "INSERT INTO handled (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
            handled.consumer,
            handled.event_id,
        )
        version = await conn.fetchval(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return AppendResult(stream_version=version, position=0, duplicate=not inserted)

    async def _append_locked(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        prepared: Sequence[tuple[CloudEvent, str, str]],
        expected_version: int | None,
        handled: Handled | None,
        publish: bool,
    ) -> AppendResult:
        # A new statement after the lock, so a new snapshot: it sees everything
        # committed before we got the lock (READ COMMITTED).
        head_position, head_hash, current, already_handled = await conn.fetchrow(
            """
            SELECT h.position, h.hash,
                   (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1),
                   EXISTS (SELECT 1 FROM handled WHERE consumer = $2 AND event_id = $3)
              FROM log_head h
            """,
            stream_id,
            handled.consumer if handled else None,
            handled.event_id if handled else None,
        )
        if already_handled:
            return AppendResult(stream_version=current, position=0, duplicate=True)
        if expected_version is not None and current != expected_version:
            return await self._existing_ids(conn, stream_id, [e.id for e, _, _ in prepared], expected_version)

        recorded_at = self._clock()
        columns: list[list[Any]] = [[] for _ in range(8)]
        previous = head_hash
        position = head_position
        for i, (event, body, topic) in enumerate(prepared, start=1):
            position = head_position + i
            version = current + i
            previous = chain_hash(
                previous,
                position,
                stream_id,
                version,
                event.id,
                event.type,
                topic,
                event.subject,
                event.correlationid,
                recorded_at,
                publish,
                body,
            )
            row = (version, event.id, event.type, topic, event.subject, event.correlationid, body, previous)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        # Positions are dense from the head, so the first one and the row number suffice.
        await conn.execute(
            """
            WITH ins AS (
                INSERT INTO events (position, stream_id, stream_version, event_id, event_type,
                                    topic, partition_key, correlation_id, recorded_at, body,
                                    hash, publish)
                SELECT $2 + n, $1, v, i, t, tp, k, c, $3, b, h, $4
                  FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
                              $10::text[], $11::text[], $12::bytea[])
                       WITH ORDINALITY AS u(v, i, t, tp, k, c, b, h, n)
            ), head AS (
                UPDATE log_head SET position = $13, hash = $14
            ), hnd AS (
                INSERT INTO handled (consumer, event_id)
                SELECT $15, $16 WHERE $15::text IS NOT NULL
            )
            SELECT pg_notify($17, $13::text)
            """,
            stream_id,
            head_position,
            recorded_at,
            publish,
            *columns,
            position,
            previous,
            handled.consumer if handled else None,
            handled.event_id if handled else None,
            self.channel,
        )
        return AppendResult(stream_version=current + len(prepared), position=position)

    # -- reading ------------------------------------------------------------------

    async def stream_version(self, stream_id: str) -> int:
        with unavailable_as_error("read"):
            return await self._pool.fetchval(
                "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
                stream_id,
            )

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """One stream in version order, every event upcast and validated; only the
        versions after ``after_version`` (a reader that folded those already)."""
        with unavailable_as_error("read"):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2"
                " ORDER BY stream_version",
                stream_id,
                after_version,
            )
        return [self.decode(_raw(r)) for r in rows]

    async def read_all(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Sequence[str] | None = None,
        publish_only: bool = False,
    ) -> list[RawRecord]:
        """Rows with ``position > after`` in global order (see the module docstring
        for why a reader that follows ``after`` never skips a row)."""
        conditions = ["position > $1"]
        args: list[Any] = [after, limit]
        if types:
            args.append(list(types))
            conditions.append(f"event_type = ANY(${len(args)}::text[])")
        if publish_only:
            conditions.append("publish")
        with unavailable_as_error("read"):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(conditions)} ORDER BY position LIMIT $2",
                *args,
            )
        return [_raw(r) for r in rows]

    async def head(self) -> tuple[int, bytes]:
        with unavailable_as_error("read"):
            row = await self._pool.fetchrow("SELECT position, hash FROM log_head")
        return row["position"], row["hash"]

    async def is_handled(self, consumer: str, event_id: str) -> bool:
        with unavailable_as_error("read"):
            return bool(
                await self._pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM handled WHERE consumer = $1 AND event_id = $2)",
                    consumer,
                    event_id,
                )
            )

    def decode(self, raw: RawRecord) -> RecordedEvent:
        """A stored row -> its event at the current version (upcast on read)."""
        return RecordedEvent(
            position=raw.position,
            stream_id=raw.stream_id,
            stream_version=raw.stream_version,
            recorded_at=raw.recorded_at,
            topic=raw.topic,
            key=raw.key,
            publish=raw.publish,
            event=self._registry.decode(raw.body),
        )

    def upcast_body(self, body: str) -> dict[str, Any]:
        """A stored body -> the envelope dict at the current version, without the
        cost of full validation (for replay)."""
        return self._registry.upcast(json.loads(body))

    @staticmethod
    def _filters(
        after: int,
        stream_id: str | None,
        types: Sequence[str] | None,
        since: datetime | None,
        stream_prefix: str | None = None,
    ) -> tuple[str, list[Any]]:
        conditions = ["position > $1"]
        args: list[Any] = [after]
        if stream_id is not None:
            args.append(stream_id)
            conditions.append(f"stream_id = ${len(args)}")
        if stream_prefix is not None:
            escaped = stream_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args.append(escaped + "%")
            conditions.append(f"stream_id LIKE ${len(args)} ESCAPE '\\'")
        if types:
            args.append(list(types))
            conditions.append(f"event_type = ANY(${len(args)}::text[])")
        if since is not None:
            args.append(since)
            conditions.append(f"recorded_at >= ${len(args)}")
        return " AND ".join(conditions), args

    async def scan(
        self,
        *,
        after: int = 0,
        stream_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        stream_prefix: str | None = None,
        prefetch: int = 5000,
    ) -> AsyncIterator[RawRecord]:
        """Every matching row in global order through a server-side cursor: constant
        memory, one round trip per ``prefetch`` rows."""
        where, args = self._filters(after, stream_id, types, since, stream_prefix)
        query = f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY position"
        with unavailable_as_error("scan"):
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                async for row in conn.cursor(query, *args, prefetch=prefetch):
                    yield _raw(row)

    async def count(
        self,
        *,
        after: int = 0,
        stream_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> int:
        """How many rows ``scan`` with the same filters yields (for progress bars)."""
        where, args = self._filters(after, stream_id, types, since)
        with unavailable_as_error("count"):
            return await self._pool.fetchval(f"SELECT count(*) FROM events WHERE {where}", *args)

    async def tail(self, after: int = 0, batch: int = 1000) -> AsyncIterator[RawRecord]:
        """Follow the log from ``after`` forever: each append's NOTIFY wakes it."""
        wake = asyncio.Event()
        listener = await asyncpg.connect(self._dsn)
        await listener.add_listener(self.channel, lambda *_: wake.set())
        try:
            while True:
                wake.clear()
                rows = await self.read_all(after, batch)
                for row in rows:
                    yield row
                    after = row.position
                if len(rows) < batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), TAIL_SAFETY_POLL_S)
        finally:
            with contextlib.suppress(Exception):
                await listener.close()

    # -- audit ----------------------------------------------------------------------

    async def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Walk the whole log: positions dense from 1, every hash recomputed from its
        predecessor, every stream's versions dense from 1, and the head row matching
        the last row. Names the first global position that is not as written.

        The rows and the head are read in one snapshot, so appends that commit while
        the walk runs are neither seen nor mistaken for tampering."""
        query = f"SELECT {_COLUMNS} FROM events ORDER BY position"
        with unavailable_as_error("verify"):
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                head_position, head_hash = await conn.fetchrow("SELECT position, hash FROM log_head")
                rows = conn.cursor(query, prefetch=10_000)
                return await self._walk(rows, head_position, head_hash, progress)

    @staticmethod
    async def _walk(
        rows: AsyncIterator[asyncpg.Record],
        head_position: int,
        head_hash: bytes,
        progress: Callable[[int], None] | None,
    ) -> VerifyReport:
        previous = GENESIS
        expected_position = 1
        stream_versions: dict[str, int] = {}
        checked = 0
        async for record in rows:
            row = _raw(record)
            if row.position != expected_position:
                return VerifyReport(
                    checked,
                    expected_position,
                    f"position {expected_position} is missing (next row is {row.position})",
                )
            digest = chain_hash(
                previous,
                row.position,
                row.stream_id,
                row.stream_version,
                row.event_id,
                row.event_type,
                row.topic,
                row.key,
                row.correlation_id,
                row.recorded_at,
                row.publish,
                row.body,
            )
            if digest != row.hash:
                return VerifyReport(
                    checked, row.position, "hash does not match the row's content and predecessor"
                )
            if row.stream_version != stream_versions.get(row.stream_id, 0) + 1:
                return VerifyReport(
                    checked,
                    row.position,
                    f"stream {row.stream_id} jumps to version {row.stream_version}",
                )
            stream_versions[row.stream_id] = row.stream_version
            previous = digest
            expected_position += 1
            checked += 1
            if progress is not None and checked % 10_000 == 0:
                progress(checked)
        if progress is not None:
            progress(checked)
        if head_position != checked or head_hash != previous:
            return VerifyReport(
                checked,
                checked + 1 if head_position > checked else head_position,
                f"the log ends at position {checked} but its head says {head_position}"
                if head_position != checked
                else "the head hash does not match the last row",
            )
        return VerifyReport(checked)

    # -- consumer bookkeeping -----------------------------------------------------------

    async def unhandled(
        self, consumer: str, topics: Sequence[str], types: Sequence[str] = ()
    ) -> list[RawRecord]:
        """Logged events on ``topics`` (of the type names ``types``, if any; names
        without the version suffix) that ``consumer`` has no handled record for, in
        global order — what must be re-published after a broker lost its data."""
        type_filter = ""
        args: list[Any] = [list(topics), consumer]
        if types:
            args.append([f"{t}.v%" for t in types])
            type_filter = " AND event_type LIKE ANY($3::text[])"
        with unavailable_as_error("read"):
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM events e WHERE topic = ANY($1::text[]){type_filter}"
                " AND NOT EXISTS (SELECT 1 FROM handled h"
                "                 WHERE h.consumer = $2 AND h.event_id = e.event_id)"
                " ORDER BY position",
                *args,
            )
        return [_raw(r) for r in rows]
