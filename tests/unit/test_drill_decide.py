"""The drill consumer's decisions (consumers/rollback/drill.py), pure: the order of
its steps, the restore after a broken one, scheduling, refusal, redelivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.rollback.drill import Begin, Done, DrillState, decide, evolve, next_step
from events.command import Drill
from events.deployment import TargetRef
from events.drill import (
    DrillCompleted,
    DrillFailed,
    DrillRefused,
    DrillScheduled,
    DrillStarted,
    DrillStepCompleted,
)
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.timer import TimerFired, TimerScheduled

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
STARTED = DrillStarted(
    drill_id="d1",
    service="web",
    environment="prod",
    deployment_id="web.prod.r2",
    from_version="2.0.0",
    to_version="1.0.0",
    target=TargetRef(type="local"),
    current={"service": "web", "environment": "prod", "version": "2.0.0"},
    previous={"service": "web", "environment": "prod", "version": "1.0.0"},
)


def command(not_before: datetime | None = None) -> CloudEvent:
    return new_event(
        Drill(service="web", environment="prod", not_before=not_before),
        source="shiplog/api",
        subject="web.prod",
        actor="alice",
    )


def step(name: str, ok: bool = True, s: float = 1.0) -> DrillStepCompleted:
    return DrillStepCompleted(drill_id="d1", step=name, ok=ok, duration_s=s, error=None if ok else "boom")  # type: ignore[arg-type]


def play(state: DrillState, events: list[CloudEvent]) -> DrillState:
    for e in events:
        state = evolve(state, e)
    return state


def types(events: list[CloudEvent]) -> list[str]:
    return [e.type_name for e in events]


def started_state() -> DrillState:
    return play(DrillState(), [new_event(STARTED, source="t", subject="d1")])


def test_a_drill_starts_with_both_snapshots_or_is_refused_with_the_reason() -> None:
    cmd = command()
    out = decide(DrillState(), cmd, now=NOW, facts=Begin(started=STARTED))
    assert types(out) == [DrillStarted.TYPE]
    assert out[0].actor == "alice"
    refused = decide(DrillState(), cmd, now=NOW, facts=Begin(refused="web.prod.r3 is running"))
    assert types(refused) == [DrillRefused.TYPE]
    assert REGISTRY.payload(refused[0], DrillRefused).reason == "web.prod.r3 is running"
    # redelivered after it started: nothing again
    assert decide(play(DrillState(), out), cmd, now=NOW, facts=Begin(started=STARTED)) == []


def test_the_steps_run_in_order_and_the_last_completes_the_drill_with_its_timings() -> None:
    state = started_state()
    trigger = new_event(STARTED, source="t", subject="d1")
    timings = {"rollback": 2.0, "verify_rollback": 0.5, "roll_forward": 1.5, "verify_forward": 0.25}
    for name, seconds in timings.items():
        assert next_step(state) == name
        out = decide(state, trigger, now=NOW, facts=Done(step(name, s=seconds)))
        state = play(state, out)
    assert types(out) == [DrillStepCompleted.TYPE, DrillCompleted.TYPE]
    done = REGISTRY.payload(out[1], DrillCompleted)
    assert done.timings == timings
    assert done.time_to_recover_s == 2.5
    assert done.total_s == 4.25
    assert next_step(state) is None


def test_a_broken_step_is_followed_by_restore_and_the_failure_names_it() -> None:
    state = started_state()
    trigger = new_event(STARTED, source="t", subject="d1")
    state = play(state, decide(state, trigger, now=NOW, facts=Done(step("rollback"))))
    out = decide(state, trigger, now=NOW, facts=Done(step("verify_rollback", ok=False)))
    assert types(out) == [DrillStepCompleted.TYPE]
    state = play(state, out)
    assert next_step(state) == "restore"
    out = decide(state, trigger, now=NOW, facts=Done(step("restore"), woken=("web.prod.r3",)))
    assert types(out) == [DrillStepCompleted.TYPE, DrillFailed.TYPE, TimerScheduled.TYPE]
    failed = REGISTRY.payload(out[1], DrillFailed)
    assert (failed.broken_step, failed.error, failed.restored) == ("verify_rollback", "boom", True)
    # a deployment that queued behind the drill is woken
    assert REGISTRY.payload(out[2], TimerScheduled).stream_id == "deployment-web.prod.r3"


def test_a_step_result_for_a_step_not_due_is_ignored() -> None:
    state = started_state()
    trigger = new_event(STARTED, source="t", subject="d1")
    assert decide(state, trigger, now=NOW, facts=Done(step("roll_forward"))) == []


def test_a_drill_for_later_is_scheduled_through_the_timers_and_starts_when_it_fires() -> None:
    later = NOW + timedelta(hours=3)
    cmd = command(not_before=later)
    out = decide(DrillState(), cmd, now=NOW, facts=None)
    assert types(out) == [DrillScheduled.TYPE, TimerScheduled.TYPE]
    timer = REGISTRY.payload(out[1], TimerScheduled)
    assert (timer.due_at, timer.stream_id) == (later, f"drill-{cmd.id}")
    state = play(DrillState(), out)
    fired = new_event(
        TimerFired(
            timer_id=timer.timer_id,
            stream_id=timer.stream_id,
            due_at=later,
            fired_at=later,
            purpose=timer.purpose,
        ),
        source="shiplog/timers",
        subject=cmd.id,
    )
    assert types(decide(state, fired, now=later, facts=Begin(started=STARTED))) == [DrillStarted.TYPE]


class _Ports:
    """Just what the drill's gather reads: the log and the lanes."""

    def __init__(self, history: list[CloudEvent]) -> None:
        self.history = history
        self.released: list[tuple[str, str, str, str | None]] = []
        self.log = self
        self.lanes = self
        self.targets = None  # a step that reaches a target would fail this test

    async def read_stream(self, stream: str) -> list[object]:
        from types import SimpleNamespace

        return [SimpleNamespace(event=e) for e in self.history]

    async def release(self, service: str, environment: str, holder: str, serving: str | None) -> list[str]:
        self.released.append((service, environment, holder, serving))
        return []


