"""The PostgreSQL event log against a real server: optimistic concurrency,
idempotency, global order for tailing readers, the hash chain, handled records,
migrations, queries, and a database that goes away and comes back.

Every test gets a schema of its own (the ``eventlog`` fixture); the restart test
gets a server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from adapters.eventlog import Handled, PostgresEventLog, RawRecord
from adapters.eventlog.schema import MIGRATIONS
from events.envelope import CloudEvent
from events.errors import AdapterUnavailable, ConcurrencyConflict
from shiplog.embedded import EmbeddedPostgres

BUILD = "shiplog.build.completed.v1"
DEAD_LETTERED = "shiplog.message.dead_lettered.v1"
#: An upper bound for anything that should take well under a second; a hang fails
#: the test instead of stalling the suite.
DEADLINE_S = 20.0


def build_event(service: str = "svc", version: str = "1.0.0") -> CloudEvent:
    return CloudEvent(
        source="ci/test/svc",
        type=BUILD,
        subject=service,
        data={"service": service, "version": version, "artifact": f"reg/{service}:{version}"},
    )


def builds(n: int) -> list[CloudEvent]:
    return [build_event(version=f"1.0.{i}") for i in range(n)]


def dead_lettered_event() -> CloudEvent:
    return CloudEvent(
        source="shiplog/planning",
        type=DEAD_LETTERED,
        subject="svc",
        data={
            "consumer": "planning",
            "reason": "not_json",
            "error": "Expecting value",
            "topic": "shiplog.builds",
            "partition": 0,
            "offset": 7,
            "original": "bm90IGpzb24=",
        },
    )


def new_stream() -> str:
    return f"deployment-{uuid.uuid4()}"


async def head_position(log: PostgresEventLog) -> int:
    return (await log.head())[0]


async def versions(log: PostgresEventLog, stream_id: str) -> list[int]:
    return [r.stream_version for r in await log.read_stream(stream_id)]


async def collect(rows: AsyncIterator[RawRecord]) -> list[int]:
    return [row.position async for row in rows]


# -- optimistic concurrency and idempotency -------------------------------------------


@pytest.mark.parametrize("seeded", [0, 3], ids=["new-stream", "existing-stream"])
async def test_concurrent_appends_at_one_expected_version_let_exactly_one_win(
    eventlog: PostgresEventLog, seeded: int
) -> None:
    stream = new_stream()
    if seeded:
        await eventlog.append(stream, builds(seeded), 0)
    contenders = [build_event(version=f"2.0.{i}") for i in range(20)]

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(eventlog.append(stream, [e], seeded) for e in contenders), return_exceptions=True),
        DEADLINE_S,
    )

    paired = list(zip(contenders, outcomes, strict=True))
    won = [(e, o) for e, o in paired if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1, outcomes
    assert len(lost) == 19 and all(isinstance(o, ConcurrencyConflict) for o in lost), lost
    winner, result = won[0]
    assert result.stream_version == seeded + 1 and not result.duplicate
    recorded = await eventlog.read_stream(stream)
    assert [r.stream_version for r in recorded] == list(range(1, seeded + 2))
    assert recorded[-1].event.id == winner.id
    assert await head_position(eventlog) == seeded + 1
    report = await eventlog.verify()
    assert report.ok, report
    assert report.checked == seeded + 1


async def test_retrying_an_append_with_the_same_events_is_a_duplicate_that_writes_nothing(
    eventlog: PostgresEventLog,
) -> None:
    stream = new_stream()
    batch = builds(2)
    first = await eventlog.append(stream, batch, 0)
    head = await eventlog.head()

    retry = await eventlog.append(stream, batch, 0)

    assert (first.stream_version, first.duplicate) == (2, False)
    assert retry.duplicate and retry.stream_version == 2 and retry.position == 0
    assert await eventlog.head() == head
    assert await versions(eventlog, stream) == [1, 2]


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-stream", "other-stream"])
async def test_an_append_that_partly_overlaps_logged_events_conflicts_and_writes_nothing(
    eventlog: PostgresEventLog, elsewhere: bool
) -> None:
    stream = new_stream()
    logged = builds(2)
    await eventlog.append(stream, logged, 0)
    head = await eventlog.head()
    target, expected = (new_stream(), 0) if elsewhere else (stream, 2)
    # Elsewhere, even the full set of ids is a conflict: an event lives in one stream.
    overlap = [logged[1], build_event(version="9.9.9")] if not elsewhere else logged

    with pytest.raises(ConcurrencyConflict):
        await eventlog.append(target, overlap, expected)

    assert await eventlog.head() == head
    assert await versions(eventlog, stream) == [1, 2]
    assert await versions(eventlog, target) == ([] if elsewhere else [1, 2])


async def test_an_empty_append_changes_nothing(eventlog: PostgresEventLog) -> None:
    stream = new_stream()
    await eventlog.append(stream, builds(3), 0)
    head = await eventlog.head()

    checked = await eventlog.append(stream, [], 3)
    unchecked = await eventlog.append(stream, [], None)
    absent = await eventlog.append(new_stream(), [], 0)

    assert (checked.stream_version, checked.position, checked.duplicate) == (3, 0, False)
    assert unchecked.stream_version == 3
    assert absent.stream_version == 0
    assert await eventlog.head() == head


async def test_a_stale_expected_version_conflicts_and_writes_nothing(
    eventlog: PostgresEventLog,
) -> None:
    stream = new_stream()
    await eventlog.append(stream, [build_event()], 0)
    head = await eventlog.head()

    for stale in (0, 2):
        with pytest.raises(ConcurrencyConflict):
            await eventlog.append(stream, [build_event(version="2.0.0")], stale)

    assert await eventlog.head() == head
    assert await versions(eventlog, stream) == [1]


async def test_no_expected_version_appends_without_a_check(eventlog: PostgresEventLog) -> None:
    stream = new_stream()
    await eventlog.append(stream, builds(2), 0)

    result = await eventlog.append(stream, [build_event(version="2.0.0")], None)

    assert (result.stream_version, result.position, result.duplicate) == (3, 3, False)
    assert await versions(eventlog, stream) == [1, 2, 3]


# -- the global order, as a tailing reader sees it ----------------------------------------


async def test_a_tailing_reader_sees_every_position_of_two_concurrent_writers_once_in_order(
    eventlog: PostgresEventLog,
) -> None:
    per_writer, streams_per_writer = 1_000, 25
    total = 2 * per_writer
    seen: list[int] = []
    seen_ids: list[str] = []

    async def read() -> None:
        async with contextlib.aclosing(eventlog.tail(after=0)) as rows:
            async for row in rows:
                seen.append(row.position)
                seen_ids.append(row.event_id)
                if len(seen) == total:
                    return

    async def write(name: str, seed: int) -> list[str]:
        rng = random.Random(seed)
        streams = [f"{name}-{uuid.uuid4()}" for _ in range(streams_per_writer)]
        stream_versions = dict.fromkeys(streams, 0)
        written: list[str] = []
        while len(written) < per_writer:
            stream = rng.choice(streams)
            batch = builds(min(rng.randint(1, 10), per_writer - len(written)))
            result = await eventlog.append(stream, batch, stream_versions[stream])
            stream_versions[stream] = result.stream_version
            written += [e.id for e in batch]
        return written

    reader = asyncio.create_task(read())
    try:
        written = await asyncio.wait_for(asyncio.gather(write("a", 1), write("b", 2)), DEADLINE_S)
        await asyncio.wait_for(reader, DEADLINE_S)
    finally:
        reader.cancel()

    assert seen == list(range(1, total + 1))
    assert sorted(seen_ids) == sorted(written[0] + written[1])
    report = await eventlog.verify()
    assert report.ok and report.checked == total, report


# -- the hash chain -------------------------------------------------------------------------


async def five_events_in_two_streams(log: PostgresEventLog) -> None:
    a, b = new_stream(), new_stream()
    await log.append(a, builds(2), 0)  # positions 1, 2
    await log.append(b, builds(1), 0)  # 3
    await log.append(a, builds(1), 2)  # 4
    await log.append(b, builds(1), 1)  # 5


async def test_an_untampered_log_verifies(eventlog: PostgresEventLog) -> None:
    await five_events_in_two_streams(eventlog)

    report = await eventlog.verify()

    assert report.ok, report
    assert report.checked == await eventlog.count() == 5


async def test_an_empty_log_verifies(eventlog: PostgresEventLog) -> None:
    report = await eventlog.verify()

    assert report.ok and report.checked == 0, report


TAMPERING = {
    "body-updated": (
        [
            "UPDATE {t} SET body = jsonb_set(body::jsonb, '{{data,version}}', '\"6.6.6\"')::text"
            " WHERE position = 3"
        ],
        3,
    ),
    "middle-row-deleted": (["DELETE FROM {t} WHERE position = 3"], 3),
    "rows-swapped": (
        [
            "UPDATE {t} SET position = -1 WHERE position = 2",
            "UPDATE {t} SET position = 2 WHERE position = 3",
            "UPDATE {t} SET position = 3 WHERE position = -1",
        ],
        2,
    ),
    "last-row-deleted": (["DELETE FROM {t} WHERE position = 5"], 5),
    "recording-time-moved": (
        ["UPDATE {t} SET recorded_at = recorded_at - interval '1 day' WHERE position = 4"],
        4,
    ),
}


@pytest.mark.parametrize(("statements", "first_bad"), TAMPERING.values(), ids=TAMPERING.keys())
async def test_verify_names_the_first_position_changed_behind_the_logs_back(
    eventlog: PostgresEventLog, statements: list[str], first_bad: int
) -> None:
    await five_events_in_two_streams(eventlog)
    table = f'"{eventlog.schema}".events'

    async with eventlog.pool.acquire() as conn, conn.transaction():
        for sql in statements:
            await conn.execute(sql.format(t=table))

    report = await eventlog.verify()
    assert not report.ok
    assert report.first_bad_position == first_bad, report
    assert report.problem


# -- handled records --------------------------------------------------------------------------


async def test_an_append_with_a_handled_record_writes_both_and_a_redelivery_writes_nothing(
    eventlog: PostgresEventLog,
) -> None:
    stream = new_stream()
    handled = Handled("planning", "e1")
    first = await eventlog.append(stream, builds(2), 0, handled=handled)
    head = await eventlog.head()

    # A redelivery decides again, maybe differently: new ids, same handled record.
    again = await eventlog.append(stream, builds(1), 2, handled=handled)
    stale = await eventlog.append(stream, builds(1), 0, handled=handled)

    assert (first.stream_version, first.duplicate) == (2, False)
    assert again.duplicate and again.stream_version == 2 and again.position == 0
    assert stale.duplicate
    assert await eventlog.head() == head
    assert await versions(eventlog, stream) == [1, 2]
    assert await eventlog.is_handled("planning", "e1")
    assert not await eventlog.is_handled("approval", "e1")
    assert not await eventlog.is_handled("planning", "e2")


async def test_a_handled_record_alone_is_written_once(eventlog: PostgresEventLog) -> None:
    stream = new_stream()
    await eventlog.append(stream, builds(1), 0)
    head = await eventlog.head()
    handled = Handled("verification", "e7")

    first = await eventlog.append(stream, [], 1, handled=handled)
    second = await eventlog.append(stream, [], 1, handled=handled)

    assert (first.stream_version, first.position, first.duplicate) == (1, 0, False)
    assert second.duplicate and second.stream_version == 1
    assert await eventlog.is_handled("verification", "e7")
    assert await eventlog.head() == head
    async with eventlog.pool.acquire() as conn:
        rows = await conn.fetchval(
            f'SELECT count(*) FROM "{eventlog.schema}".handled'
            " WHERE consumer = 'verification' AND event_id = 'e7'"
        )
    assert rows == 1


# -- migrations ---------------------------------------------------------------------------------


async def test_migrating_a_migrated_schema_applies_nothing(eventlog: PostgresEventLog) -> None:
    assert await eventlog.migrate() == []
    assert await eventlog.migrate() == []


async def test_three_processes_connecting_to_a_new_schema_at_once_all_succeed(
    postgres_dsn: str, log_schema: str
) -> None:
    logs: list[PostgresEventLog] = []
    try:
        logs = list(
            await asyncio.wait_for(
                asyncio.gather(
                    *(PostgresEventLog.connect(postgres_dsn, schema=log_schema, max_size=2) for _ in range(3))
                ),
                DEADLINE_S,
            )
        )
        assert [await log.migrate() for log in logs] == [[], [], []]
        async with logs[0].pool.acquire() as conn:
            applied = await conn.fetch(f'SELECT version FROM "{log_schema}".schema_migrations')
        assert [r["version"] for r in applied] == [m[0] for m in MIGRATIONS]
        stream = new_stream()
        await logs[1].append(stream, builds(1), 0)
        assert await versions(logs[2], stream) == [1]
    finally:
        for log in logs:
            await log.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{log_schema}" CASCADE')
        finally:
            await conn.close()


# -- reading ------------------------------------------------------------------------------------


async def test_reads_return_events_in_order_and_filter_by_stream_type_and_time(
    eventlog: PostgresEventLog, postgres_dsn: str
) -> None:
    t0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
    now = [t0]
    log = PostgresEventLog(eventlog.pool, postgres_dsn, schema=eventlog.schema, clock=lambda: now[0])
    a, dlq, b = new_stream(), new_stream(), new_stream()
    a_events, b_events, dead = builds(3), builds(2), dead_lettered_event()
    await log.append(a, a_events, 0)  # positions 1-3, at t0
    now[0] = t1 = t0 + timedelta(hours=1)
    await log.append(dlq, [dead], 0)  # 4, at t1
    await log.append(b, b_events, 0)  # 5-6, at t1

    recorded = await log.read_stream(a)
    assert [r.stream_version for r in recorded] == [1, 2, 3]
    assert [r.position for r in recorded] == [1, 2, 3]
    assert [r.event.id for r in recorded] == [e.id for e in a_events]
    assert [r.event.data["version"] for r in recorded] == ["1.0.0", "1.0.1", "1.0.2"]
    assert all(isinstance(r.event, CloudEvent) and r.event.type == BUILD for r in recorded)
    assert {(r.topic, r.key, r.recorded_at, r.publish) for r in recorded} == {
        ("shiplog.builds", "svc", t0, True)
    }
    assert await log.read_stream(new_stream()) == []

    pages = [await log.read_all(after, limit=4) for after in (0, 4, 6)]
    assert [[r.position for r in page] for page in pages] == [[1, 2, 3, 4], [5, 6], []]
    assert [r.event_id for r in pages[0] + pages[1]] == [e.id for e in [*a_events, dead, *b_events]]
    assert [r.position for r in await log.read_all(types=[DEAD_LETTERED])] == [4]

    filters: list[tuple[dict, list[int]]] = [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"after": 2}, [3, 4, 5, 6]),
        ({"stream_id": b}, [5, 6]),
        ({"stream_id": a, "after": 1}, [2, 3]),
        ({"types": [DEAD_LETTERED]}, [4]),
        ({"types": [BUILD, DEAD_LETTERED]}, [1, 2, 3, 4, 5, 6]),
        ({"since": t1}, [4, 5, 6]),
        ({"since": t1, "types": [BUILD]}, [5, 6]),
        ({"since": t1 + timedelta(microseconds=1)}, []),
    ]
    for kwargs, expected in filters:
        assert await collect(log.scan(**kwargs)) == expected, kwargs
        assert await log.count(**kwargs) == len(expected), kwargs


async def test_unhandled_lists_what_a_consumer_has_not_handled_on_its_topics(
    eventlog: PostgresEventLog,
) -> None:
    a, dlq = new_stream(), new_stream()
    a_events = builds(3)
    await eventlog.append(a, a_events, 0)  # positions 1-3 on shiplog.builds
    await eventlog.append(dlq, [dead_lettered_event()], 0)  # 4 on shiplog.deadletter

    await eventlog.append(a, [], None, handled=Handled("planning", a_events[1].id))

    def positions(rows: list[RawRecord]) -> list[int]:
        return [r.position for r in rows]

    assert positions(await eventlog.unhandled("planning", ["shiplog.builds"])) == [1, 3]
    assert positions(await eventlog.unhandled("notification", ["shiplog.builds"])) == [1, 2, 3]
    assert positions(await eventlog.unhandled("planning", ["shiplog.deadletter"])) == [4]
    assert positions(await eventlog.unhandled("planning", ["shiplog.builds", "shiplog.deadletter"])) == [
        1,
        3,
        4,
    ]
    assert await eventlog.unhandled("planning", ["shiplog.plans"]) == []


# -- the database goes away ---------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
async def test_appends_fail_retryably_while_the_database_is_down_and_work_once_it_is_back(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / "pg"
    server = EmbeddedPostgres.start(pgdata)
    log: PostgresEventLog | None = None
    try:
        dsn = server.dsn
        log = await PostgresEventLog.connect(dsn, schema="restart", max_size=3)
        stream = new_stream()
        await log.append(stream, [build_event()], 0)

        server.stop()
        # The first try runs into a pooled connection the server closed, the second
        # into a failed reconnect: both are the same retryable error.
        for attempt in range(2):
            with pytest.raises(AdapterUnavailable) as caught:
                await asyncio.wait_for(log.append(stream, [build_event()], 1), DEADLINE_S)
            assert caught.value.retryable, attempt
            assert caught.value.__cause__ is not None, attempt
        with pytest.raises(AdapterUnavailable):
            await log.read_stream(stream)

        server = EmbeddedPostgres.start(pgdata)
        # Same data directory, same socket: the old pool reconnects by itself, no
        # new connect() is needed.
        assert server.dsn == dsn
        result = await asyncio.wait_for(log.append(stream, [build_event()], 1), DEADLINE_S)
        assert (result.stream_version, result.position) == (2, 2)
        assert await versions(log, stream) == [1, 2]
        report = await log.verify()
        assert report.ok and report.checked == 2, report
    finally:
        if log is not None:
            await log.close()
        server.stop()


# -- regressions for the three eventlog bugs (pass only with the proposed patch) -----------


@pytest.mark.parametrize("column", ["topic", "partition_key", "event_id", "event_type"])
async def test_verify_catches_a_column_changed_apart_from_the_body(
    eventlog: PostgresEventLog, column: str
) -> None:
    await five_events_in_two_streams(eventlog)
    async with eventlog.pool.acquire() as conn:
        await conn.execute(
            f"UPDATE \"{eventlog.schema}\".events SET {column} = {column} || 'x' WHERE position = 3"
        )

    report = await eventlog.verify()

    assert report.first_bad_position == 3, report


async def test_an_append_committed_while_verify_walks_is_not_reported_as_tampering(
    eventlog: PostgresEventLog, postgres_dsn: str
) -> None:
    await five_events_in_two_streams(eventlog)

    async def append_elsewhere() -> None:
        other = await PostgresEventLog.connect(postgres_dsn, schema=eventlog.schema, migrate_schema=False)
        try:
            await other.append(new_stream(), builds(1), 0)
        finally:
            await other.close()

    def append_after_the_walk(checked: int) -> None:
        # progress() runs between the walk and the head check; this loop is blocked
        # in it, so the append runs on a loop of its own.
        worker = threading.Thread(target=asyncio.run, args=(append_elsewhere(),))
        worker.start()
        worker.join()

    report = await eventlog.verify(progress=append_after_the_walk)

    assert report.ok and report.checked == 5, report
    assert (await eventlog.verify()).checked == 6


async def test_a_handled_record_committed_under_an_append_makes_it_a_conflict(
    eventlog: PostgresEventLog, postgres_dsn: str
) -> None:
    stream, handled = new_stream(), Handled("planning", "e1")
    other = await asyncpg.connect(postgres_dsn)
    try:
        async with other.transaction():
            await other.execute(
                f'INSERT INTO "{eventlog.schema}".handled (consumer, event_id) VALUES ($1, $2)',
                handled.consumer,
                handled.event_id,
            )
            racing = asyncio.create_task(eventlog.append(stream, builds(1), 0, handled=handled))
            await asyncio.sleep(0.2)  # the append checks, then blocks on our uncommitted row
        with pytest.raises(ConcurrencyConflict):
            await racing
    finally:
        await other.close()

    retry = await eventlog.append(stream, builds(1), 0, handled=handled)
    assert retry.duplicate
    assert await eventlog.head() == (0, bytes(32))
