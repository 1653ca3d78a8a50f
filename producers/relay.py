"""The outbox relay: every event appended to the log, onto its Kafka topic.

The log itself is the outbox. Appends commit in global-position order (see
``adapters.eventlog.postgres``), so the relay keeps one checkpoint — the last
position Kafka acknowledged — and publishes everything after it, in order, keyed
by ``partition_key`` (the deployment id; the service on ``shiplog.builds``), with
the event id in the ``ce_id`` header. Events recorded from outside (the recorder's)
are skipped: they are already on their topic.

- Woken by the commit: every append NOTIFYs; the relay LISTENs, with a slow safety
  poll in case a notification is lost. No fixed polling delay.
- At least once: the checkpoint moves only after Kafka acknowledged the batch. A
  relay killed between commit and publish (or mid-batch) publishes again from the
  checkpoint when it restarts; consumers drop the duplicates by handled record.
- Per-key order: a batch is sent in position order and aiokafka keeps one batch in
  flight per partition.
- One relay publishes at a time: a session advisory lock elects it; others wait.
- On start it re-publishes every logged event that a subscribed consumer has not
  handled yet, because a broker may have lost its data (the embedded one keeps
  nothing across restarts): work in flight continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from adapters.eventlog import PostgresEventLog, RawRecord
from adapters.eventlog.postgres import UNAVAILABLE
from events.errors import AdapterUnavailable
from events.topics import topic_name
from producers.kafka import headers, new_producer, trace_context

log = logging.getLogger(__name__)
tracer = trace.get_tracer("shiplog.relay")

SAFETY_POLL_S = 5.0
BATCH = 1000


@dataclass
class OutboxRelay:
    log: PostgresEventLog
    bootstrap: str
    topic_prefix: str = ""
    #: consumer name -> the catalogue topics it subscribes to, and the event type
    #: names it reacts to (empty: all) — for re-publishing on start.
    subscriptions: Mapping[str, tuple[Sequence[str], Sequence[str]]] = field(default_factory=dict)
    name: str = "relay"
    batch: int = BATCH
    producer_factory: Callable[[str], AIOKafkaProducer] = new_producer
    #: called with the number of events after each published batch (progress, tests)
    on_published: Callable[[int], None] | None = None
    published: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run_forever(self, backoff_cap: float = 5.0) -> None:
        """Run, and after any database or broker trouble start over with backoff."""
        delay = 0.1
        while True:
            try:
                await self.run()
            except (AdapterUnavailable, KafkaError, *UNAVAILABLE) as exc:
                log.warning("relay: %s; restarting in %.1fs", exc, delay)
                self.ready.clear()
                await asyncio.sleep(delay)
                delay = min(backoff_cap, delay * 2)

    async def run(self) -> None:
        listener = await self._connect_listener()
        wake = asyncio.Event()
        try:
            await listener.add_listener(self.log.channel, lambda *_: wake.set())
            await self._lead(listener)
            producer = self.producer_factory(self.bootstrap)
            await producer.start()
            try:
                await self.republish_unhandled(producer)
                checkpoint = await self._checkpoint()
                self.ready.set()
                while True:
                    wake.clear()
                    rows = await self.log.read_all(checkpoint, self.batch)
                    if rows:
                        await self._publish(producer, [r for r in rows if r.publish])
                        checkpoint = rows[-1].position
                        await self._save_checkpoint(checkpoint)
                    if len(rows) < self.batch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), SAFETY_POLL_S)
                    if listener.is_closed():
                        # Our leader lock went with that connection.
                        raise AdapterUnavailable("relay lost its database session")
            finally:
                await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await listener.close()

    async def republish_unhandled(self, producer: AIOKafkaProducer) -> int:
        """Publish every logged event some subscribed consumer has not handled."""
        by_position: dict[int, RawRecord] = {}
        for consumer, (topics, types) in self.subscriptions.items():
            for row in await self.log.unhandled(consumer, topics, types):
                by_position[row.position] = row
        rows = [by_position[p] for p in sorted(by_position)]
        for start in range(0, len(rows), self.batch):
            await self._publish(producer, rows[start : start + self.batch])
        if rows:
            log.info("relay: re-published %d events not yet handled by their consumers", len(rows))
        return len(rows)

    async def _publish(self, producer: AIOKafkaProducer, rows: Iterable[RawRecord]) -> None:
        futures = []
        spans: list[Span] = []
        try:
            for row in rows:
                destination = topic_name(row.topic, self.topic_prefix)
                spans.append(_publish_span(row, destination))
                futures.append(
                    await producer.send(
                        destination,
                        value=row.body.encode(),
                        key=row.key.encode(),
                        headers=headers(row.event_id, row.event_type, row.correlation_id),
                    )
                )
            if futures:
                await asyncio.gather(*futures)
        except BaseException as exc:
            for span in spans:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()
        if futures:
            self.published += len(futures)
            if self.on_published is not None:
                self.on_published(len(futures))

    async def _connect_listener(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.log.dsn)
        except UNAVAILABLE as exc:
            raise AdapterUnavailable(f"database unavailable: {exc}") from exc

    async def _lead(self, listener: asyncpg.Connection) -> None:
        """Block until this relay holds the leader lock (held for the session)."""
        # One lock per log schema, so relays of different logs never wait on each other.
        key = f"shiplog-relay:{self.log.schema}:{self.name}"
        # Polling is right here: nothing notifies when another session's lock goes.
        while not await listener.fetchval(  # noqa: ASYNC110
            "SELECT pg_try_advisory_lock(hashtext($1))", key
        ):
            await asyncio.sleep(1.0)

    async def _checkpoint(self) -> int:
        async with self.log.pool.acquire() as conn:
            value = await conn.fetchval("SELECT position FROM relay_checkpoint WHERE relay = $1", self.name)
        return int(value or 0)

    async def _save_checkpoint(self, position: int) -> None:
        async with self.log.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO relay_checkpoint (relay, position) VALUES ($1, $2)"
                " ON CONFLICT (relay) DO UPDATE SET position = excluded.position,"
                " updated_at = now()",
                self.name,
                position,
            )


def _publish_span(row: RawRecord, destination: str) -> Span:
    """A span from the send to Kafka's acknowledgement, in the release's trace and
    beside the handlings of the event (under the parent its header names). The
    row's key and type only: the body may hold secrets."""
    return tracer.start_span(
        f"relay publish {row.event_type}",
        context=trace_context(row.event_id, row.correlation_id),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            "shiplog.event.id": row.event_id,
            "shiplog.event.type": row.event_type,
            "shiplog.deployment.id": row.key,
        },
    )
