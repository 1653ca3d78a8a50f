"""The consumer shell, proven with the recorder, against the real broker and database."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.eventlog import PostgresEventLog
from consumers.recorder import RECORDER
from consumers.recorder.core import release_stream
from events import CloudEvent
from events.topics import BUILDS, DEADLETTER, topic_name
from producers.build import publish_build
from producers.kafka import create_topics
from shiplog.embedded import EmbeddedPostgres
from tests.busutil import consume, eventually, produce, running_shell, unique

BUILD = {"service": "checkout", "version": "1.4.2", "artifact": "reg/checkout:1.4.2"}
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "build.completed.v1.json"


async def test_recorder_takes_a_published_build_into_the_log(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    recorder = unique(RECORDER)
    async with running_shell(recorder, eventlog, kafka_bootstrap, topic_prefix) as shell:
        event = await publish_build(kafka_bootstrap, BUILD, topic_prefix=topic_prefix)
        await eventually(lambda: shell.stats["handled"] == 1, what="the build to be recorded")
    [recorded] = await eventlog.read_stream(release_stream(event))
    assert recorded.event == event
    assert recorded.publish is False  # it came from outside: never published again
    assert await eventlog.is_handled(recorder.name, event.id)
    assert (await eventlog.verify()).ok


async def test_a_build_with_unknown_fields_is_recorded_with_them(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    stored = json.loads(FIXTURE.read_text())
    async with running_shell(unique(RECORDER), eventlog, kafka_bootstrap, topic_prefix) as shell:
        await produce(kafka_bootstrap, topic_name(BUILDS, topic_prefix), json.dumps(stored).encode())
        await eventually(lambda: shell.stats["handled"] == 1)
    [recorded] = await eventlog.read_stream(f"release-{stored['id']}")
    assert recorded.event.data["ci_url"] == stored["data"]["ci_url"]


async def test_duplicate_delivery_leaves_one_event_and_one_handled_record(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    event = CloudEvent(source="ci/test", type="shiplog.build.completed.v1", subject="checkout", data=BUILD)
    recorder = unique(RECORDER)
    async with running_shell(recorder, eventlog, kafka_bootstrap, topic_prefix) as shell:
        for _ in range(3):
            await produce(kafka_bootstrap, topic_name(BUILDS, topic_prefix), event.to_bytes())
        await eventually(lambda: shell.stats["handled"] + shell.stats["duplicates"] == 3)
    assert shell.stats == {**shell.stats, "handled": 1, "duplicates": 2}
    assert len(await eventlog.read_stream(release_stream(event))) == 1
    async with eventlog.pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM handled WHERE consumer = $1 AND event_id = $2",
                recorder.name,
                event.id,
            )
            == 1
        )


def _envelope(**changes: object) -> bytes:
    base = json.loads(FIXTURE.read_text())
    for key, value in changes.items():
        if value is None:
            base.pop(key)
        else:
            base[key] = value
    return json.dumps(base).encode()


POISON = [
    pytest.param(b"\x00\x01 not json", "not_json", id="not-json"),
    pytest.param(b"\xff\xfe{}", "not_json", id="not-utf8"),
    pytest.param(b"[1, 2, 3]", "not_cloudevent", id="json-array"),
    pytest.param(b'{"hello": "world"}', "not_cloudevent", id="not-a-cloudevent"),
    pytest.param(_envelope(type="shiplog.build.exploded.v1"), "unknown_type", id="unknown-type"),
    pytest.param(_envelope(type="shiplog.build.completed.v9"), "unknown_type", id="unknown-version"),
    pytest.param(_envelope(data={"service": "checkout"}), "validation", id="failing-validation"),
    pytest.param(_envelope(time="yesterday"), "validation", id="bad-envelope-field"),
]


@pytest.mark.parametrize(("payload", "reason"), POISON)
async def test_poison_input_is_dead_lettered_with_reason_bytes_and_headers(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str, payload: bytes, reason: str
) -> None:
    recorder = unique(RECORDER)
    builds = topic_name(BUILDS, topic_prefix)
    async with running_shell(recorder, eventlog, kafka_bootstrap, topic_prefix) as shell:
        await produce(kafka_bootstrap, builds, payload, key=b"checkout", headers=[("x-ci", b"run-42")])
        [letter] = await consume(kafka_bootstrap, topic_name(DEADLETTER, topic_prefix), 1)
        # The offset was committed: a good event behind the poison is processed next.
        good = await publish_build(kafka_bootstrap, BUILD, topic_prefix=topic_prefix)
        await eventually(lambda: shell.stats["handled"] == 1)
    value = json.loads(letter.value)
    assert value["type"] == "shiplog.message.dead_lettered.v1"
    data = value["data"]
    assert data["reason"] == reason
    assert data["consumer"] == recorder.name
    assert data["topic"] == builds
    assert base64.b64decode(data["original"]) == payload
    assert data["headers"]["x-ci"] == "run-42"
    assert data["key"] == "checkout"
    assert dict(letter.headers)["x-deadletter-reason"] == reason.encode()
    assert data["error"]
    assert await eventlog.is_handled(recorder.name, good.id)
    assert not await eventlog.is_handled(recorder.name, json.loads(FIXTURE.read_text())["id"])


async def test_an_unknown_type_named_in_its_header_is_dead_lettered_not_skipped(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The recorder accepts only builds and commands, and skips other known types by
    their header; a type nobody knows is still dead-lettered (once, by the recorder)."""
    payload = _envelope(type="shiplog.build.completd.v1")
    async with running_shell(unique(RECORDER), eventlog, kafka_bootstrap, topic_prefix):
        await produce(
            kafka_bootstrap,
            topic_name(BUILDS, topic_prefix),
            payload,
            key=b"checkout",
            headers=[("ce_type", b"shiplog.build.completd.v1")],
        )
        [letter] = await consume(kafka_bootstrap, topic_name(DEADLETTER, topic_prefix), 1)
    assert json.loads(letter.value)["data"]["reason"] == "unknown_type"


