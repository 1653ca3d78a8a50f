"""Approvals through the real consumer shells against the real PostgreSQL log:
levels and quorum, two approvals of one level at the same instant, and an edited
pipeline voiding what was approved under the old plan."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.eventlog import PostgresEventLog
from adapters.eventlog.lanes import PostgresLanes
from adapters.eventlog.timers import PostgresTimerStore
from consumers.approval import APPROVAL
from consumers.contract import Ports
from consumers.planning.core import PLANNING
from consumers.planning.loader import load_pipelines
from consumers.planning.watch import PipelineWatcher
from consumers.shell import ConsumerShell
from consumers.timers import TIMERS, TimerScheduler
from events.approval import ApprovalGranted, ApprovalRecorded, ApprovalVoided
from events.deployment import DeploymentPlanned, deployment_id, deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.signature import key_id_for, sign
from producers.build import build_event
from shiplog.status import deployment_status
from shiplog.targets import TargetPool

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32
KEY_ID = key_id_for(KEY)

PIPELINE = """
service: shop
environments:
  - name: production
    target:
      type: local
      settings:
        command:
          ["{python}", "ROOT/deploy/examples/sample_service.py", --port, "{port}", --version, "{version}"]
    strategy: {type: rolling}
    gate:
      manual:
        levels:
          - {name: leads, roles: [lead], quorum: QUORUM}
          - {name: release, roles: [release-manager]}
        EXPIRY
