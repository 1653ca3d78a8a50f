"""Kafka plumbing shared by everything that publishes: headers, topics, producers."""

from __future__ import annotations

import hashlib
import logging
import os

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.envelope import CONTENT_TYPE, CloudEvent
from events.errors import AdapterUnavailable
from events.topics import ALL_TOPICS, topic_name

log = logging.getLogger(__name__)

#: Header carrying the event id (the CloudEvents Kafka binding's name for it).
ID_HEADER = "ce_id"
TYPE_HEADER = "ce_type"
TRACEPARENT_HEADER = "traceparent"


def traceparent(event_id: str, correlationid: str | None) -> str:
    """A W3C traceparent putting every event of one release in one trace.

    The trace id is derived from the release's correlation id and the span id from
    the event id, so re-publishing an event (at least once) repeats the same header
    and a tracing backend shows a release as one trace without any stored state.
    """
    trace_id = hashlib.sha256((correlationid or event_id).encode()).hexdigest()[:32]
    span_id = hashlib.sha256(event_id.encode()).hexdigest()[:16]
    return f"00-{trace_id}-{span_id}-01"


def trace_context(event_id: str, correlationid: str | None) -> Context:
    """The OpenTelemetry context that ``traceparent`` names: what every span about
    this event (its publication, each consumer's handling of it, by Kafka or in
    process) is started under, so they agree without reading a header."""
    return TraceContextTextMapPropagator().extract({TRACEPARENT_HEADER: traceparent(event_id, correlationid)})


def headers(event_id: str, event_type: str, correlationid: str | None) -> list[tuple[str, bytes]]:
    return [
        ("content-type", CONTENT_TYPE.encode()),
        (ID_HEADER, event_id.encode()),
        (TYPE_HEADER, event_type.encode()),
        (TRACEPARENT_HEADER, traceparent(event_id, correlationid).encode()),
    ]


def new_producer(bootstrap: str, **kwargs: object) -> AIOKafkaProducer:
    """A producer for at-least-once, per-key ordered publishing.

    acks=all; no idempotence (the embedded broker has no InitProducerId) — order per
    partition still holds because aiokafka keeps one batch in flight per partition.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=15_000,
        client_id=f"shiplog-{os.getpid()}",
        **kwargs,
    )


async def publish_one(bootstrap: str, topic: str, event: CloudEvent) -> None:
    """Publish one event, keyed by its subject, and wait for the broker's
    acknowledgement (what a CLI or a CI job does). ``AdapterUnavailable`` on trouble."""
    producer = new_producer(bootstrap)
    try:
        await producer.start()
        await producer.send_and_wait(
            topic,
            value=event.to_bytes(),
            key=event.subject.encode(),
            headers=headers(event.id, event.type, event.correlationid),
        )
    except KafkaError as exc:
        raise AdapterUnavailable(f"could not publish to Kafka at {bootstrap}: {exc}") from exc
    finally:
        await producer.stop()


async def create_topics(
    bootstrap: str, prefix: str = "", replication: int = 1, partitions: int = 0
) -> list[str]:
    """Create every catalogued topic that does not exist yet; returns the names.
    ``partitions`` > 0 overrides the catalogue's count for every topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
    except KafkaError as exc:
        raise AdapterUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                topic_name(t, prefix),
                num_partitions=partitions or t.partitions,
                replication_factor=replication,
            )
            for t in ALL_TOPICS
            if topic_name(t, prefix) not in existing
        ]
        if wanted:
            # An already-existing topic comes back as error code 36 in the response
            # on some brokers and as an exception on others; both mean "there".
            try:
                await admin.create_topics(wanted)
            except KafkaError as exc:
                if "TopicAlreadyExists" not in type(exc).__name__:
                    raise AdapterUnavailable(f"could not create topics: {exc}") from exc
        return [topic_name(t, prefix) for t in ALL_TOPICS]
    finally:
        await admin.close()
