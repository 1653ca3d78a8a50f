#!/usr/bin/env python3
"""shiplog benchmark: the deployment saga end to end, against a raw Kafka round trip.

A plain asyncio script, not a pytest module (run it with ``scripts/bench-saga`` or
``scripts/bench --only saga``; see ``tests/bench/README.md``, "The saga").

It starts the whole system in this process — ``run_components(settings, ALL, stop)``:
the outbox relay and every consumer — on an embedded Tansu broker and PostgreSQL
(``DATABASE_URL`` if set), with a temporary ``SHIPLOG_HOME`` and a config directory
of dev-only pipelines (``bench-<k>.yaml``, one per concurrent deployment: a lane
serialises the deployments of one service per environment and refuses an older
version). Each deploys with ``rolling`` to the ``instant`` target defined here
(it acts at once and records the step ids it applied), auto-approved
(``tests_failed_max: 0``). Its analysis is one health probe of a tiny endpoint the
instant target serves (``--health probe``, the default) or ``health: null``
(``--health null``, which planning drops from the plan today: see the README).

Then, for each concurrency ``c`` (default 1, 10, 100), ``c`` workers — worker ``k``
owns service ``bench-<k>`` — each publish a ``build.completed`` (versions 1.0.<i>,
increasing per service), wait for its ``deployment.succeeded`` on
``shiplog.executions`` (a plain aiokafka consumer on every topic), and publish the
next, until ``N`` deployments are done. Per deployment: publish -> deployment.succeeded
seen (p50, p99); per level: deployments/s over the level's wall time.

Baselines, same broker and run: one message produced (``send_and_wait``, the relay's
producer settings) and consumed by an already-positioned consumer, back to back; and
the same after an idle pause (as every saga hop starts), with aiokafka's default
``fetch_max_wait_ms`` (what the consumers use) and with a short one.

Where the time goes: every event of a deployment's causal chain (``causationid``)
is timed from the log's ``recorded_at``, the Kafka record's timestamp (the relay's
send) and this script's receipt of it, giving each hop's relay, Kafka and consumer
share; per consumer, the messages it received, skipped and handled and the time it
spent on them; the CPU of this process, PostgreSQL and Tansu; and one more pass
under cProfile, summed per library.

``--what-if-fetch-wait MS`` tries the first proposal by patching FastStream's
subscriber in this process (shiplog's code is not touched); the setup table says
when it was on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import itertools
import json
import logging
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from adapters.targets import (  # noqa: E402
    Capabilities,
    Snapshot,
    Step,
    StepResult,
    TargetStatus,
    Track,
    register_target,
)
from consumers.shell import ConsumerShell  # noqa: E402
from events.topics import ALL_TOPICS, BUILDS, topic_name  # noqa: E402
from producers.build import build_event  # noqa: E402
from producers.kafka import create_topics, headers, new_producer  # noqa: E402
from producers.relay import OutboxRelay  # noqa: E402
from shiplog.components import ALL  # noqa: E402
from shiplog.embedded import EmbeddedBroker  # noqa: E402
from shiplog.runner import (  # noqa: E402
    EMBEDDED_FETCH_WAIT_MS,
    EMBEDDED_SESSION_TIMEOUT_MS,
    Running,
    run_components,
)
from shiplog.settings import Settings  # noqa: E402
from tests.bench.common import bench_database, machine_env  # noqa: E402

#: aims from the issue (Benchmark section)
AIM_P50_S = 0.100
AIM_P99_S = 0.500
AIM_RATE = 50.0

DEFAULT_CONCURRENCY = (1, 10, 100)
#: deployments per level, by concurrency, unless --deployments says otherwise
DEFAULT_DEPLOYMENTS = {1: 40, 10: 150, 100: 400}
DEFAULT_BASELINE_N = 200
DEFAULT_WARMUP = 20
DEFAULT_PROFILE_CONCURRENCY = 10
DEFAULT_PROFILE_N = 100
#: a deployment not done after this long fails the run
DEPLOY_TIMEOUT_S = 120.0
#: aiokafka's default, which FastStream's subscribers (so shiplog's consumers) keep
AIOKAFKA_FETCH_MAX_WAIT_MS = 500
#: partitions per topic, as `shiplog dev` creates them on its embedded broker
BENCH_PARTITIONS = 1
#: this script's watcher: Tansu answers a long-polling fetch late when data arrives
#: (see README), and the watcher must not add that to every latency it measures
WATCH_FETCH_MAX_WAIT_MS = 10
#: the idle baselines pause up to this long before each send
IDLE_PAUSE_S = 0.3
DEFAULT_IDLE_BASELINE_N = 40
SUCCEEDED = "shiplog.deployment.succeeded"
#: what else ends a deployment (or a release before any deployment)
TERMINAL = (
    SUCCEEDED,
    "shiplog.deployment.rejected",
    "shiplog.deployment.failed",
    "shiplog.deployment.rolled_back",
    "shiplog.deployment.denied",
)

console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 150)


def progress(msg: str) -> None:
    console.print(f"[bold cyan]>[/] {msg}")


def type_name(event_type: str) -> str:
    """``shiplog.x.y.v1`` -> ``shiplog.x.y``."""
    return re.sub(r"\.v[0-9]+$", "", event_type)


def short(event_type: str) -> str:
    return type_name(event_type).removeprefix("shiplog.")


# -- the instant target ----------------------------------------------------------------


class InstantTarget:
    """A target that does everything at once and remembers it: ``apply`` records the
    step id (a re-applied id returns the recorded result, ``already_applied``),
    ``status`` is reachable with no tracks (so nothing to health-check), ``snapshot``
    and ``restore`` keep the version per (service, environment). Benchmark only."""

    TYPE = "instant"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.applied: dict[str, StepResult] = {}
        self.reapplied = 0
        self.serving: dict[tuple[str, str], str] = {}
        #: with ``--health probe``: where the serving version "runs" (``serve_health``)
        self.health_url: str | None = None
        self._server: asyncio.base_events.Server | None = None

    async def serve_health(self) -> str:
        """A minimal HTTP/1.1 server on 127.0.0.1 that answers 200 to anything, so
        that the serving version has an instance to health-check."""

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.health_url = f"http://127.0.0.1:{port}"
        return self.health_url

    async def close(self, *, stop_processes: bool = False) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.health_url = None

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        version = self.serving.get((service, environment))
        return Snapshot(service=service, environment=environment, version=version, state={"version": version})

    async def apply(self, step: Step) -> StepResult:
        if step.step_id in self.applied:
            self.reapplied += 1
            return self.applied[step.step_id].model_copy(update={"already_applied": True})
        release = step.release
        self.serving[(release.service, release.environment)] = release.version
        result = StepResult(step_id=step.step_id, ok=True, detail={"version": release.version})
        self.applied[step.step_id] = result
        return result

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        version = self.serving.get((service, environment))
        if self.health_url is None or version is None:
            return TargetStatus(service=service, environment=environment, reachable=True)
        track = Track(version=version, role="stable", weight=100, urls=[self.health_url])
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=[track])

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        if step_id in self.applied:
            self.reapplied += 1
            return self.applied[step_id].model_copy(update={"already_applied": True})
        key = (snapshot.service, snapshot.environment)
        if snapshot.version is None:
            self.serving.pop(key, None)
        else:
            self.serving[key] = snapshot.version
        result = StepResult(step_id=step_id, ok=True, detail={"version": snapshot.version})
        self.applied[step_id] = result
        return result


#: the one instance (the target pool asks the factory once per type)
INSTANT = InstantTarget()
register_target(InstantTarget.TYPE, lambda _config: INSTANT)

PIPELINE = """\
# shiplog saga benchmark: dev only, instant target, auto-approved, no health check
service: {service}
pipeline: default
environments:
  - name: dev
    target:
      type: instant
    strategy:
      type: rolling
      replicas: 1
      batch_size: 1
      max_unavailable: 0
    gate:
      auto_approve:
        tests_failed_max: 0
    analysis:
      health: {health}
