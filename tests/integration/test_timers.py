"""Durable timers: stored from timer.scheduled, fired as timer.fired when due."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from adapters.eventlog import PostgresEventLog
from adapters.eventlog.timers import PostgresTimerStore
from consumers.contract import Ports
from consumers.timers import TIMERS, TimerScheduler
from consumers.timers.core import fired_event_id
from events import REGISTRY, new_event
from events.timer import TimerCancelled, TimerFired, TimerScheduled
from events.topics import TIMERS as TIMERS_TOPIC
from events.topics import topic_name
from tests.busutil import eventually, produce, running_shell, unique


def scheduled(timer_id: str, due_at: datetime, stream: str = "deployment-d1") -> bytes:
    return new_event(
        TimerScheduled(
            timer_id=timer_id, stream_id=stream, due_at=due_at, purpose="pause", payload={"step": 2}
        ),
        source="shiplog/execution",
        subject="d1",
        correlationid="release-1",
    ).to_bytes()


async def test_a_scheduled_timer_fires_once_into_its_stream_when_due(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    store = PostgresTimerStore(eventlog)
    scheduler = TimerScheduler(eventlog, store)
    ports = Ports(log=eventlog, timers=store, wake=scheduler.wake)
    task = asyncio.create_task(scheduler.run())
    try:
        async with running_shell(unique(TIMERS), eventlog, kafka_bootstrap, topic_prefix, ports=ports):
            due = datetime.now(UTC) + timedelta(seconds=0.5)
            await produce(
                kafka_bootstrap, topic_name(TIMERS_TOPIC, topic_prefix), scheduled("t-1", due), key=b"d1"
            )
            await eventually(lambda: scheduler.fired_count == 1, what="the timer to fire")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [recorded] = await eventlog.read_stream("deployment-d1")
    event = recorded.event
    assert event.id == fired_event_id("t-1")
    assert event.subject == "d1" and event.correlationid == "release-1"
    data = REGISTRY.payload(event, TimerFired)
    assert data.payload == {"step": 2} and data.purpose == "pause"
    assert data.fired_at >= due
    # Firing again (a crash between append and mark) is one event.
    await store.schedule("t-1", "deployment-d1", due, "pause", {})
    assert await scheduler.fire_due() == 0
    assert len(await eventlog.read_stream("deployment-d1")) == 1


async def test_timers_that_fell_due_while_down_fire_at_start(eventlog: PostgresEventLog) -> None:
    store = PostgresTimerStore(eventlog)
    past = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(3):
        await store.schedule(f"old-{i}", f"deployment-{i}", past, "window", {})
    await store.schedule("future", "deployment-f", datetime.now(UTC) + timedelta(hours=1), "x", {})
    scheduler = TimerScheduler(eventlog, store)
    assert await scheduler.fire_due() == 3
    for i in range(3):
        assert [r.event.type for r in await eventlog.read_stream(f"deployment-{i}")] == [
            "shiplog.timer.fired.v1"
        ]
    assert await eventlog.read_stream("deployment-f") == []


async def test_a_cancelled_timer_never_fires(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    store = PostgresTimerStore(eventlog)
    scheduler = TimerScheduler(eventlog, store)
    ports = Ports(log=eventlog, timers=store, wake=None)
    topic = topic_name(TIMERS_TOPIC, topic_prefix)
    async with running_shell(unique(TIMERS), eventlog, kafka_bootstrap, topic_prefix, ports=ports) as shell:
        await produce(kafka_bootstrap, topic, scheduled("t-c", datetime.now(UTC)), key=b"d1")
        cancel = new_event(
            TimerCancelled(timer_id="t-c", stream_id="deployment-d1"),
            source="shiplog/execution",
            subject="d1",
        )
        await produce(kafka_bootstrap, topic, cancel.to_bytes(), key=b"d1")
        await eventually(lambda: shell.stats["handled"] == 2)
    assert await scheduler.fire_due() == 0
    assert await eventlog.read_stream("deployment-d1") == []
