"""One release is one trace: every consumer's handling of every event from
build.completed to deployment.succeeded is a span of the trace derived from the
release id — whether Kafka or the in-process fast path delivered the event.

The whole system runs in this process (``run_components``) on the real broker and
database, deploying to a target defined here that acts at once (as the saga
benchmark's does), and the spans are read from an in-memory exporter."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.targets import Capabilities, Snapshot, Step, StepResult, TargetStatus, Track, register_target
from events.errors import InvalidInput
from shiplog.components import ALL
from shiplog.runner import EMBEDDED_SESSION_TIMEOUT_MS, Running, run_components, trace_exporters
from shiplog.settings import Settings
from tests.busutil import eventually

TARGET = "traced"
#: the consumers a release's events pass through on their way to production
HOPS = {"recorder", "planning", "approval", "execution", "verification"}
TERMINAL = {
    "shiplog.deployment.succeeded.v1",
    "shiplog.deployment.failed.v1",
    "shiplog.deployment.rolled_back.v1",
    "shiplog.deployment.rejected.v1",
    "shiplog.deployment.denied.v1",
}

PIPELINE = """\
service: {service}
pipeline: default
environments:
  - name: dev
    target:
      type: traced
    strategy:
      type: rolling
      replicas: 1
      batch_size: 1
      max_unavailable: 0
    gate:
      auto_approve:
        tests_failed_max: 0
    analysis:
      health: {{path: /healthz, successes: 1, timeout_s: 2, interval_s: 0.05}}
"""


class TracedTarget:
    """Applies every step at once and serves a health endpoint for what it runs."""

    TYPE = TARGET
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.serving: dict[tuple[str, str], str] = {}
        self.applied: dict[str, StepResult] = {}
        self._server: asyncio.Server | None = None

    async def _health_url(self) -> str:
        if self._server is None:

            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                with contextlib.suppress(Exception):
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                    await writer.drain()
                writer.close()

            self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self, *, stop_processes: bool = False) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        version = self.serving.get((service, environment))
        return Snapshot(service=service, environment=environment, version=version)

    async def apply(self, step: Step) -> StepResult:
        if step.step_id in self.applied:
            return self.applied[step.step_id].model_copy(update={"already_applied": True})
        release = step.release
        self.serving[(release.service, release.environment)] = release.version
        self.applied[step.step_id] = StepResult(step_id=step.step_id, ok=True)
        return self.applied[step.step_id]

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        version = self.serving.get((service, environment))
        if version is None:
            return TargetStatus(service=service, environment=environment, reachable=True)
        track = Track(version=version, role="stable", weight=100, urls=[await self._health_url()])
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=[track])

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        self.serving[(snapshot.service, snapshot.environment)] = snapshot.version or ""
        return StepResult(step_id=step_id, ok=True)


register_target(TARGET, lambda _config: TracedTarget())

_EXPORTER: InMemorySpanExporter | None = None


def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on this process's SDK provider. The global provider can
    be set once per process: if one is installed already (``setup_tracing`` of an
    earlier test), the exporter joins it; otherwise this installs the provider, and
    ``setup_tracing`` leaves it as it is."""
    global _EXPORTER
    if _EXPORTER is None:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        assert isinstance(trace.get_tracer_provider(), TracerProvider), "a non-SDK tracer provider is set"
        _EXPORTER = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    return _EXPORTER


def derived_trace_id(release_id: str) -> int:
    """The trace id producers.kafka.traceparent gives a release (not imported: this
    is the contract a tracing backend sees)."""
    return int(hashlib.sha256(release_id.encode()).hexdigest()[:32], 16)


def derived_span_id(event_id: str) -> int:
    return int(hashlib.sha256(event_id.encode()).hexdigest()[:16], 16)


def build_completed(service: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "ci/github/acme/traced",
        "type": "shiplog.build.completed.v1",
        "time": datetime.now(UTC).isoformat(),
        "subject": service,
        "datacontenttype": "application/json",
        "data": {
            "service": service,
            "version": "1.0.0",
            "artifact": f"registry.example.com/{service}:1.0.0",
            "digest": "sha256:" + "ab" * 32,
            "commit": "2" * 40,
            "branch": "main",
            "author": "carol",
            "pipeline": "default",
            "tests": {"passed": 10, "failed": 0, "coverage": 90.0},
            "security": {"critical": 0, "high": 0},
        },
    }


