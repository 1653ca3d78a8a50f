"""The deployment saga on real processes, through the public contract only: builds
published on ``<prefix>shiplog.builds``, approvals given with ``shiplog approve``,
the log read back from PostgreSQL, and HTTP through each environment's endpoint.

- the execution consumer's process killed mid-canary and started again: the
  deployment completes, and neither the log nor the target's own record shows a
  step applied twice;
- two builds of one service in quick succession never run at once in one
  environment, and the newer one serves; an older build after a newer one is
  rejected as outdated;
- a pipeline directory with errors is refused with file, line and field, and
  nothing is deployed.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.eventlog import PostgresEventLog
from events.deployment import deployment_id
from tests.e2e.sagautil import (
    DEMO_CONFIG,
    SAMPLE_SERVICE,
    SERVICE,
    Logged,
    Shiplog,
    all_events,
    dep_stream,
    has,
    kill_leftovers,
    processes_under,
    serving,
    stream_events,
    terminal,
    types,
    wait_for,
    wait_stream,
)

pytestmark = pytest.mark.timeout(150)

SAGA = ("relay", "recorder", "timers", "planning", "approval", "verification", "rollback")


@pytest.fixture
def shiplog(
    tmp_path: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    log_schema: str,
    topic_prefix: str,
    eventlog: PostgresEventLog,  # the schema exists (migrated) before any process starts
) -> Iterator[Shiplog]:
    system = Shiplog(
        tmp_path,
        bootstrap=kafka_bootstrap,
        dsn=postgres_dsn,
        log_schema=log_schema,
        topic_prefix=topic_prefix,
    )
    try:
        yield system
    finally:
        system.stop_all()
        assert not processes_under(tmp_path), "processes of the test survived the cleanup"


# -- 1. the execution consumer killed mid-canary -----------------------------------------


def _applied(events: list[Logged], index: int) -> bool:
    return has(events, "shiplog.step.applied", index=index)


def _started(events: list[Logged], index: int) -> bool:
    return has(events, "shiplog.step.started", index=index)


async def test_execution_killed_mid_canary_completes_without_applying_a_step_twice(
    shiplog: Shiplog, eventlog: PostgresEventLog
) -> None:
    saga = shiplog.component("A", *SAGA)
    execution = shiplog.component("B", "execution")
    await asyncio.gather(saga.start_async(), execution.start_async())

    build_id = await shiplog.publish("1.0.0")
    production_id = deployment_id(SERVICE, "production", build_id)
    production = dep_stream("production", build_id)

    await wait_stream(
        eventlog,
        production,
        lambda es: has(es, "shiplog.approval.requested") or terminal(es) is not None,
        timeout=60,
        what="approval.requested",
        dump=shiplog.logs,
    )
    approved = await shiplog.acli("approve", production_id, "--as", "alice", "-m", "canary plan ok")
    # (rich wraps the line at 80 columns when stdout is not a terminal)
    assert f"approved {production_id} as alice" in " ".join(approved.stdout.split())

    # Poll the log every 20 ms for the moment set_weight 50 (step 2) is intended but
    # not yet applied; kill the execution process then.
    async def window() -> str | None:
        events = await stream_events(eventlog, production)
        if terminal(events) is not None:
            raise AssertionError(
                f"production ended before the kill: {types(events)}\n"
                + "\n".join(json.dumps(e.data)[:3000] for e in events if "failed" in e.type)
            )
        if _started(events, 2) and not _applied(events, 2):
            return "step 2 started, not applied"
        if _applied(events, 2):
            raise AssertionError("missed the window: step 2 applied before the kill")
        return None

    t0 = time.monotonic()
    caught = await wait_for(window, timeout=60, what="step.started index 2", dump=shiplog.logs)
    execution.kill()
    killed_at = time.monotonic() - t0
    at_kill = {t["spec"]["version"]: t["weight"] for t in shiplog.target_record("production")["tracks"]}
    before = await stream_events(eventlog, production)
    await asyncio.sleep(1.0)
    await execution.start_async()

    events = await wait_stream(
        eventlog,
        production,
        lambda es: terminal(es) is not None,
        timeout=90,
        what="a terminal event",
        dump=shiplog.logs,
    )
    end = terminal(events)
    assert end is not None and end.type == "shiplog.deployment.succeeded", (types(events), shiplog.logs())

    # the log: each step that changes the target applied exactly once
    [planned] = [e for e in events if e.type == "shiplog.deployment.planned"]
    steps = planned.data["strategy"]["steps"]
    target_steps = {i for i, s in enumerate(steps) if s["kind"] in ("set_weight", "promote")}
    applied = [e for e in events if e.type == "shiplog.step.applied"]
    assert Counter(e.data["index"] for e in applied) == {i: 1 for i in target_steps}, types(events)
    assert all(e.data["ok"] for e in applied)
    started = Counter(e.data["index"] for e in events if e.type == "shiplog.step.started")
    assert started == {i: 1 for i in range(len(steps))}

    # the target's own record: every applied step once
    record = shiplog.target_record("production")
    keys = [a["key"] for a in record["applied"] if a["key"].startswith(production_id + "/")]
    assert len(keys) == len(set(keys)), keys
    assert sorted(keys) == sorted(f"{production_id}/{e.data['step_id']}" for e in applied)

    # and what really serves, through the endpoint the step reported
    endpoint = applied[-1].data["detail"]["endpoint"]
    assert endpoint
    seen = await serving(endpoint)
    assert set(seen) == {"1.0.0"}, seen
    print(
        f"\nkill: {caught} after {killed_at:.2f}s; target weights then {at_kill}; before the kill: {types(before)[-4:]}; "
        f"already_applied after restart: {[e.data['index'] for e in applied if e.data['already_applied']]}"
    )
