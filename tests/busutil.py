"""Small helpers for tests that talk to the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from adapters.eventlog import PostgresEventLog
from consumers.contract import Consumer
from consumers.shell import ConsumerShell
from producers.kafka import create_topics
from shiplog.runner import make_broker


async def consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 20.0,
    *,
    settle: float = 0.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning until ``count`` records arrived (or fail).
    With ``settle``, keep reading that long afterwards to catch extra records."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"probe-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:

        async def collect(until: Callable[[], bool]) -> None:
            while not until():
                batch = await consumer.getmany(timeout_ms=200)
                for recs in batch.values():
                    records.extend(recs)

        await asyncio.wait_for(collect(lambda: len(records) >= count), timeout)
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