"""
#: ``--health`` -> the pipeline's analysis.health
HEALTH = {
    # what the brief asks for; planning drops it today (see README, "The saga")
    "null": "null",
    # one probe of the instant target's health endpoint, as cheap as a check gets
    "probe": "{path: /healthz, successes: 1, timeout_s: 2, interval_s: 0.05}",
}


def write_pipelines(config: Path, services: Sequence[str], health: str) -> None:
    config.mkdir(parents=True, exist_ok=True)
    for service in services:
        (config / f"{service}.yaml").write_text(PIPELINE.format(service=service, health=HEALTH[health]))


# -- instrumentation (wrapping, not changing, product code in this process) -------------


@dataclass
class Busy:
    messages: int = 0
    handle_s: float = 0.0  # decode, dedupe, fold, gather, decide, append (and retries)
    commit_s: float = 0.0  # the offset commit after each message (AckPolicy.MANUAL)
    skipped: int = 0  # not a type it accepts: acked without a handled record
    handled: int = 0  # handled record written (with or without new events)

    @property
    def seconds(self) -> float:
        return self.handle_s + self.commit_s

    def minus(self, other: Busy) -> Busy:
        return Busy(
            self.messages - other.messages,
            self.handle_s - other.handle_s,
            self.commit_s - other.commit_s,
            self.skipped - other.skipped,
            self.handled - other.handled,
        )


#: consumer name -> what it received and how long it was busy with it
BUSY: dict[str, Busy] = defaultdict(Busy)
#: relay batches: [batches, events, seconds]
RELAY_STATS = [0, 0, 0.0]


def instrument() -> None:
    """Time ``ConsumerShell._process`` and ``_commit`` (all that ``on_message`` does
    but its span) and ``OutboxRelay._publish``, by wrapping them in this process.
    ``on_message`` itself is not wrapped: FastStream injects its argument by its
    signature."""
    process, commit, publish = ConsumerShell._process, ConsumerShell._commit, OutboxRelay._publish

    async def _process(self: ConsumerShell, msg: Any) -> None:
        started = time.perf_counter()
        try:
            await process(self, msg)
        finally:
            busy = BUSY[self.consumer.name]
            busy.messages += 1
            busy.handle_s += time.perf_counter() - started

    async def _commit(self: ConsumerShell, msg: Any) -> None:
        started = time.perf_counter()
        try:
            await commit(self, msg)
        finally:
            BUSY[self.consumer.name].commit_s += time.perf_counter() - started

    async def _publish(self: OutboxRelay, producer: Any, rows: Any) -> None:
        rows = list(rows)
        started = time.perf_counter()
        try:
            await publish(self, producer, rows)
        finally:
            if rows:
                RELAY_STATS[0] += 1
                RELAY_STATS[1] += len(rows)
                RELAY_STATS[2] += time.perf_counter() - started

    ConsumerShell._process = _process  # type: ignore[method-assign]
    ConsumerShell._commit = _commit  # type: ignore[method-assign]
    OutboxRelay._publish = _publish  # type: ignore[method-assign]


def what_if(fetch_max_wait_ms: int | None) -> None:
    """Try a proposed change without editing shiplog: every consumer's subscriber
    gets this ``fetch_max_wait_ms``. Off unless asked for; the setup table says when
    it was on. (FastStream's ``max_workers`` cannot be tried the same way: it refuses
    manual commits on a subscriber of more than one topic.)"""
    from faststream.kafka import KafkaBroker

    if fetch_max_wait_ms is None:
        return
    subscriber = KafkaBroker.subscriber

    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        return subscriber(self, *args, **{"fetch_max_wait_ms": fetch_max_wait_ms, **kwargs})

    KafkaBroker.subscriber = patched  # type: ignore[method-assign]


def busy_snapshot(running: Running) -> dict[str, Busy]:
    out = {k: Busy(v.messages, v.handle_s, v.commit_s) for k, v in BUSY.items()}
    for shell in running.shells:
        busy = out.setdefault(shell.consumer.name, Busy())
        busy.skipped = shell.stats["skipped"]
        busy.handled = shell.stats["handled"] + shell.stats["duplicates"]
    return out


# -- CPU of the three processes -----------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def proc_cpu(pid: int, *, children: bool = True) -> float | None:
    """CPU seconds of ``pid`` (and of its reaped children) from /proc; None if gone."""
    fields = _stat(pid)
    if fields is None:
        return None
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / _TICK


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of ``pid`` and every live descendant (PostgreSQL's backends)."""
    total = proc_cpu(pid)
    if total is None:
        return None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    todo, seen = [pid], {pid}
    while todo:
        current = todo.pop()
        for child, parent in parents.items():
            if parent == current and child not in seen:
                seen.add(child)
                todo.append(child)
                total += proc_cpu(child, children=False) or 0.0
    return total


