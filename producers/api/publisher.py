"""The API's producer: one long-lived Kafka producer for every command it publishes
(a producer per request would pay a connection and a metadata round trip each)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events.envelope import CloudEvent
from events.errors import AdapterUnavailable
from events.topics import COMMANDS, topic_name
from producers.kafka import headers, new_producer


class CommandPublisher:
    """Publishes commands on ``shiplog.commands``, keyed by subject, and waits for
    the broker's acknowledgement. ``AdapterUnavailable`` on Kafka trouble."""

    def __init__(self, bootstrap: str, topic_prefix: str = ""):
        self.bootstrap = bootstrap
        self.topic = topic_name(COMMANDS, topic_prefix)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = new_producer(self.bootstrap)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise AdapterUnavailable(f"could not connect to Kafka at {self.bootstrap}: {exc}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __call__(self, event: CloudEvent) -> None:
        if self._producer is None:
            raise AdapterUnavailable("the command publisher is not started")
        try:
            await self._producer.send_and_wait(
                self.topic,
                value=event.to_bytes(),
                key=event.subject.encode(),
                headers=headers(event.id, event.type, event.correlationid),
            )
        except KafkaError as exc:
            raise AdapterUnavailable(f"could not publish to Kafka at {self.bootstrap}: {exc}") from exc
