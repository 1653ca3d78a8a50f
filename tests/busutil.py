"""Small helpers for tests that talk to the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from adapters.eventlog import PostgresEventLog
from consumers.contract import Consumer
from consumers.shell import ConsumerShell
from producers.kafka import ID_HEADER, create_topics
from shiplog.runner import EMBEDDED_SESSION_TIMEOUT_MS, make_broker


async def consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 20.0,
    *,
    settle: float = 0.0,
    ids: Collection[str] = (),
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning until ``count`` records arrived (or fail) —
    and, given ``ids``, a record of each of those event ids (at-least-once delivery
    may bring duplicates first). With ``settle``, keep reading that long afterwards
    to catch extra records.
    Its partitions are assigned, not subscribed in a group: the embedded broker holds
    a new group's join for half its session timeout (5 s by aiokafka's default)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (partitions := consumer.partitions_for_topic(topic)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{topic}: no such topic")
            await consumer.topics()  # a metadata refresh
            await asyncio.sleep(0.05)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)

        async def collect(until: Callable[[], bool]) -> None:
            while not until():
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)

        def arrived() -> bool:
            if len(records) < count:
                return False
            seen = {dict(r.headers).get(ID_HEADER, b"").decode() for r in records}
            return seen.issuperset(ids)

        await asyncio.wait_for(collect(arrived), timeout)
        if settle:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collect(lambda: False), settle)
    except TimeoutError:
        raise AssertionError(f"{topic}: {len(records)} of {count} records arrived") from None
    finally:
        await consumer.stop()
    return records


async def produce(
    bootstrap: str,
    topic: str,
    value: bytes,
    key: bytes | None = b"svc",
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


def unique(consumer: Consumer[Any]) -> Consumer[Any]:
    """The same consumer under a fresh group name, so tests never share offsets."""
    return replace(consumer, name=f"{consumer.name}-{uuid.uuid4().hex[:8]}")


@contextlib.asynccontextmanager
async def running_shell(
    consumer: Consumer[Any],
    log: PostgresEventLog,
    bootstrap: str,
    prefix: str,
    **kwargs: Any,
) -> AsyncIterator[ConsumerShell]:
    await create_topics(bootstrap, prefix)
    broker = make_broker(bootstrap)
    # the least Kafka accepts: the embedded broker holds a join for half of it
    kwargs.setdefault("session_timeout_ms", EMBEDDED_SESSION_TIMEOUT_MS)
    shell = ConsumerShell(consumer, log, broker, prefix, **kwargs)
    shell.subscribe()
    await broker.start()
    try:
        yield shell
    finally:
        await shell.flush_commits()
        await broker.stop()


async def eventually(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll an (async or sync) predicate until truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)
