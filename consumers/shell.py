"""The shell every consumer runs in: FastStream on Kafka, at least once, nothing lost.

For each message, in order:

1. parse and upcast (``REGISTRY.decode``); poison goes to ``shiplog.deadletter``
   with the reason, the original bytes and headers;
2. skip it if this consumer's handled record for the event exists (redelivery);
   a command (approval answer, ``command.*``) without a valid signature of the
   command API is refused here: not acted on, counted, and — by the recorder —
   recorded as ``shiplog.command.refused`` in its deployment's stream;
3. load the event's stream from the log and fold it;
4. call the consumer's pure ``decide``;
5. append the new events and the handled record in one transaction (a
   concurrency conflict reloads and decides again);
6. only then commit the offset.

Each handling is a span of the release's trace: its parent is the context the
relay's ``traceparent`` header names, derived from the event itself (the release's
correlation id and the event id, ``producers.kafka.traceparent``), so the fast path
— which never sees a header — puts its span under the same parent as Kafka would.

Retryable trouble — the database or the broker away — is retried here with
capped exponential backoff and the offset stays uncommitted; if the process dies
meanwhile, the message is delivered again. A non-retryable handler error is
dead-lettered, then committed: a message that can never succeed must not block its
partition forever.

The FastStream subscriber uses ``AckPolicy.MANUAL``: the Kafka default
(``ACK_FIRST``) commits before the handler runs, and ``reject()`` commits too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage as InjectedMessage
from faststream.kafka.message import KafkaMessage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from adapters.eventlog import EventLog, Handled
from consumers.contract import Consumer
from events.deadletter import MessageDeadLettered
from events.envelope import CloudEvent, split_type
from events.errors import ConcurrencyConflict, InvalidEvent, ShiplogError
from events.registry import REGISTRY, EventRegistry, new_event
from events.signature import is_command, verify
from events.topics import DEADLETTER, topic_for, topic_name
from producers.kafka import ID_HEADER, TYPE_HEADER, trace_context
from producers.kafka import headers as event_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("shiplog.consumers")
_propagator = TraceContextTextMapPropagator()

#: Conflicts are settled by reloading and deciding again; this many in a row
#: means something is wrong and the message is retried later like any trouble.
MAX_CONFLICT_RETRIES = 10
#: how many handled event ids a shell remembers (a bounded cache; the handled
#: records in the log stay the authority)
RECENT_HANDLED = 10_000
#: the folded state of this many streams is kept (the ones handled last): an event on
#: one of them reads only the stream's events after it (streams only ever grow)
FOLDED_STREAMS = 1_000
_UNFOLDED = object()
#: how long finished messages' offsets wait to be committed together
COMMIT_INTERVAL_S = 0.05


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    initial: float = 0.1
    cap: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * (2**self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ShiplogError):
        return exc.retryable
    return isinstance(exc, KafkaError | OSError | asyncio.TimeoutError)


def _outcome(name: str) -> None:
    """What became of the message, on the handling's span (none outside one)."""
    trace.get_current_span().set_attribute("shiplog.outcome", name)


async def _the_message(msg: KafkaMessage) -> KafkaMessage:
    """A decoder handing the subscriber the message, not its body. (Async: FastStream
    runs a synchronous decoder in a worker thread, once per message.)"""
    return msg