"""


def write_pipeline(directory: Path, quorum: int, expiry: str = "") -> None:
    text = PIPELINE.replace("ROOT", str(ROOT)).replace("QUORUM", str(quorum)).replace("EXPIRY", expiry)
    (directory / "shop.yaml").write_text(textwrap.dedent(text))


@pytest.fixture
async def saga(eventlog: PostgresEventLog, tmp_path: Path) -> Any:
    config = tmp_path / "pipelines"
    config.mkdir()
    write_pipeline(config, quorum=2)
    pipelines = load_pipelines(config)
    ports = Ports(log=eventlog, lanes=PostgresLanes(eventlog))
    ports.targets = TargetPool(tmp_path / "home", workdir=config)
    ports.pipelines = pipelines
    ports.config_dir = config
    ports.timers = PostgresTimerStore(eventlog)
    shells = {
        c.name: ConsumerShell(
            c,
            eventlog,
            broker=None,  # type: ignore[arg-type]
            ports=ports,
            command_keys={KEY_ID: KEY},
        )
        for c in (PLANNING, APPROVAL, TIMERS)
    }

    async def pending(service: str) -> list[Any]:
        return (await deployment_status(eventlog, service)).pending_approvals()

    watcher = PipelineWatcher(config, pipelines, eventlog, pending)
    watcher._seen = ()  # the first look sees the directory as new
    yield shells, watcher, config
    await ports.targets.close(stop_processes=True)


async def drive(shells: dict[str, ConsumerShell], log: PostgresEventLog, event: CloudEvent) -> None:
    """Hand ``event`` and everything it causes to the shells, as the bus would."""
    queue = [event]
    while queue:
        current = queue.pop(0)
        seen = {r.event_id for r in await log.read_all(0, 10_000)}
        for shell in shells.values():
            if shell.consumer.wants(current) and _reads(shell, current):
                await shell.handle(current)
        after = [REGISTRY.decode(r.body) for r in await log.read_all(0, 10_000) if r.event_id not in seen]
        queue += [e for e in after if e.id != current.id]


def _reads(shell: ConsumerShell, event: CloudEvent) -> bool:
    from events.topics import topic_for

    return topic_for(event.type).name in shell.consumer.topics


def grant(
    dep: str, who: str, roles: list[str], level: str | None = None, plan_hash: str | None = None
) -> CloudEvent:
    """An approval as the command API publishes it: signed."""
    event = new_event(
        ApprovalGranted(deployment_id=dep, roles=roles, level=level, plan_hash=plan_hash, client="127.0.0.1"),
        source="shiplog/api",
        subject=dep,
        actor=who,
    )
    return sign(event, KEY, KEY_ID)


async def stream_of(log: PostgresEventLog, dep: str) -> list[CloudEvent]:
    return [r.event for r in await log.read_stream(deployment_stream(dep))]


async def start(shells: dict[str, ConsumerShell], log: PostgresEventLog) -> str:
    build = build_event(
        {
            "service": "shop",
            "version": "2.0.0",
            "artifact": "reg/shop:2.0.0",
            "author": "dora",
            "tests": {"failed": 0},
        }
    )
    await drive(shells, log, build)
    return deployment_id("shop", "production", build.correlationid or build.id)


async def test_two_approvals_of_one_level_at_the_same_instant_are_both_recorded_and_it_advances_once(
    saga: Any, eventlog: PostgresEventLog
) -> None:
    shells, _, _ = saga
    dep = await start(shells, eventlog)
    approval = shells["approval"]
    await approval.handle(grant(dep, "ann", ["lead"], "leads"))
    # the quorum's last two votes, and a late third, at the same instant
    await asyncio.gather(
        approval.handle(grant(dep, "ben", ["lead"], "leads")),
        approval.handle(grant(dep, "cat", ["lead"], "leads")),
    )
    kinds = [e.type_name for e in await stream_of(eventlog, dep)]
    recorded = [
        REGISTRY.payload(e, ApprovalRecorded).approver
        for e in await stream_of(eventlog, dep)
        if e.type_name == ApprovalRecorded.TYPE
    ]
    assert sorted(recorded) == ["ann", "ben", "cat"]
    assert kinds.count("shiplog.approval.level_completed") == 1
    assert kinds.count("shiplog.approval.requested") == 2  # leads, then release


async def test_editing_the_pipeline_after_the_first_approval_voids_it(
    saga: Any, eventlog: PostgresEventLog
) -> None:
    shells, watcher, config = saga
    dep = await start(shells, eventlog)
    await watcher.check()  # the watcher's first look: nothing changed since loading
    await shells["approval"].handle(grant(dep, "ann", ["lead"]))
    first_plan = next(
        REGISTRY.payload(e, DeploymentPlanned)
        for e in await stream_of(eventlog, dep)
        if e.type_name == DeploymentPlanned.TYPE
    )

    write_pipeline(config, quorum=3)
    requests = await watcher.check()
    assert [r.subject for r in requests] == [dep]
    for request in requests:
        await drive(shells, eventlog, request)

    events = await stream_of(eventlog, dep)
    plans = [REGISTRY.payload(e, DeploymentPlanned) for e in events if e.type_name == DeploymentPlanned.TYPE]
    assert len(plans) == 2 and plans[1].plan_hash != first_plan.plan_hash
    voided = [REGISTRY.payload(e, ApprovalVoided) for e in events if e.type_name == ApprovalVoided.TYPE]
    assert len(voided) == 1
    assert voided[0].voided == ["ann (leads)"]
    assert voided[0].old_plan_hash == first_plan.plan_hash
    # an answer bound to the old plan is refused
    stale = grant(dep, "ben", ["lead"], plan_hash=first_plan.plan_hash)
    await shells["approval"].handle(stale)
    last = (await stream_of(eventlog, dep))[-1]
    assert last.type_name == "shiplog.approval.refused"
    assert "the plan is now" in last.data["reason"]


async def test_an_invalid_edit_changes_nothing(saga: Any, eventlog: PostgresEventLog) -> None:
    shells, watcher, config = saga
    await start(shells, eventlog)
    await watcher.check()
    (config / "shop.yaml").write_text("service: shop\nenvironments: []\n")
    assert await watcher.check() == []
    assert watcher.pipelines["shop"].environments[0].gate.manual is not None


async def test_audit_show_at_an_instant_returns_that_instant_not_the_latest(
    saga: Any, eventlog: PostgresEventLog
) -> None:
    from shiplog.audit import render, show

    shells, _, _ = saga
    dep = await start(shells, eventlog)
    await shells["approval"].handle(grant(dep, "ann", ["lead"]))
    history = await eventlog.read_stream(deployment_stream(dep))
    ann_counted = next(r for r in history if r.event.type_name == ApprovalRecorded.TYPE)
    await asyncio.sleep(0.05)
    await shells["approval"].handle(grant(dep, "ben", ["lead"]))
    await shells["approval"].handle(grant(dep, "rita", ["release-manager"]))

    then = await show(eventlog, dep, ann_counted.recorded_at)
    latest = await show(eventlog, dep)
    assert then is not None and latest is not None
    assert then.to_dict()["status"] == "awaiting_approval"
    assert then.to_dict()["approval"]["counted"] == {"0": ["ann"]}
    assert [a["actor"] for a in then.approvals if a["what"] == "counted"] == ["ann"]
    assert latest.to_dict()["status"] == "approved"
    assert [a["actor"] for a in latest.approvals if a["what"] == "counted"] == ["ann", "ben", "rita"]
    before = await show(eventlog, dep, history[0].recorded_at - timedelta(seconds=1))
    assert before is not None and before.state.plan is None
    text = "\n".join(render(then))
    assert "counted: level 0: ann" in text and "client=127.0.0.1" in text


async def test_an_unanswered_level_is_reminded_then_expires_the_deployment(
    saga: Any, eventlog: PostgresEventLog
) -> None:
    shells, watcher, config = saga
    write_pipeline(config, quorum=1, expiry="expires_after: 2s\n        remind_before: 1s")
    watcher.pipelines.clear()
    watcher.pipelines.update(load_pipelines(config))
    dep = await start(shells, eventlog)
    scheduler = TimerScheduler(eventlog, shells["timers"].ports.timers)
    fired_total = 0
    for _ in range(40):  # real durable timers: fire what is due, hand it on
        await asyncio.sleep(0.1)
        before = {r.event_id for r in await eventlog.read_all(0, 10_000)}
        fired_total += await scheduler.fire_due()
        for r in await eventlog.read_all(0, 10_000):
            if r.event_id not in before:
                await drive(shells, eventlog, REGISTRY.decode(r.body))
        if fired_total >= 2:
            break
    kinds = [e.type_name.removeprefix("shiplog.") for e in await stream_of(eventlog, dep)]
    assert "approval.reminded" in kinds and "approval.expired" in kinds
    assert kinds.index("approval.reminded") < kinds.index("approval.expired")
    assert kinds[-1] == "deployment.denied"
    denied = (await stream_of(eventlog, dep))[-1]
    assert denied.data["expired"] is True