@dataclass
class CpuMeter:
    """CPU seconds of this process, the broker and the database, between two reads."""

    broker_pid: int | None
    postgres_pid: int | None

    def read(self) -> dict[str, float | None]:
        return {
            "python": time.process_time(),
            "tansu": proc_cpu(self.broker_pid) if self.broker_pid else None,
            "postgres": tree_cpu(self.postgres_pid) if self.postgres_pid else None,
        }


def postmaster_pid(pgdata: Path) -> int | None:
    for candidate in [pgdata / "postmaster.pid", *pgdata.rglob("postmaster.pid")]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(candidate.read_text().split()[0])
    return None


# -- watching the topics ------------------------------------------------------------------


@dataclass
class Seen:
    type: str
    kafka_ts: float  # the record's timestamp (the producer's send), seconds
    received: float  # wall clock when this script got it


class Watcher:
    """A plain aiokafka consumer on every shiplog topic (assigned, no group): resolves
    each waiting build's future on its release's terminal event, and remembers when
    every event was sent and received (for the hop breakdown)."""

    def __init__(self, bootstrap: str, prefix: str):
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.seen: dict[str, Seen] = {}
        self.waiting: dict[str, asyncio.Future[tuple[str, float, dict[str, Any]]]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=WATCH_FETCH_MAX_WAIT_MS,
        )
        await self._consumer.start()
        parts = [
            TopicPartition(topic_name(t, self.prefix), p) for t in ALL_TOPICS for p in range(BENCH_PARTITIONS)
        ]
        self._consumer.assign(parts)
        await self._consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._run(), name="watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def expect(self, release_id: str) -> asyncio.Future[tuple[str, float, dict[str, Any]]]:
        future: asyncio.Future[tuple[str, float, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self.waiting[release_id] = future
        return future

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            now_perf, now_wall = time.perf_counter(), time.time()
            for records in batch.values():
                for record in records:
                    hdrs = {k: v.decode() for k, v in record.headers or ()}
                    event_id, event_type = hdrs.get("ce_id"), hdrs.get("ce_type", "")
                    if event_id is None:
                        continue
                    self.seen.setdefault(event_id, Seen(event_type, record.timestamp / 1000, now_wall))
                    name = type_name(event_type)
                    if name in TERMINAL:
                        body = json.loads(record.value)
                        future = self.waiting.pop(body.get("correlationid") or "", None)
                        if future is not None and not future.done():
                            future.set_result((name, now_perf, body))


# -- the run ------------------------------------------------------------------------------


@dataclass
class Deployment:
    service: str
    version: str
    release_id: str
    published_wall: float
    latency: float | None = None
    outcome: str = ""


@dataclass
class Level:
    concurrency: int
    deployments: list[Deployment] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float | None] = field(default_factory=dict)
    busy: dict[str, Busy] = field(default_factory=dict)
    relay: tuple[int, int, float] = (0, 0, 0.0)
    hops: list[dict[str, Any]] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    events_per_deployment: float = 0.0
    kafka_messages_per_deployment: float = 0.0
    handled_per_deployment: float = 0.0
    events_by_type: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> list[Deployment]:
        return [d for d in self.deployments if d.outcome == SUCCEEDED and d.latency is not None]

    @property
    def latencies(self) -> list[float]:
        return sorted(d.latency for d in self.ok if d.latency is not None)

    @property
    def rate(self) -> float:
        return len(self.ok) / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass
class Bench:
    settings: Settings
    running: Running
    watcher: Watcher
    cpu: CpuMeter
    producer: Any
    versions: Counter[str] = field(default_factory=Counter)
    #: appended to the error when a deployment does not succeed
    hint: str = ""

    async def deploy_one(self, service: str, level: Level) -> None:
        self.versions[service] += 1
        version = f"1.0.{self.versions[service]}"
        event = build_event(
            {
                "service": service,
                "version": version,
                "artifact": f"registry.example.com/{service}:{version}",
                "commit": uuid.uuid4().hex[:12],
                "branch": "main",
                "author": "bench",
                "tests": {"passed": 10, "failed": 0, "coverage": 90.0},
                "security": {"critical": 0, "high": 0},
            },
            source="bench/saga",
        )
        release_id = event.correlationid or event.id
        future = self.watcher.expect(release_id)
        dep = Deployment(service, version, release_id, time.time())
        level.deployments.append(dep)
        started = time.perf_counter()
        await self.producer.send_and_wait(
            topic_name(BUILDS, self.settings.topic_prefix),
            value=event.to_bytes(),
            key=service.encode(),
            headers=headers(event.id, event.type, event.correlationid),
        )
        try:
            outcome, done, body = await asyncio.wait_for(future, DEPLOY_TIMEOUT_S)
        except TimeoutError:
            dep.outcome = "timeout"
            raise RuntimeError(
                f"{service} {version}: no terminal event within {DEPLOY_TIMEOUT_S:.0f}s"
            ) from None
        dep.outcome = outcome
        dep.latency = done - started
        if outcome != SUCCEEDED:
            why = json.dumps(body.get("data"), default=str)[:2000]
            raise RuntimeError(
                f"{service} {version} ended in {short(outcome)}, not deployment.succeeded: {why}{self.hint}"
            )

    async def run_level(self, concurrency: int, n: int, *, quiet: bool = False) -> Level:
        level = Level(concurrency)
        remaining = [n]

        async def worker(k: int) -> None:
            service = f"bench-{k}"
            while remaining[0] > 0:
                remaining[0] -= 1
                await self.deploy_one(service, level)

        gc.collect()
        cpu0, busy0, relay0 = self.cpu.read(), busy_snapshot(self.running), tuple(RELAY_STATS)
        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        level.wall = time.perf_counter() - started
        cpu1, busy1 = self.cpu.read(), busy_snapshot(self.running)
        level.cpu = {
            k: (cpu1[k] - cpu0[k]) / level.wall  # type: ignore[operator]
            if cpu0[k] is not None and cpu1[k] is not None
            else None
            for k in cpu0
        }
        level.busy = {name: b.minus(busy0.get(name, Busy())) for name, b in busy1.items()}
        level.relay = (
            int(RELAY_STATS[0] - relay0[0]),
            int(RELAY_STATS[1] - relay0[1]),
            RELAY_STATS[2] - relay0[2],
        )
        if not quiet:
            console.print(
                f"  c={concurrency}: {len(level.ok)} deployments in {level.wall:.1f}s,"
                f" {level.rate:.1f}/s, p50 {level.pct(50) * 1000:.0f} ms, p99 {level.pct(99) * 1000:.0f} ms",
                style="dim",
            )
        return level


@dataclass
class Baseline:
    name: str
    what: str
    samples: list[float]  # sorted, seconds


async def kafka_round_trip(
    bootstrap: str, n: int, *, fetch_max_wait_ms: int = AIOKAFKA_FETCH_MAX_WAIT_MS, pause: float = 0.0
) -> list[float]:
    """``n`` sequential produce -> consume round trips of one build-sized message,
    after 5 untimed ones: the relay's producer settings (``new_producer``), a consumer
    already assigned and positioned. ``pause``: wait a random 0..pause seconds before
    each send, as a saga hop's consumer has been idle before its next message."""
    prefix = f"rtt{uuid.uuid4().hex[:8]}."
    await create_topics(bootstrap, prefix, partitions=BENCH_PARTITIONS)
    topic = topic_name(BUILDS, prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
    )
    producer = new_producer(bootstrap)
    await consumer.start()
    await producer.start()
    rng = random.Random(n)
    try:
        parts = [TopicPartition(topic, p) for p in range(BENCH_PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        value = b"x" * 900
        out: list[float] = []
        for i in range(n + 5):
            if pause:
                await asyncio.sleep(rng.uniform(0, pause))
            started = time.perf_counter()
            await producer.send_and_wait(topic, value=value, key=f"bench-{i % 100}".encode())
            await consumer.getone()
            if i >= 5:
                out.append(time.perf_counter() - started)
        return sorted(out)
    finally:
        await producer.stop()
        await consumer.stop()


async def baselines(bootstrap: str, n: int, idle_n: int) -> list[Baseline]:
    out = [
        Baseline(
            "raw Kafka round trip",
            f"send_and_wait + getone, back to back (fetch_max_wait_ms {AIOKAFKA_FETCH_MAX_WAIT_MS},"
            " aiokafka's and FastStream's default)",
            await kafka_round_trip(bootstrap, n),
        )
    ]
    if idle_n:
        for wait in (AIOKAFKA_FETCH_MAX_WAIT_MS, WATCH_FETCH_MAX_WAIT_MS):
            out.append(
                Baseline(
                    f"  after 0-{IDLE_PAUSE_S * 1000:.0f} ms idle, fetch wait {wait}",
                    f"the same after a random 0-{IDLE_PAUSE_S * 1000:.0f} ms pause (an idle consumer, as"
                    f" before each saga hop), fetch_max_wait_ms {wait}",
                    await kafka_round_trip(bootstrap, idle_n, fetch_max_wait_ms=wait, pause=IDLE_PAUSE_S),
                )
            )
    return out


# -- where the time goes: the causal chain from the log --------------------------------------


async def analyse_log(bench: Bench, level: Level, dsn: str) -> None:
    """Events, Kafka messages and handled records per deployment, and the causal chain
    of each with its per-hop timing (relay: recorded -> sent; broker: sent -> seen
    here; consumer: seen -> the consumer's reaction recorded)."""
    releases = [d.release_id for d in level.ok]
    published = {d.release_id: d.published_wall for d in level.ok}
    conn = await asyncpg.connect(dsn, server_settings={"search_path": bench.settings.log_schema})
    try:
        rows = await conn.fetch(
            "SELECT event_id, event_type, correlation_id, recorded_at, publish, body FROM events"
            " WHERE correlation_id = ANY($1::text[]) ORDER BY position",
            releases,
        )
        handled = await conn.fetchval(
            "SELECT count(*) FROM handled h JOIN events e ON e.event_id = h.event_id"
            " WHERE e.correlation_id = ANY($1::text[])",
            releases,
        )
    finally:
        await conn.close()
    n = max(1, len(releases))
    level.events_per_deployment = len(rows) / n
    level.kafka_messages_per_deployment = (sum(1 for r in rows if r["publish"]) + len(releases)) / n
    level.handled_per_deployment = handled / n
    level.events_by_type = {short(t): c / n for t, c in Counter(r["event_type"] for r in rows).most_common()}
    events: dict[str, dict[str, Any]] = {}
    for r in rows:
        body = json.loads(r["body"])
        data = body.get("data") or {}
        index = data.get("index", data.get("step_index"))
        events[r["event_id"]] = {
            "type": r["event_type"],
            "label": short(r["event_type"]) + (f"[{index}]" if index is not None else ""),
            "recorded": r["recorded_at"].timestamp(),
            "cause": body.get("causationid"),
            "by": (body.get("source") or "").removeprefix("shiplog/"),
            "corr": r["correlation_id"],
        }
    chains: dict[tuple[str, ...], list[list[dict[str, float]]]] = defaultdict(list)
    seen = bench.watcher.seen
    for e_id, e in events.items():
        if type_name(e["type"]) != SUCCEEDED or e["corr"] not in published:
            continue
        chain = [e_id]
        while (cause := events[chain[-1]]["cause"]) in events and len(chain) < 100:
            chain.append(cause)
        chain.reverse()  # build.completed ... deployment.succeeded
        hops: list[dict[str, float]] = []
        for p_id, e_next in itertools.pairwise(chain):
            p, nxt = events[p_id], events[e_next]
            sent = seen.get(p_id)
            if sent is None:
                break
            origin = published[e["corr"]] if p["by"] == "" or p_id == e["corr"] else p["recorded"]
            hops.append(
                {
                    "relay": sent.kafka_ts - origin,
                    "broker": sent.received - sent.kafka_ts,
                    "consumer": nxt["recorded"] - sent.received,
                    "total": nxt["recorded"] - origin,
                }
            )
        last = seen.get(chain[-1])
        if last is None or len(hops) != len(chain) - 1:
            continue
        hops.append(
            {
                "relay": last.kafka_ts - e["recorded"],
                "broker": last.received - last.kafka_ts,
                "consumer": 0.0,
                "total": last.received - e["recorded"],
            }
        )
        labels = (
            *(
                f"{events[a]['label']} -> {events[b]['label']}|{events[b]['by']}"
                for a, b in itertools.pairwise(chain)
            ),
            f"{events[chain[-1]]['label']} -> (seen here)|relay",
        )
        chains[labels].append(hops)
    if not chains:
        return
    labels, samples = max(chains.items(), key=lambda kv: len(kv[1]))
    level.chain = [label.split("|")[0] for label in labels]
    for i, label in enumerate(labels):
        what, by = label.split("|")
        level.hops.append(
            {"hop": what, "by": by}
            | {
                k: statistics.median(s[i][k] for s in samples)
                for k in ("relay", "broker", "consumer", "total")
            }
        )


# -- profile -----------------------------------------------------------------------------------

_PROJECT = re.compile(r"/(consumers|adapters|producers|shiplog|events)/")
#: own time is summed per area: the first pattern that matches "file:function" wins
_AREAS: tuple[tuple[str, str], ...] = (
    # builtins have no file: struct packing, BytesIO reads and bytes joins are (almost
    # all) the Kafka protocol's
    (
        "aiokafka: Kafka client (fetch, commit, produce, protocol)",
        r"aiokafka|_struct\.Struct|_io\.BytesIO|'join' of 'bytes'",
    ),
    ("logging: debug calls below the level (aiokafka's, per partition)", r"/logging/"),
    ("FastStream + fast_depends: subscriber loop, DI, middlewares", r"faststream|fast_depends"),
    ("asyncpg: PostgreSQL client", r"asyncpg"),
    ("pydantic: validation, serialisation", r"pydantic"),
    ("OpenTelemetry: a span per message", r"opentelemetry"),
    ("aiohttp: health probes", r"aiohttp|yarl|multidict"),
    ("shiplog: consumers, log, relay, events", r"/(consumers|adapters|producers|shiplog|events)/"),
    ("idle: waiting in epoll (wall-clock profile)", r"select\.epoll"),
    ("event loop: callbacks, tasks, transports", r"asyncio|selectors|_contextvars|_asyncio"),
    ("sockets: send / recv", r"_socket\.socket|ssl"),
    ("json / hashing / uuid / other stdlib", r"json|hashlib|_hashlib|uuid|re\.py|_sre|datetime|zoneinfo"),
)


OTHER_AREA = "other: builtins (dict, len, isinstance, ...) called from all of the above"


def profile_text(profiler: cProfile.Profile, top: int) -> dict[str, str]:
    """The profile as text: shiplog's own functions and everything else by cumulative
    time (the event loop's own frames left out: they contain everything), the top by
    own time, and own time summed per area (library)."""
    stats = pstats.Stats(profiler)
    if os.environ.get("SHIPLOG_BENCH_PSTATS"):
        stats.dump_stats(os.environ["SHIPLOG_BENCH_PSTATS"])
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values()) or 1.0

    def where(key: Any) -> str:
        file, line, name = key
        path = re.sub(r".*site-packages/", "", file.replace(str(ROOT) + "/", ""))
        return f"{name} ({path}:{line})" if file != "~" else name

    def rows(keys: list[Any]) -> str:
        out = [f"{'cum s':>8} {'own s':>8} {'calls':>9}  function"]
        for key in keys[:top]:
            _cc, nc, tt, ct, _ = table[key]
            out.append(f"{ct:8.3f} {tt:8.3f} {nc:9d}  {where(key)}")
        return "\n".join(out)

    keys = list(table)
    by_cum = sorted(keys, key=lambda k: table[k][3], reverse=True)
    loop = re.compile(r"asyncio/(base_events|events|runners|tasks)\.py|_contextvars|bench_saga\.py")
    everything = [k for k in by_cum if not loop.search(f"{k[0]}:{k[2]}")]
    project = [k for k in by_cum if _PROJECT.search(k[0]) and "site-packages" not in k[0]]
    own = sorted(keys, key=lambda k: table[k][2], reverse=True)
    areas: Counter[str] = Counter()
    for key in keys:
        text = f"{key[0]}:{key[2]}"
        area = next((name for name, pattern in _AREAS if re.search(pattern, text)), OTHER_AREA)
        areas[area] += table[key][2]
    area_lines = [f"{'own s':>8} {'share':>6}  area"]
    area_lines += [f"{sec:8.2f} {sec / total:6.0%}  {name}" for name, sec in areas.most_common()]
    return {
        "project_by_cumulative": rows(project),
        "by_cumulative": rows(everything),
        "by_own": f"(total own time {total:.2f}s)\n" + rows(own),
        "by_area": "\n".join(area_lines),
    }


# -- report -------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds * 1000:,.1f}"


def report(levels: list[Level], bases: list[Baseline], env: dict[str, str]) -> list[Table]:
    rtt = bases[0].samples if bases else []
    rtt50 = percentile(rtt, 50)
    table = Table(
        title="shiplog saga: build.completed -> deployment.succeeded (dev, rolling, instant target)",
        caption="latency: publish of build.completed until deployment.succeeded arrives on"
        " shiplog.executions; x RTT: p50 / the back-to-back raw round trip's p50",
    )
    for col, just in (
        ("row", "left"),
        ("n", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("max ms", "right"),
        ("per s", "right"),
        ("x RTT", "right"),
        ("hops", "right"),
        ("aims p50 / p99 / rate", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for base in bases:
        table.add_row(
            base.name,
            f"{len(base.samples):,}",
            ms(percentile(base.samples, 50)),
            ms(percentile(base.samples, 99)),
            ms(base.samples[-1] if base.samples else None),
            f"{1 / statistics.mean(base.samples):,.0f}" if base is bases[0] and base.samples else "",
            f"{percentile(base.samples, 50) / rtt50:,.1f}" if rtt else "-",
            "1",
            "",
            style=None if base is bases[0] else "dim",
        )
    for lv in levels:
        lat = lv.latencies
        marks = [lv.pct(50) <= AIM_P50_S, lv.pct(99) <= AIM_P99_S, lv.rate >= AIM_RATE]
        table.add_row(
            f"saga, concurrency {lv.concurrency}",
            f"{len(lv.ok):,}",
            ms(lv.pct(50)),
            ms(lv.pct(99)),
            ms(lat[-1] if lat else None),
            f"{lv.rate:,.1f}",
            f"{lv.pct(50) / rtt50:,.0f}" if rtt else "-",
            str(len(lv.chain)) if lv.chain else "-",
            " / ".join("[green]met[/]" if m else "[bold red]MISSED[/]" for m in marks),
        )
    tables = [table]

    if levels and levels[0].hops:
        first = levels[0]
        hops = Table(
            title="where the time goes: one deployment's causal chain, median per hop (ms)",
            caption="relay: recorded in the log -> the relay's send; kafka: send -> this script's"
            f" reader (fetch_max_wait_ms {WATCH_FETCH_MAX_WAIT_MS}) has it; consumer: the rest until"
            " the reacting consumer's events are recorded — its own fetch wait, the messages ahead"
            " of it, and its handling",
        )
        hops.add_column("#", justify="right")
        hops.add_column("hop (cause -> reaction)", no_wrap=True)
        hops.add_column("by", no_wrap=True)
        for col in ("relay", "kafka", "consumer"):
            hops.add_column(f"{col} c={first.concurrency}", justify="right")
        for lv in levels:
            hops.add_column(f"total c={lv.concurrency}", justify="right")
        for i, hop in enumerate(first.hops):
            cells = [
                str(i + 1),
                hop["hop"],
                hop["by"],
                ms(hop["relay"]),
                ms(hop["broker"]),
                ms(hop["consumer"]),
            ]
            cells += [ms(lv.hops[i]["total"]) if i < len(lv.hops) else "-" for lv in levels]
            hops.add_row(*cells)
        sums = ["", "sum of the medians", ""]
        sums += [ms(sum(h[c] for h in first.hops)) for c in ("relay", "broker", "consumer")]
        sums += [ms(sum(h["total"] for h in lv.hops)) if lv.hops else "-" for lv in levels]
        hops.add_row(*sums, style="bold")
        tables.append(hops)

    if levels:
        first = levels[0]
        n0 = max(1, len(first.ok))
        work = Table(
            title=f"work per deployment (c={first.concurrency}) and how busy each consumer is",
            caption="msgs: messages received; skipped: not a type it reacts to (decoded, acked);"
            " handled: a handled record written (an append, maybe of no events); handle / commit:"
            " ms per message in the shell's handling / its offset commit; busy: share of the wall"
            " time spent on messages — each consumer takes one message at a time",
        )
        work.add_column("component", no_wrap=True)
        for col in ("msgs", "skipped", "handled", "handle ms", "commit ms"):
            work.add_column(col, justify="right")
        for lv in levels:
            work.add_column(f"busy c={lv.concurrency}", justify="right")
        names = sorted(first.busy, key=lambda name: -first.busy[name].seconds)
        for name in names:
            b = first.busy[name]
            cells = [
                name,
                f"{b.messages / n0:.1f}",
                f"{b.skipped / n0:.1f}",
                f"{b.handled / n0:.1f}",
                ms(b.handle_s / b.messages) if b.messages else "-",
                ms(b.commit_s / b.messages) if b.messages else "-",
            ]
            cells += [
                f"{lv.busy.get(name, Busy()).seconds / lv.wall:.0%}" if lv.wall else "-" for lv in levels
            ]
            work.add_row(*cells)
        batches, events, seconds = first.relay
        cells = [
            "relay",
            f"{events / n0:.1f}",
            "",
            "",
            f"{ms(seconds / batches)} / batch of {events / batches:.1f}" if batches else "-",
            "",
        ]
        cells += [f"{lv.relay[2] / lv.wall:.0%}" if lv.wall else "-" for lv in levels]
        work.add_row(*cells)
        for key in ("python", "postgres", "tansu"):
            cells = [f"CPU {key}", "", "", "", "", ""]
            cells += [f"{v:.0%}" if (v := lv.cpu.get(key)) is not None else "n/a" for lv in levels]
            work.add_row(*cells, style="dim")
        # CPU per deployment: steadier than rates on a shared machine (others' load
        # stretches the wall time, not this process's CPU seconds)
        for key in ("python", "postgres", "tansu"):
            cells = [f"CPU ms/deploy {key}", "", "", "", "", ""]
            cells += [
                ms(v * lv.wall / len(lv.deployments))
                if (v := lv.cpu.get(key)) is not None and lv.deployments
                else "n/a"
                for lv in levels
            ]
            work.add_row(*cells, style="dim")
        tables.append(work)

    setup = Table(title="setup", show_header=False)
    setup.add_column("key", no_wrap=True)
    setup.add_column("value")
    for key, value in env.items():
        setup.add_row(key, escape(value))
    if levels:
        lv = levels[0]
        setup.add_row(
            "per deployment",
            f"{lv.events_per_deployment:.1f} events in the log, {lv.kafka_messages_per_deployment:.1f}"
            f" Kafka messages (the build included), {lv.handled_per_deployment:.1f} handled records",
        )
    for base in bases:
        setup.add_row(base.name.strip(), escape(base.what))
    tables.append(setup)
    return tables


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench-saga",
        description="The deployment saga end to end (all consumers in-process, instant target),"
        " against a raw Kafka round trip.",
    )
    p.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCY)),
        help="comma-separated builds in flight at once, one level each (default 1,10,100)",
    )
    p.add_argument(
        "--deployments",
        type=int,
        metavar="N",
        help="deployments per level (default 40 at c=1, 150 at c=10, 400 at c=100, else 4*c)",
    )
    p.add_argument(
        "--baseline", type=int, default=DEFAULT_BASELINE_N, help="raw round trips back to back (default 200)"
    )
    p.add_argument(
        "--idle-baseline",
        type=int,
        default=DEFAULT_IDLE_BASELINE_N,
        help="raw round trips after an idle pause, per fetch wait (default 40; 0: skip)",
    )
    p.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="untimed deployments first (default 20)"
    )
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip the ANALYZE after the warm-up (a brand-new log's cached plans; see README)",
    )
    p.add_argument(
        "--health",
        choices=sorted(HEALTH),
        default="probe",
        help="the pipelines' analysis.health: probe (default: one HTTP probe of the instant"
        " target's endpoint) or null (no health check; rolls back until planning keeps the null,"
        " see README)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the extra pass under cProfile")
    p.add_argument(
        "--profile-concurrency",
        type=int,
        default=DEFAULT_PROFILE_CONCURRENCY,
        help="concurrency of the profiled pass (default 10)",
    )
    p.add_argument(
        "--profile-deployments",
        type=int,
        default=DEFAULT_PROFILE_N,
        help="deployments profiled (default 100)",
    )
    p.add_argument("--top", type=int, default=25, help="functions listed per profile table (default 25)")
    p.add_argument(
        "--what-if-fetch-wait",
        type=int,
        metavar="MS",
        help="WHAT-IF: give every consumer's subscriber this fetch_max_wait_ms (patched in this"
        " process; shiplog's code is not changed)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when an aim is missed")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency takes numbers like 1,10,100")
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency: every level must be at least 1")
    return args