async def test_a_release_rolled_back_for_real_during_the_drill_is_not_put_back() -> None:
    from consumers.rollback.drill import gather
    from events.deployment import DeploymentRolledBack
    from tests.unit import sagafixtures as saga

    rolled_back = saga.event(
        DeploymentRolledBack(
            deployment_id=STARTED.deployment_id, service="web", environment="prod", reason="5xx", healthy=True
        ),
        subject=STARTED.deployment_id,
    )
    ports = _Ports([saga.planned(saga.canary_plan(deployment_id=STARTED.deployment_id)), rolled_back])
    state = play(started_state(), [new_event(step("rollback"), source="t", subject="d1")])
    state = play(state, [new_event(step("verify_rollback"), source="t", subject="d1")])

    done = await gather(ports, state, new_event(step("verify_rollback"), source="t", subject="d1"))
    assert isinstance(done, Done) and done.step.step == "roll_forward" and not done.step.ok
    assert "was rolled back during the drill" in (done.step.error or "")
    state = play(state, decide(state, new_event(STARTED, source="t", subject="d1"), now=NOW, facts=done))

    restore = await gather(ports, state, new_event(done.step, source="t", subject="d1"))
    assert isinstance(restore, Done) and restore.step.step == "restore" and not restore.step.ok
    out = decide(state, new_event(STARTED, source="t", subject="d1"), now=NOW, facts=restore)
    failed = REGISTRY.payload(out[1], DrillFailed)
    assert (failed.broken_step, failed.restored) == ("roll_forward", False)
    assert ports.released == [
        ("web", "prod", "drill:d1", None)
    ]  # the lane is freed, nothing claimed to serve


class _Unreachable:
    """A target whose every call fails with an error worth retrying (a host down)."""

    def __init__(self) -> None:
        self.calls = 0

    async def restore(self, *args: object, **kwargs: object) -> None:
        from events.errors import AdapterUnavailable

        self.calls += 1
        raise AdapterUnavailable("ssh: host web-1 does not answer")


async def test_a_step_that_keeps_failing_to_reach_its_target_fails_after_the_limit() -> None:
    import pytest

    from consumers.rollback.drill import RETRY_LIMIT, gather
    from events.errors import AdapterUnavailable

    target = _Unreachable()
    ports = _Ports([])
    ports.targets = lambda _type, _settings: target  # type: ignore[assignment]
    state = started_state()

    # within the limit: the error goes back to the shell, which retries with backoff
    recent = new_event(STARTED, source="t", subject="d1")
    with pytest.raises(AdapterUnavailable):
        await gather(ports, state, recent)

    # past it (the event asking for the step is that old): the step fails, saying why
    old = recent.model_copy(update={"time": datetime.now(UTC) - RETRY_LIMIT - timedelta(seconds=1)})
    done = await gather(ports, state, old)
    assert isinstance(done, Done) and done.step.step == "rollback" and not done.step.ok
    assert "does not answer" in (done.step.error or "") and "still failing after" in (done.step.error or "")
    out = decide(state, old, now=NOW, facts=done)
    state = play(state, out)
    assert next_step(state) == "restore"

    # putting back what ran fails the same way: the drill ends, says so, frees the lane
    asked = old.model_copy(update={"type": out[0].type, "data": out[0].data})
    restore = await gather(ports, state, asked)
    assert isinstance(restore, Done) and restore.step.step == "restore" and not restore.step.ok
    ended = decide(state, asked, now=NOW, facts=restore)
    failed = REGISTRY.payload(ended[1], DrillFailed)
    assert (failed.broken_step, failed.restored) == ("rollback", False)
    assert ports.released == [("web", "prod", "drill:d1", None)]
    assert target.calls == 3
