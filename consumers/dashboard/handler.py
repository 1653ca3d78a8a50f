"""The dashboard's shell: a plain subscriber of the deployment topics feeding the hub.

Unlike the saga consumers it decides nothing and appends nothing, so it joins no
consumer group and commits no offsets: every dashboard process reads every
partition, from the end it found when it started (what came before is loaded from
the log, ``Hub.load``). Taking the end offsets *before* loading the log leaves no
gap; the overlap is dropped by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from consumers.dashboard.hub import Hub
from events.envelope import CloudEvent
from events.errors import AdapterUnavailable, InvalidEvent
from events.registry import REGISTRY
from events.topics import APPROVALS, BUILDS, COMMANDS, EXECUTIONS, PLANS, ROLLBACKS, VERIFICATIONS, topic_name

log = logging.getLogger(__name__)

#: what the dashboard shows: builds, and every topic a deployment's events travel on
TOPICS = (BUILDS, PLANS, APPROVALS, COMMANDS, EXECUTIONS, VERIFICATIONS, ROLLBACKS)
RETRY_S = 1.0


class DashboardFeed:
    def __init__(self, hub: Hub, bootstrap: str, topic_prefix: str = "", fetch_max_wait_ms: int = 500):
        self.hub = hub
        self.bootstrap = bootstrap
        self.topics = [topic_name(t, topic_prefix) for t in TOPICS]
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Connect and take every partition's end offset (call before ``Hub.load``)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            client_id="shiplog-dashboard",
        )
        try:
            await consumer.start()
            await consumer.topics()  # metadata of every topic
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)  # resolve the end now, not at the first fetch
        except KafkaError as exc:
            await consumer.stop()
            raise AdapterUnavailable(f"the dashboard could not subscribe at {self.bootstrap}: {exc}") from exc
        self._consumer = consumer

    async def run(self) -> None:
        """Hand every event to the hub until cancelled."""
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                except KafkaError as exc:
                    log.warning("dashboard subscription: %s; retrying", exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                events: list[CloudEvent] = []
                for records in batch.values():
                    for record in records:
                        if record.value is None:
                            continue
                        try:
                            events.append(REGISTRY.decode(record.value))
                        except InvalidEvent:
                            continue  # the recorder dead-letters what no one can read
                if events:
                    await self.hub.feed(events)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._consumer = None