class LocalDispatch:
    """Hands events appended by one shell to every shell of this process that reads
    their topic and reacts to their type. Kafka still delivers each of them: it is
    the durable path, this only the quick one, and handled records make the second
    arrival a duplicate."""

    def __init__(self, shells: list[ConsumerShell]):
        self.shells = shells
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, events: list[CloudEvent], source: ConsumerShell | None = None) -> None:
        for event in events:
            topic = topic_for(event.type).name
            for shell in self.shells:
                if shell is not source and topic in shell.consumer.topics and shell.consumer.wants(event):
                    task = asyncio.create_task(shell.handle_local(event))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the local handlings under way (before shutting down)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class ConsumerShell:
    consumer: Consumer[Any]
    log: EventLog
    broker: KafkaBroker
    topic_prefix: str = ""
    registry: EventRegistry = REGISTRY
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    backoff_initial: float = 0.1
    backoff_cap: float = 5.0
    policy: dict[str, Any] = field(default_factory=dict)
    #: the adapters ``gather`` may use (targets, metrics, config), built by the runner
    ports: Any = None
    #: how long the broker may hold a fetch when there is nothing to read. Kafka
    #: answers as soon as data arrives; the embedded broker waits this out, so
    #: `shiplog dev` lowers it (each saga hop starts with an idle consumer).
    fetch_max_wait_ms: int = 500
    #: the group session timeout (a member silent this long is dropped and its
    #: partitions reassigned); heartbeats go every third of it
    session_timeout_ms: int = 10_000
    #: the in-process fast path: called with the events this shell appended, so the
    #: other consumers of this process react without waiting for the relay and Kafka
    #: (the Kafka delivery that follows finds their handled records: a duplicate)
    on_appended: Callable[[list[CloudEvent]], None] | None = None
    #: offsets of finished messages are committed in the background, coalesced over
    #: this many seconds (0: an awaited commit after every message)
    commit_interval_s: float = COMMIT_INTERVAL_S
    #: set on the shell of a process that reads the topics from outside (builds,
    #: commands): what it receives from Kafka is handed to the other shells of the
    #: process at once, so they need not poll Kafka quickly themselves
    forward_received: LocalDispatch | None = None
    #: key id -> key: commands (approval answers, ``command.*``) must carry a valid
    #: signature of the command API by one of these, or they are refused. Empty:
    #: every command is refused (fail closed)
    command_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    _recent: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)
    _folded: OrderedDict[str, tuple[int, Any]] = field(default_factory=OrderedDict, repr=False)
    _pending: dict[Any, dict[TopicPartition, int]] = field(default_factory=dict, repr=False)
    _committer: asyncio.Task[None] | None = field(default=None, repr=False)
    #: counters for /metrics and tests
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "handled": 0,
            "duplicates": 0,
            "deadlettered": 0,
            "retries": 0,
            "skipped": 0,
            "refused": 0,
        }
    )

    def subscribe(self) -> None:
        """Register this consumer's subscriber on the broker."""
        topics = [topic_name(t, self.topic_prefix) for t in self.consumer.topics]
        self.broker.subscriber(
            *topics,
            # the topic namespace names the groups too: installs (and tests) sharing
            # a broker never share consumer groups
            group_id=f"{self.topic_prefix}{self.consumer.name}",
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.session_timeout_ms // 3,
            title=f"{self.consumer.name}",
            description=self.consumer.description,
            # the handler takes the message itself: it decodes (or skips) by its
            # headers, and needs no dependency injection (see make_broker)
            decoder=_the_message,
        )(self.on_message)

    async def on_message(self, msg: InjectedMessage) -> None:
        # (annotated as FastStream's context message, which keeps it out of the
        # AsyncAPI payload; with no injection the decoder above supplies it)
        record = msg.raw_message
        carrier = {k: v.decode(errors="replace") for k, v in (record.headers or ())}  # type: ignore[union-attr]
        if self._unwanted(carrier.get(TYPE_HEADER)):
            # Most messages on a shared topic are for other consumers: skip them by
            # their header, before decoding. (No header: decode and decide as usual.)
            self.stats["skipped"] += 1
            await self._commit(msg)
            return
        if carrier.get(ID_HEADER) in self._recent:
            # Handled already (the in-process fast path got there first): this is
            # the durable path catching up, and the id header says so without a decode.
            self.stats["duplicates"] += 1
            await self._commit(msg)
            return
        try:
            await self._process(msg)
        except asyncio.CancelledError:
            await msg.nack()
            raise
        await self._commit(msg)

    @contextlib.contextmanager
    def _span(
        self,
        event: CloudEvent | None,
        *,
        destination: str,
        delivery: str,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[Span]:
        """The span of one handling. Its parent is derived from the event, not read
        from the header, so both paths agree; a header naming another trace (an
        outside producer's own) becomes a link. Attributes name the message, never
        its data (which may hold secrets)."""
        header_ctx = _propagator.extract(carrier) if carrier else None
        header_span = trace.get_current_span(header_ctx).get_span_context() if header_ctx else None
        links: list[Link] = []
        ctx: Context | None
        if event is not None:
            ctx = trace_context(event.id, event.correlationid)
            own = trace.get_current_span(ctx).get_span_context()
            if header_span is not None and header_span.is_valid and header_span.trace_id != own.trace_id:
                links.append(Link(header_span))
            event_id, event_type, name = event.id, event.type, event.type_name
            subject: str | None = event.subject
        else:  # undecodable: all there is to go by is the headers
            ctx = header_ctx
            event_id = (carrier or {}).get(ID_HEADER, "")
            event_type = name = (carrier or {}).get(TYPE_HEADER, "")
            subject = None
        attributes: dict[str, str] = {
            "messaging.system": "kafka",
            "messaging.destination.name": destination,
            "messaging.consumer.group.name": f"{self.topic_prefix}{self.consumer.name}",
            "shiplog.consumer": self.consumer.name,
            "shiplog.delivery": delivery,
            "shiplog.event.id": event_id,
            "shiplog.event.type": event_type,
        }
        if subject is not None:
            attributes["shiplog.deployment.id"] = subject
        with tracer.start_as_current_span(
            f"{self.consumer.name} handle {name}".rstrip(),
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        ) as span:
            yield span

    def _unwanted(self, event_type: str | None) -> bool:
        if not event_type or not self.consumer.accepts:
            return False
        try:
            name = split_type(event_type)[0]
        except InvalidEvent:
            return False  # a malformed type is decoded, and dead-lettered, as usual
        if name in self.consumer.accepts:
            return False
        # an unknown type is decoded (and dead-lettered) by the consumer guarding the topic
        return not (self.consumer.guards_unknown and not self.registry.knows(name))

    async def _process(self, msg: KafkaMessage) -> None:
        record = msg.raw_message
        topic: str = record.topic  # type: ignore[union-attr]
        carrier = {k: v.decode(errors="replace") for k, v in (record.headers or ())}  # type: ignore[union-attr]
        try:
            event = self.registry.decode(msg.body)
        except InvalidEvent as exc:
            with self._span(None, destination=topic, delivery="kafka", carrier=carrier) as span:
                span.set_status(Status(StatusCode.ERROR, exc.reason))
                await self._deadletter(msg, exc.reason, str(exc))
            return
        forward = self.forward_received is not None and event.id not in self._recent
        backoff = Backoff(self.backoff_initial, self.backoff_cap)
        with self._span(event, destination=topic, delivery="kafka", carrier=carrier) as span:
            while True:
                try:
                    await self.handle(event)
                    if forward and self.forward_received is not None:
                        # after recording it: the log shows the outside event before
                        # anything the other consumers do about it
                        self.forward_received([event], source=self)
                    return
                except Exception as exc:
                    if not _is_retryable(exc):
                        log.exception("%s: handler failed on %s", self.consumer.name, event.id)
                        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                        await self._deadletter(msg, "handler_error", f"{type(exc).__name__}: {exc}")
                        return
                    self.stats["retries"] += 1
                    # the exception's type only: its message may quote event data
                    span.add_event("retry", {"exception.type": type(exc).__name__})
                    delay = backoff.next_delay()
                    log.warning("%s: %s on %s; retrying in %.2fs", self.consumer.name, exc, event.id, delay)
                    await asyncio.sleep(delay)

    async def handle(self, event: CloudEvent, *, fresh: bool = False) -> None:
        """Steps 2-5 for one decoded event. Raises retryable errors to the caller.
        ``fresh``: the event was appended a moment ago in this process, so no handled
        record is expected — skip the look-up (the append still finds one, if any)."""
        if not self.consumer.wants(event):
            self.stats["skipped"] += 1
            _outcome("skipped")
            return
        handled = Handled(self.consumer.name, event.id)
        if event.id in self._recent or (
            not fresh and await self.log.is_handled(handled.consumer, handled.event_id)
        ):
            self.stats["duplicates"] += 1
            _outcome("duplicate")
            return
        if is_command(event.type_name):
            reason = verify(event, self.command_keys)
            if reason is not None:
                await self._refuse(event, reason)
                _outcome("refused")
                return
        if self.consumer.locate is not None:
            stream = await self.consumer.locate(self.ports, event)
        else:
            stream = self.consumer.stream_for(event)
        for _ in range(MAX_CONFLICT_RETRIES):
            version, state = await self._fold(stream)
            facts = await self.consumer.run_gather(self.ports, state, event)
            new = self.consumer.run_decide(state, event, self.clock(), **self.policy, **facts)
            try:
                result = await self.log.append(
                    stream, new, version, handled=handled, publish=self.consumer.publish
                )
            except ConcurrencyConflict:
                continue
            self.stats["duplicates" if result.duplicate else "handled"] += 1
            _outcome("duplicate" if result.duplicate else "handled")
            self._remember(event.id)
            if new and not result.duplicate and self.consumer.publish and self.on_appended is not None:
                self.on_appended(new)
            return
        raise ConcurrencyConflict(f"{MAX_CONFLICT_RETRIES} conflicts in a row on {stream}")

    async def _fold(self, stream: str) -> tuple[int, Any]:
        """The stream's version and this consumer's state at it: what was folded last
        time plus the events since, or the whole stream the first time."""
        version, state = self._folded.pop(stream, (0, _UNFOLDED))
        history = await self.log.read_stream(stream, after_version=version)
        if state is _UNFOLDED:
            state = self.consumer.fold([r.event for r in history])
        else:
            for record in history:
                state = self.consumer.evolve(state, record.event)
        if history:
            version = history[-1].stream_version
        self._folded[stream] = (version, state)
        if len(self._folded) > FOLDED_STREAMS:
            self._folded.popitem(last=False)
        return version, state

    async def _refuse(self, event: CloudEvent, reason: str) -> None:
        """Do not act on a command without a valid signature; the consumer that
        records (the recorder) records the refusal instead, once."""
        self.stats["refused"] += 1
        log.warning(
            "%s: refused command %s (%s, claiming actor %r): %s",
            self.consumer.name,
            event.id,
            event.type,
            event.actor,
            reason,
        )
        if self.consumer.refuse is None:
            return
        new = list(self.consumer.refuse(event, reason, now=self.clock()))
        await self.log.append(
            self.consumer.stream_for(event),
            new,
            None,
            handled=Handled(self.consumer.name, event.id),
            publish=self.consumer.publish,
        )
        self._remember(event.id)

    def _remember(self, event_id: str) -> None:
        """Ids whose handled record this shell has seen committed: their second
        arrival (Kafka after the fast path, a redelivery) needs no database look-up."""
        self._recent[event_id] = None
        if len(self._recent) > RECENT_HANDLED:
            self._recent.popitem(last=False)

    async def handle_local(self, event: CloudEvent) -> None:
        """The fast path: handle an event appended in this process. Any trouble is
        left to the Kafka delivery of the same event, which always follows. Its span
        has the parent the Kafka delivery's would have (``trace_context``)."""
        destination = topic_name(topic_for(event.type), self.topic_prefix)
        with self._span(event, destination=destination, delivery="local") as span:
            try:
                await self.handle(event, fresh=True)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                log.debug(
                    "%s: local handling of %s failed (%s); Kafka redelivers",
                    self.consumer.name,
                    event.id,
                    exc,
                )

    async def _deadletter(self, msg: KafkaMessage, reason: str, error: str) -> None:
        record = msg.raw_message
        key = record.key.decode(errors="replace") if record.key else None  # type: ignore[union-attr]
        letter = new_event(
            MessageDeadLettered(
                consumer=self.consumer.name,
                reason=reason,
                error=error[:4000],
                topic=record.topic,  # type: ignore[union-attr]
                partition=record.partition,  # type: ignore[union-attr]
                offset=record.offset,  # type: ignore[union-attr]
                key=key,
                headers={
                    k: v.decode(errors="replace")
                    for k, v in (record.headers or ())  # type: ignore[union-attr]
                },
                original=base64.b64encode(msg.body).decode(),
            ),
            source=f"shiplog/{self.consumer.name}",
            subject=key or "unknown",
        )
        backoff = Backoff(self.backoff_initial, self.backoff_cap)
        while True:
            try:
                await self.broker.publish(
                    letter.to_bytes(),
                    topic=topic_name(DEADLETTER, self.topic_prefix),
                    key=(key or "unknown").encode(),
                    headers={k: v.decode() for k, v in event_headers(letter.id, letter.type, None)}
                    | {"x-deadletter-reason": reason, "x-deadletter-consumer": self.consumer.name},
                )
                break
            except Exception as exc:
                if not _is_retryable(exc):
                    raise
                await asyncio.sleep(backoff.next_delay())
        self.stats["deadlettered"] += 1
        log.warning("%s: dead-lettered %s@%s: %s", self.consumer.name, record.topic, record.offset, error)  # type: ignore[union-attr]

    async def _commit(self, msg: KafkaMessage) -> None:
        """Commit past ``msg`` — whose work is in the log — soon, coalesced with the
        commits of the messages after it. Still at least once: only offsets of
        finished messages are committed (one message at a time per subscriber, so
        they are contiguous), and a redelivery finds its handled record."""
        consumer = getattr(msg, "consumer", None)
        record = msg.raw_message
        if self.commit_interval_s <= 0 or consumer is None:
            await self._ack_now(msg)
            return
        tp = TopicPartition(record.topic, record.partition)  # type: ignore[union-attr]
        self._pending.setdefault(consumer, {})[tp] = record.offset + 1  # type: ignore[union-attr]
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_soon(self.commit_interval_s))

    async def _ack_now(self, msg: KafkaMessage) -> None:
        try:
            await msg.ack()
        except KafkaError as exc:
            # The work is in the log with its handled record: a redelivery after
            # a failed commit finds it handled and appends nothing.
            log.warning("%s: offset commit failed (%s); redelivery is harmless", self.consumer.name, exc)

    async def flush_commits(self) -> None:
        """Commit what is finished now (before the broker stops)."""
        if self._committer is not None and not self._committer.done():
            self._committer.cancel()
        await self._commit_soon(0)

    async def _commit_soon(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        pending, self._pending = self._pending, {}
        for consumer, offsets in pending.items():
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:  # revoked meanwhile, broker away: redelivery is harmless
                log.warning("%s: offset commit failed (%s); redelivery is harmless", self.consumer.name, exc)