@contextlib.asynccontextmanager
async def running_system(settings: Settings) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_components(settings, ALL, stop, on_ready=ready.set_result))
    try:
        done, _ = await asyncio.wait([ready, task], timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "the components did not start"
        yield ready.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def terminal_event(bootstrap: str, topic: str, publish: Any) -> dict[str, Any]:
    """Publish (after positioning a reader on ``topic``) and return the first
    terminal deployment event read there."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"trace-{uuid.uuid4().hex}",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await reader.start()
    try:
        await publish()
        async with asyncio.timeout(90):
            async for record in reader:
                event = json.loads(record.value)
                if event["type"] in TERMINAL:
                    return dict(event)
    finally:
        await reader.stop()
    raise AssertionError("the reader stopped")


@pytest.mark.parametrize("local_dispatch", [True, False], ids=["fast-path", "kafka-only"])
async def test_one_trace_spans_build_completed_to_deployment_succeeded(
    kafka_bootstrap: str,
    postgres_dsn: str,
    topic_prefix: str,
    log_schema: str,
    tmp_path: Path,
    local_dispatch: bool,
) -> None:
    exporter = span_exporter()
    service = f"traced-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "pipelines"
    config.mkdir()
    (config / f"{service}.yaml").write_text(PIPELINE.format(service=service))
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=postgres_dsn,
        home=tmp_path / "home",
        log_schema=log_schema,
        topic_prefix=topic_prefix,
        config=config,
        metrics_port=0,
        api_port=0,
        kafka_fetch_max_wait_ms=25,
        kafka_session_timeout_ms=EMBEDDED_SESSION_TIMEOUT_MS,
        topic_partitions=1,
        local_dispatch=local_dispatch,
    )
    build = build_completed(service)

    def ours() -> list[ReadableSpan]:
        # this test's spans, told apart by its topic namespace, not by trace id
        return [
            s
            for s in exporter.get_finished_spans()
            if str((s.attributes or {}).get("messaging.destination.name", "")).startswith(topic_prefix)
        ]

    def handled(consumer: str, event_type: str) -> bool:
        return any(
            (s.attributes or {}).get("shiplog.consumer") == consumer
            and (s.attributes or {}).get("shiplog.event.type") == event_type
            for s in ours()
        )

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            # no traceparent header: an outside producer need not trace at all
            await producer.send_and_wait(
                f"{topic_prefix}shiplog.builds", json.dumps(build).encode(), key=service.encode()
            )
        finally:
            await producer.stop()

    try:
        async with running_system(settings):
            end = await terminal_event(kafka_bootstrap, f"{topic_prefix}shiplog.executions", publish)
            assert end["type"] == "shiplog.deployment.succeeded.v1", end
            # planning's handling of the success (the last hop) ends the release's work
            await eventually(
                lambda: handled("planning", end["type"]), 30, "planning to handle deployment.succeeded"
            )
    finally:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(postgres_dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{log_schema}" CASCADE')
            await conn.close()

    release_id = end["correlationid"]
    assert release_id == build["id"]  # a build without a correlation id starts its own release
    spans = ours()
    handlings = [s for s in spans if s.kind == trace.SpanKind.CONSUMER]
    consumers = {str((s.attributes or {})["shiplog.consumer"]) for s in handlings}
    assert consumers >= HOPS
    assert handled("recorder", build["type"]) and handled("planning", build["type"])
    assert {s.context.trace_id for s in spans if s.context is not None} == {derived_trace_id(release_id)}
    # whichever path delivered it, a handling sits under the event's publish span id
    for s in handlings:
        attributes = s.attributes or {}
        assert s.parent is not None
        assert s.parent.span_id == derived_span_id(str(attributes["shiplog.event.id"]))
        assert attributes["messaging.system"] == "kafka"
        assert {"shiplog.event.type", "shiplog.deployment.id", "messaging.destination.name"} <= set(
            attributes
        )
    # the relay's publications are in the trace too
    assert any(s.name.startswith("relay publish") for s in spans)
    deliveries = {(s.attributes or {})["shiplog.delivery"] for s in handlings}
    assert deliveries == ({"kafka", "local"} if local_dispatch else {"kafka"})


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        # the exporter list decides over an endpoint
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ["otlp"]),
    ],
)
def test_exporters_are_what_the_standard_variables_name(env: dict[str, str], exporters: list[str]) -> None:
    assert trace_exporters(env) == exporters


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_shiplog_cannot_use_is_refused_not_ignored(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        trace_exporters(env)