async def run(
    args: argparse.Namespace, dsn: str, bootstrap: str, workdir: Path, cpu: CpuMeter, env: dict[str, str]
) -> tuple[list[Level], list[Baseline], dict[str, Any] | None]:
    run_id = uuid.uuid4().hex[:8]
    config = workdir / "pipelines"
    width = max(
        [*args.levels, args.profile_concurrency if not args.no_profile else 1, min(args.warmup, 10) or 1]
    )
    write_pipelines(config, [f"bench-{k}" for k in range(width)], args.health)
    if args.health == "probe":
        env["instant target health"] = f"probed at {await INSTANT.serve_health()}/healthz (successes: 1)"
    else:
        env["instant target health"] = "analysis health: null, status has no tracks"
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        database_url=dsn,
        home=workdir / "home",
        log_schema=f"bench_{run_id}_saga",
        topic_prefix=f"bench{run_id}.",
        config=config,
        metrics_port=0,
        api_port=0,
        # as `shiplog dev` does against the embedded broker
        kafka_fetch_max_wait_ms=EMBEDDED_FETCH_WAIT_MS,
        kafka_session_timeout_ms=EMBEDDED_SESSION_TIMEOUT_MS,
        topic_partitions=BENCH_PARTITIONS,
    )
    conn = await asyncpg.connect(dsn)
    try:
        env["server"] = "PostgreSQL " + str(await conn.fetchval("SHOW server_version"))
        env["synchronous_commit"] = str(await conn.fetchval("SHOW synchronous_commit"))
    finally:
        await conn.close()

    progress(
        f"baselines: {args.baseline} raw Kafka round trips back to back, {args.idle_baseline} after"
        f" an idle pause with fetch_max_wait_ms {AIOKAFKA_FETCH_MAX_WAIT_MS} and {WATCH_FETCH_MAX_WAIT_MS}"
    )
    bases = await baselines(bootstrap, args.baseline, args.idle_baseline)
    rtt_before = list(bases[0].samples)

    progress(f"starting every component in-process ({', '.join(ALL)}); {width} pipelines")
    await create_topics(bootstrap, settings.topic_prefix, partitions=settings.topic_partitions)
    instrument()
    what_if(args.what_if_fetch_wait)
    if args.what_if_fetch_wait is not None:
        env["WHAT-IF (not shiplog as it is)"] = (
            f"consumers' subscribers patched in this process: fetch_max_wait_ms {args.what_if_fetch_wait}"
        )
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    system = asyncio.create_task(
        run_components(settings, ALL, stop, on_ready=lambda r: ready.set_result(r)), name="shiplog"
    )
    watcher = Watcher(bootstrap, settings.topic_prefix)
    producer = new_producer(bootstrap)
    levels: list[Level] = []
    profile: dict[str, Any] | None = None
    try:
        started = time.perf_counter()
        waiting: list[asyncio.Future[Any]] = [system, ready]
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if system in done:
            system.result()
            raise RuntimeError("the components stopped before they were ready")
        env["components ready in"] = f"{time.perf_counter() - started:.1f}s"
        await watcher.start()
        await producer.start()
        bench = Bench(settings, ready.result(), watcher, cpu, producer)
        if args.health == "null":
            bench.hint = (
                " -- with --health null: if the reason is a health check, planning dropped"
                " `health: null` from the plan (see tests/bench/README.md, The saga)"
            )

        async def guarded(coro: Any) -> Any:
            """Await ``coro`` unless the system dies first (then raise its error)."""
            task = asyncio.ensure_future(coro)
            finished, _ = await asyncio.wait([task, system], return_when=asyncio.FIRST_COMPLETED)
            if task not in finished:
                task.cancel()
                system.result()
                raise RuntimeError("the components stopped")
            return task.result()

        if args.warmup:
            c = min(args.warmup, 10)
            progress(f"warm-up: {args.warmup} deployments at concurrency {c} (untimed)")
            await guarded(bench.run_level(c, args.warmup, quiet=True))
            if not args.no_analyze:
                await analyze_schema(dsn, settings.log_schema)
        env["warm-up ANALYZE"] = "no (--no-analyze)" if args.no_analyze else "yes"

        for c in args.levels:
            n = args.deployments or DEFAULT_DEPLOYMENTS.get(c, max(4 * c, 20))
            n = max(n, c)
            progress(f"saga: {n} deployments at concurrency {c} (services bench-0..bench-{c - 1})")
            level = await guarded(bench.run_level(c, n))
            await analyse_log(bench, level, dsn)
            levels.append(level)

        if not args.no_profile:
            c, n = args.profile_concurrency, max(args.profile_deployments, args.profile_concurrency)
            progress(f"profile: {n} deployments at concurrency {c} under cProfile (timings not reported)")
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                plevel = await guarded(bench.run_level(c, n, quiet=True))
            finally:
                profiler.disable()
            profile = {
                "concurrency": c,
                "deployments": n,
                "wall_s": plevel.wall,
                "rate": plevel.rate,
                **profile_text(profiler, args.top),
            }
        env["instant target"] = (
            f"{len(INSTANT.applied):,} step ids applied,"
            f" {INSTANT.reapplied} re-applies answered from its record"
        )
        progress("raw Kafka round trip again, with the system idle")
        rtt_after = await guarded(kafka_round_trip(bootstrap, args.baseline))
        bases[0].samples = sorted(bases[0].samples + rtt_after)
        env["raw round trip p50, before / after the saga"] = (
            f"{ms(percentile(rtt_before, 50))} / {ms(percentile(rtt_after, 50))} ms"
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await producer.stop()
        await watcher.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(system, 30)
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.log_schema}" CASCADE')
            finally:
                await conn.close()
    return levels, bases, profile