def _exploding_decide(state: object, event: CloudEvent, *, now: datetime) -> list[CloudEvent]:
    raise ValueError(f"cannot decide on {event.id}")


async def test_non_retryable_handler_error_is_dead_lettered_then_committed(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    broken = unique(replace(RECORDER, decide=_exploding_decide))
    async with running_shell(broken, eventlog, kafka_bootstrap, topic_prefix) as shell:
        event = await publish_build(kafka_bootstrap, BUILD, topic_prefix=topic_prefix)
        [letter] = await consume(kafka_bootstrap, topic_name(DEADLETTER, topic_prefix), 1)
        await eventually(lambda: shell.stats["deadlettered"] == 1)
    data = json.loads(letter.value)["data"]
    assert data["reason"] == "handler_error"
    assert "ValueError: cannot decide on" in data["error"]
    assert json.loads(base64.b64decode(data["original"]))["id"] == event.id


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        partitions = probe.partitions_for_topic(topic) or set()
        total = 0
        for p in partitions:
            total += (await probe.committed(TopicPartition(topic, p))) or 0
        return total
    finally:
        await probe.stop()


async def test_database_stopped_mid_stream_commits_nothing_and_resumes(
    kafka_bootstrap: str, topic_prefix: str, log_schema: str, tmp_path: Path
) -> None:
    pg = EmbeddedPostgres.start(tmp_path / "pg")
    log = await PostgresEventLog.connect(pg.dsn, schema=log_schema)
    recorder = unique(RECORDER)
    builds = topic_name(BUILDS, topic_prefix)
    await create_topics(kafka_bootstrap, topic_prefix)
    try:
        async with running_shell(
            recorder, log, kafka_bootstrap, topic_prefix, backoff_initial=0.05, backoff_cap=0.5
        ) as shell:
            first = await publish_build(kafka_bootstrap, BUILD, topic_prefix=topic_prefix)
            await eventually(lambda: shell.stats["handled"] == 1)
            group = topic_prefix + recorder.name
            await eventually(lambda: _committed(kafka_bootstrap, group, builds), what="the commit")
            committed_before = await _committed(kafka_bootstrap, group, builds)
            assert committed_before == 1

            pg.stop()
            later = [
                await publish_build(
                    kafka_bootstrap, {**BUILD, "version": f"1.5.{i}"}, topic_prefix=topic_prefix
                )
                for i in range(3)
            ]
            await eventually(lambda: shell.stats["retries"] >= 3, what="retries while db is down")
            assert await _committed(kafka_bootstrap, topic_prefix + recorder.name, builds) == committed_before

            pg = EmbeddedPostgres.start(tmp_path / "pg")
            await eventually(lambda: shell.stats["handled"] == 4, timeout=30, what="processing to resume")
        assert await _committed(kafka_bootstrap, topic_prefix + recorder.name, builds) == 4
        for event in [first, *later]:
            assert await log.is_handled(recorder.name, event.id)
        assert shell.stats["deadlettered"] == 0
    finally:
        await log.close()
        pg.stop()
