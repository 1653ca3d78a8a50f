"""The outbox relay against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

import producers.relay as relay_module
from adapters.eventlog import Handled, PostgresEventLog
from events import CloudEvent
from producers.kafka import ID_HEADER, create_topics
from producers.relay import OutboxRelay
from tests.busutil import consume, eventually

BUILDS = "shiplog.builds"


def build(service: str = "svc", version: str = "1.0.0") -> CloudEvent:
    return CloudEvent(
        source="ci/test",
        type="shiplog.build.completed.v1",
        subject=service,
        data={"service": service, "version": version, "artifact": f"reg/{service}:{version}"},
    )


@contextlib.asynccontextmanager
async def relay_running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    ready = asyncio.create_task(relay.ready.wait())
    await asyncio.wait([task, ready], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert relay.ready.is_set(), "relay did not become ready"
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> str:
    await create_topics(kafka_bootstrap, topic_prefix)
    return topic_prefix


async def test_appended_events_reach_their_topic_keyed_in_order_with_id_header(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str
) -> None:
    first = [build("checkout", f"1.0.{i}") for i in range(5)]
    second = [build("payments", f"2.0.{i}") for i in range(5)]
    await eventlog.append("release-a", first, 0)
    await eventlog.append("release-b", second, 0)
    async with relay_running(OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)):
        records = await consume(kafka_bootstrap, topics + BUILDS, 10)
    by_key: dict[bytes, list[str]] = {}
    for r in records:
        headers = dict(r.headers)
        assert headers[ID_HEADER].decode() == CloudEvent.model_validate_json(r.value).id
        assert headers["content-type"] == b"application/cloudevents+json"
        assert headers["traceparent"].startswith(b"00-")
        by_key.setdefault(r.key, []).append(headers[ID_HEADER].decode())
    assert by_key == {b"checkout": [e.id for e in first], b"payments": [e.id for e in second]}
    assert records[0].value == first[0].to_bytes() or records[0].value == second[0].to_bytes()


async def test_relay_is_woken_by_the_commit_not_by_polling(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the safety poll pushed far out, only the commit's NOTIFY can wake it.
    monkeypatch.setattr(relay_module, "SAFETY_POLL_S", 600.0)
    async with relay_running(OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)):
        await asyncio.sleep(0.3)  # the relay is now waiting on the notification
        event = build()
        await eventlog.append("release-x", [event], 0)
        records = await consume(kafka_bootstrap, topics + BUILDS, 1, timeout=10)
    assert dict(records[0].headers)[ID_HEADER] == event.id.encode()


async def test_events_recorded_from_outside_are_not_published_again(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str
) -> None:
    outside, ours = build("outside"), build("ours")
    await eventlog.append("release-o", [outside], 0, publish=False)
    await eventlog.append("release-p", [ours], 0)
    relay = OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)
    async with relay_running(relay):
        records = await consume(kafka_bootstrap, topics + BUILDS, 1, settle=1.0)
    assert [dict(r.headers)[ID_HEADER] for r in records] == [ours.id.encode()]


class _HangingProducer(AIOKafkaProducer):
    """Accepts sends and never delivers them: a relay stuck between commit and publish."""

    sends = 0

    async def send(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        type(self).sends += 1
        return asyncio.get_running_loop().create_future()


async def test_relay_killed_between_commit_and_publish_delivers_after_restart(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str
) -> None:
    events = [build("svc", f"3.0.{i}") for i in range(3)]
    stuck = OutboxRelay(
        eventlog,
        kafka_bootstrap,
        topic_prefix=topics,
        producer_factory=lambda b: _HangingProducer(bootstrap_servers=b),
    )
    async with relay_running(stuck):
        await eventlog.append("release-k", events, 0)
        await eventually(lambda: _HangingProducer.sends >= 3, what="the stuck relay to send")
    # killed mid-publish: the checkpoint did not move
    async with eventlog.pool.acquire() as conn:
        assert not await conn.fetchval("SELECT position FROM relay_checkpoint WHERE relay='relay'")
    async with relay_running(OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)):
        records = await consume(kafka_bootstrap, topics + BUILDS, 3)
    assert [dict(r.headers)[ID_HEADER].decode() for r in records] == [e.id for e in events]


async def test_relay_process_killed_with_sigkill_loses_nothing(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str, postgres_dsn: str
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": postgres_dsn,
        "SHIPLOG_LOG_SCHEMA": eventlog.schema,
        "SHIPLOG_TOPIC_PREFIX": topics,
        "SHIPLOG_LOG_LEVEL": "WARNING",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "shiplog", "run", "relay"], env=env)

    before = [build("svc", f"4.0.{i}") for i in range(20)]
    after = [build("svc", f"4.1.{i}") for i in range(20)]
    proc = start()
    try:
        await eventlog.append("release-s", before, 0)
        await consume(kafka_bootstrap, topics + BUILDS, 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await eventlog.append("release-s", after, 20)  # committed while no relay runs
        proc = start()
        expected = {e.id for e in before + after}
        records = await consume(kafka_bootstrap, topics + BUILDS, 40, timeout=30, ids=expected)
    finally:
        proc.kill()
        proc.wait(10)
    ids = {dict(r.headers)[ID_HEADER].decode() for r in records}
    assert ids >= expected


async def test_relay_republishes_what_subscribed_consumers_have_not_handled(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str
) -> None:
    """A broker that lost its data (the embedded one after a restart) gets back every
    logged event some consumer has yet to handle — even ones recorded from outside."""
    handled, pending, outside = build("a"), build("b"), build("c")
    await eventlog.append("release-1", [handled], 0)
    await eventlog.append("release-2", [pending], 0)
    await eventlog.append("release-3", [outside], 0, publish=False)
    await eventlog.append("planning-x", [], 0, handled=Handled("planning", handled.id))
    async with eventlog.pool.acquire() as conn:  # everything was published before the loss
        await conn.execute("INSERT INTO relay_checkpoint (relay, position) VALUES ('relay', 3)")
    relay = OutboxRelay(
        eventlog, kafka_bootstrap, topic_prefix=topics, subscriptions={"planning": ([BUILDS], ())}
    )
    async with relay_running(relay):
        records = await consume(kafka_bootstrap, topics + BUILDS, 2, settle=1.0)
    # different keys, different partitions: compare without cross-partition order
    assert sorted(dict(r.headers)[ID_HEADER].decode() for r in records) == sorted([pending.id, outside.id])


async def test_only_one_relay_publishes_at_a_time(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topics: str
) -> None:
    first = OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)
    second = OutboxRelay(eventlog, kafka_bootstrap, topic_prefix=topics)
    async with relay_running(first) as first_task:
        standby = asyncio.create_task(second.run())
        await asyncio.sleep(1.5)
        assert not second.ready.is_set()
        first_task.cancel()
        await eventually(second.ready.is_set, what="the standby relay to take over")
        await eventlog.append("release-l", [build()], 0)
        await consume(kafka_bootstrap, topics + BUILDS, 1)
        standby.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await standby