async def analyze_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for (table,) in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema):
            await conn.execute(f'ANALYZE "{schema}"."{table}"')
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # FastStream logs partition assignments and task callbacks at INFO on its own
    # handler, whatever the root level: keep the output to warnings and errors.
    logging.disable(logging.INFO)
    workdir = Path(tempfile.mkdtemp(prefix="shiplog-bench-saga-"))
    broker: EmbeddedBroker | None = None
    env = machine_env()
    try:
        with bench_database(workdir, env, progress) as (dsn, pg):
            broker = EmbeddedBroker.start(log_file=workdir / "tansu.log")
            env["kafka"] = f"embedded Tansu {broker.bootstrap}"
            cpu = CpuMeter(broker.process.pid, postmaster_pid(pg.pgdata) if pg else None)
            started = time.perf_counter()
            levels, bases, profile = asyncio.run(run(args, dsn, broker.bootstrap, workdir, cpu, env))
            env["wall"] = f"{time.perf_counter() - started:.0f}s"
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if profile is not None:
        console.rule(
            f"cProfile: {profile['deployments']} deployments at concurrency {profile['concurrency']}"
            f" ({profile['wall_s']:.1f}s wall, {profile['rate']:.1f}/s under the profiler)"
        )
        for key, title in (
            ("project_by_cumulative", "shiplog's own functions, by cumulative time"),
            ("by_cumulative", "every function, by cumulative time (the event loop's frames left out)"),
            ("by_own", "every function, by own time"),
            ("by_area", "own time per area: where the CPU of this process goes"),
        ):
            console.print(f"[bold]{title}[/]")
            console.print(profile[key], markup=False, highlight=False)
    for table in report(levels, bases, env):
        console.print(table)
    if levels and levels[0].chain:
        console.print(
            f"[bold]causal chain[/] ({len(levels[0].chain)} hops): " + "  =>  ".join(levels[0].chain)
        )
        console.print(
            "[bold]events per deployment by type[/] (c="
            f"{levels[0].concurrency}): "
            + ", ".join(f"{t} {c:g}" for t, c in levels[0].events_by_type.items())
        )
    missed = [
        f"c={lv.concurrency} {what}"
        for lv in levels
        for what, ok in (
            ("p50", lv.pct(50) <= AIM_P50_S),
            ("p99", lv.pct(99) <= AIM_P99_S),
            ("rate", lv.rate >= AIM_RATE),
        )
        if not ok
    ]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "env": env,
                    "baselines": [
                        {
                            "name": b.name.strip(),
                            "what": b.what,
                            "n": len(b.samples),
                            "p50_s": percentile(b.samples, 50),
                            "p99_s": percentile(b.samples, 99),
                        }
                        for b in bases
                    ],
                    "levels": [
                        {
                            "concurrency": lv.concurrency,
                            "deployments": len(lv.ok),
                            "wall_s": lv.wall,
                            "rate": lv.rate,
                            "p50_s": lv.pct(50),
                            "p99_s": lv.pct(99),
                            "max_s": lv.latencies[-1] if lv.latencies else None,
                            "hops": lv.hops,
                            "events_per_deployment": lv.events_per_deployment,
                            "kafka_messages_per_deployment": lv.kafka_messages_per_deployment,
                            "handled_per_deployment": lv.handled_per_deployment,
                            "busy": {k: asdict(b) for k, b in lv.busy.items()},
                            "relay": {"batches": lv.relay[0], "events": lv.relay[1], "seconds": lv.relay[2]},
                            "cpu": lv.cpu,
                        }
                        for lv in levels
                    ],
                    "profile": profile,
                    "at": datetime.now().isoformat(timespec="seconds"),
                },
                indent=2,
            )
        )
    if missed:
        console.print(f"[red]aims missed:[/] {', '.join(missed)}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
