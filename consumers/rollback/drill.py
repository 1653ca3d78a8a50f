"""The drill consumer: rollback drills (events/drill.py), one step per event.

``drill`` command -> (``drill.scheduled`` and a timer, when it names a later time)
-> ``drill.started`` with both snapshots, or ``drill.refused`` (nothing succeeded
there yet, nothing ran before it, a deployment holds the lane) -> one
``drill.step_completed`` per step, each done by ``gather`` on the previous one
(rollback, verify_rollback, roll_forward, verify_forward) -> ``drill.completed``
with the timings. A step that fails is followed by ``restore`` (what ran, back) and
``drill.failed`` naming the broken step. Every target call carries a step id made
of the drill id and the step, so a step re-driven after a crash is not done twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import Status, fold
from events.command import Drill
from events.deployment import DeploymentPlanned, deployment_stream
from events.drill import (
    DRILL_STEPS,
    DrillCompleted,
    DrillFailed,
    DrillRefused,
    DrillScheduled,
    DrillStarted,
    DrillStep,
    DrillStepCompleted,
)
from events.envelope import CloudEvent
from events.errors import ShiplogError
from events.registry import REGISTRY, new_event
from events.timer import TimerFired, TimerScheduled
from events.topics import COMMANDS, ROLLBACKS, TIMERS

NAME = "drill"
SOURCE = "shiplog/drill"
START = "drill_start"
LANE_FREE = "lane_free"
#: how long a drill's step (or its start) may keep failing with errors worth retrying
#: — a host down, an API throttling — before the drill stops waiting: the step
#: fails (then what ran is put back, by the same rule), or the drill is refused. A
#: drill holds the service's lane, so it must not wait for ever.
RETRY_LIMIT = timedelta(minutes=10)


def _given_up(since: datetime, exc: ShiplogError) -> str | None:
    """Why to stop retrying ``exc`` now, or None to retry it (raise it again)."""
    if exc.retryable and datetime.now(UTC) - since <= RETRY_LIMIT:
        return None
    what = f"{type(exc).__name__}: {exc}"
    return f"{what} (still failing after {RETRY_LIMIT})" if exc.retryable else what


def drill_stream(drill_id: str) -> str:
    return f"drill-{drill_id}"


@dataclass(frozen=True)
class DrillState:
    scheduled: DrillScheduled | None = None
    started: DrillStarted | None = None
    steps: tuple[DrillStepCompleted, ...] = ()
    ended: bool = False


def evolve(state: DrillState, event: CloudEvent) -> DrillState:
    name = event.type_name
    if name == DrillScheduled.TYPE:
        return replace(state, scheduled=REGISTRY.payload(event, DrillScheduled))
    if name == DrillStarted.TYPE:
        return replace(state, started=REGISTRY.payload(event, DrillStarted))
    if name == DrillStepCompleted.TYPE:
        return replace(state, steps=(*state.steps, REGISTRY.payload(event, DrillStepCompleted)))
    if name in (DrillCompleted.TYPE, DrillFailed.TYPE, DrillRefused.TYPE):
        return replace(state, ended=True)
    return state


def next_step(state: DrillState) -> DrillStep | None:
    """What the drill does next; None when it is over (or has not started)."""
    if state.started is None or state.ended:
        return None
    if not state.steps:
        return DRILL_STEPS[0]
    last = state.steps[-1]
    if last.step == "restore":
        return None
    if not last.ok:
        return "restore"
    index = DRILL_STEPS.index(last.step)
    return DRILL_STEPS[index + 1] if index + 1 < len(DRILL_STEPS) else None


@dataclass(frozen=True)
class Begin:
    """What the drill found before starting: the drill.started to record, or why not."""

    started: DrillStarted | None = None
    refused: str | None = None
    #: deployments that queued behind the drill, to wake (when it ends)
    woken: tuple[str, ...] = ()


@dataclass(frozen=True)
class Done:
    step: DrillStepCompleted
    woken: tuple[str, ...] = ()


def stream_for(event: CloudEvent) -> str:
    if event.type_name == Drill.TYPE:
        return drill_stream(event.id)
    if event.type_name == TimerFired.TYPE:
        return REGISTRY.payload(event, TimerFired).stream_id
    return drill_stream(event.subject)


def decide(
    state: DrillState, event: CloudEvent, *, now: datetime, facts: Begin | Done | None = None
) -> list[CloudEvent]:
    name = event.type_name
    if name == Drill.TYPE:
        if state.scheduled or state.started or state.ended:
            return []
        command = REGISTRY.payload(event, Drill)
        # the command's own time, as gather judges it: both must agree
        if command.not_before is not None and command.not_before > event.time:
            return _schedule(command, event)
        return _begin(event.id, command.service, command.environment, facts, event)
    if name == TimerFired.TYPE:
        fired = REGISTRY.payload(event, TimerFired)
        if fired.purpose != START or state.scheduled is None or state.started or state.ended:
            return []
        s = state.scheduled
        return _begin(s.drill_id, s.service, s.environment, facts, event)
    if not isinstance(facts, Done) or state.started is None:
        return []
    return _after_step(state, state.started, facts, event)


def _schedule(command: Drill, event: CloudEvent) -> list[CloudEvent]:
    assert command.not_before is not None
    envelope = _envelope(event.id, event)
    return [
        new_event(
            DrillScheduled(
                drill_id=event.id,
                service=command.service,
                environment=command.environment,
                not_before=command.not_before,
                requested_by=event.actor,
            ),
            **envelope,
        ),
        new_event(
            TimerScheduled(
                timer_id=f"{event.id}:{START}",
                stream_id=drill_stream(event.id),
                due_at=command.not_before,
                purpose=START,
                payload={"subject": event.id},
            ),
            **envelope,
        ),
    ]


def _begin(drill_id: str, service: str, environment: str, facts: Any, event: CloudEvent) -> list[CloudEvent]:
    if not isinstance(facts, Begin):
        return []
    envelope = _envelope(drill_id, event)
    if facts.started is None:
        refused = DrillRefused(
            drill_id=drill_id, service=service, environment=environment, reason=facts.refused or "unknown"
        )
        return [new_event(refused, **envelope)]
    return [new_event(facts.started, **envelope)]


def _after_step(state: DrillState, started: DrillStarted, done: Done, event: CloudEvent) -> list[CloudEvent]:
    expected = next_step(state)
    if expected is None or done.step.step != expected:
        return []
    envelope = _envelope(started.drill_id, event)
    out = [new_event(done.step, **envelope)]
    after = replace(state, steps=(*state.steps, done.step))
    timings: dict[str, float] = {s.step: s.duration_s for s in after.steps}
    if done.step.step == "restore":
        broken = next(s for s in after.steps if not s.ok)
        out.append(
            new_event(
                DrillFailed(
                    drill_id=started.drill_id,
                    service=started.service,
                    environment=started.environment,
                    broken_step=broken.step,
                    error=broken.error or "failed",
                    restored=done.step.ok,
                    timings=timings,
                ),
                **envelope,
            )
        )
    elif next_step(after) is None:
        out.append(
            new_event(
                DrillCompleted(
                    drill_id=started.drill_id,
                    service=started.service,
                    environment=started.environment,
                    timings=timings,
                    time_to_recover_s=round(timings["rollback"] + timings["verify_rollback"], 3),
                    total_s=round(sum(timings.values()), 3),
                ),
                **envelope,
            )
        )
    if len(out) > 1:
        out += [
            new_event(
                TimerScheduled(
                    timer_id=f"{woken}:{LANE_FREE}:{event.id}",
                    stream_id=deployment_stream(woken),
                    due_at=event.time,
                    purpose=LANE_FREE,
                    payload={"subject": woken, "after": started.drill_id},
                ),
                **envelope,
            )
            for woken in done.woken
        ]
    return out


def _envelope(drill_id: str, cause: CloudEvent) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "subject": drill_id,
        "correlationid": drill_id,
        "causationid": cause.id,
        "actor": cause.actor if cause.type_name == Drill.TYPE else None,
    }


# -- gather: the I/O -----------------------------------------------------------------


async def gather(ports: Any, state: DrillState, event: CloudEvent) -> Begin | Done | None:
    name = event.type_name
    if name == Drill.TYPE:
        command = REGISTRY.payload(event, Drill)
        if state.started or state.ended or state.scheduled:
            return None
        if command.not_before is not None and command.not_before > event.time:
            return None
        return await _prepare(ports, event.id, command.service, command.environment, event.actor, event.time)
    if name == TimerFired.TYPE:
        s = state.scheduled
        if s is None or state.started or state.ended:
            return None
        return await _prepare(ports, s.drill_id, s.service, s.environment, s.requested_by, event.time)
    step = next_step(state)
    started = state.started
    if step is None or started is None or name not in (DrillStarted.TYPE, DrillStepCompleted.TYPE):
        return None
    began = time.monotonic()
    overtaken = await _rolled_back_meanwhile(ports, started) if step in ("roll_forward", "restore") else None
    ok: bool
    detail: dict[str, Any]
    error: str | None
    if overtaken is not None:
        # the release drilled was rolled back for real meanwhile: putting it back would undo that
        ok, detail, error = False, {"rolled_back": started.deployment_id}, overtaken
    else:
        try:
            ok, detail, error = await _run_step(ports, started, step)
        except ShiplogError as exc:
            # the event that asked for this step says since when it has been tried
            if (given_up := _given_up(event.time, exc)) is None:
                raise
            ok, detail, error = False, {}, given_up
    done = DrillStepCompleted(
        drill_id=started.drill_id,
        step=step,
        ok=ok,
        duration_s=round(time.monotonic() - began, 3),
        detail=detail,
        error=error,
    )
    woken: tuple[str, ...] = ()
    if step == "restore" or (ok and step == DRILL_STEPS[-1]):
        # what serves now: what ran, unless putting it back failed (then say nothing)
        serving = started.from_version if ok else None
        woken = tuple(
            await ports.lanes.release(
                started.service, started.environment, _lane_holder(started.drill_id), serving
            )
        )
    return Done(done, woken)


async def _rolled_back_meanwhile(ports: Any, started: DrillStarted) -> str | None:
    """Why not to put the drilled release back: it was rolled back (by verification, a
    person or its release) while the drill ran. None: nothing happened to it."""
    history = await ports.log.read_stream(deployment_stream(started.deployment_id))
    status = fold(r.event for r in history).status
    if status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
        drilled = started.deployment_id
        return f"{drilled} was rolled back during the drill: not putting {started.from_version} back"
    return None


def _lane_holder(drill_id: str) -> str:
    return f"drill:{drill_id}"


async def _prepare(
    ports: Any, drill_id: str, service: str, environment: str, requested_by: str | None, since: datetime
) -> Begin:
    from shiplog.status import find_deployment

    async def refuse(reason: str) -> Begin:
        # whatever happened before (a redelivery, a scheduled start), the lane is free after
        await ports.lanes.release(service, environment, _lane_holder(drill_id), None)
        return Begin(refused=reason)

    found = await find_deployment(ports.log, service, environment)
    state = fold(r.event for r in await ports.log.read_stream(deployment_stream(found))) if found else None
    if state is None or state.plan is None:
        return await refuse(f"{service} was never deployed to {environment}")
    if state.status is not Status.SUCCEEDED:
        return await refuse(f"{state.plan.deployment_id} is {state.status.value}: drill a settled service")
    plan: DeploymentPlanned = state.plan
    if state.snapshot is None or not state.snapshot.get("version"):
        return await refuse(f"nothing ran in {environment} before {plan.version}: no rollback to rehearse")
    target = ports.targets(plan.target.type, plan.target.settings)
    if not target.capabilities.reversible:
        return await refuse(
            f"a {plan.target.type} target only restores backwards (down migrations): a drill could "
            "roll back but not forward again"
        )
    claim = await ports.lanes.claim(service, environment, _lane_holder(drill_id), plan.version)
    if not claim.claimed:
        return await refuse(
            f"a deployment is in progress: {claim.outdated or f'{claim.behind} holds the lane'}"
        )
    try:
        current = await target.snapshot(service, environment, plan.target.settings)
    except ShiplogError as exc:
        if (given_up := _given_up(since, exc)) is None:
            raise
        return await refuse(f"target {plan.target.type} does not answer: {given_up}")
    health = (plan.analysis.get("health") or {}).get("path") or plan.target.settings.get("health_path")
    return Begin(
        DrillStarted(
            drill_id=drill_id,
            service=service,
            environment=environment,
            deployment_id=plan.deployment_id,
            from_version=current.version,
            to_version=state.snapshot.get("version"),
            target=plan.target,
            health_path=str(health or "/healthz"),
            current=current.model_dump(mode="json"),
            previous=state.snapshot,
            requested_by=requested_by,
        )
    )


async def _run_step(
    ports: Any, started: DrillStarted, step: DrillStep
) -> tuple[bool, dict[str, Any], str | None]:
    from adapters.targets import Snapshot
    from consumers.rollback.restore import healthy

    target = ports.targets(started.target.type, started.target.settings)
    try:
        if step in ("rollback", "roll_forward", "restore"):
            source = started.previous if step == "rollback" else started.current
            result = await target.restore(
                Snapshot.model_validate(source),
                step_id=f"drill:{started.drill_id}:{step}",
                settings=started.target.settings,
            )
            if not result.ok:
                return False, result.detail, result.error or f"{step} failed"
            if step != "restore":
                return True, result.detail, None
            step_version = started.from_version
        else:
            step_version = started.to_version if step == "verify_rollback" else started.from_version
        ok, detail = await healthy(
            target,
            started.service,
            started.environment,
            step_version,
            started.health_path,
            started.target.settings,
        )
        status = await target.status(started.service, started.environment, started.target.settings)
        serving = sorted({t.version for t in status.tracks if t.weight > 0})
        detail = {**detail, "serving": serving}
        what = step.replace("_", " ")
        if ok and step_version is not None and serving != [step_version]:
            return False, detail, f"{', '.join(serving) or 'nothing'} serves after {what}, not {step_version}"
    except ShiplogError as exc:
        if exc.retryable:
            raise  # gather decides when to stop retrying
        return False, {}, f"{type(exc).__name__}: {exc}"
    if not ok:
        return False, detail, f"{step_version} is not healthy after {step.replace('_', ' ')}: {detail}"
    return True, detail, None


def _consumer() -> Consumer[DrillState]:
    return Consumer(
        name=NAME,
        topics=(COMMANDS.name, ROLLBACKS.name, TIMERS.name),
        stream_for=stream_for,
        initial=DrillState,
        evolve=evolve,
        decide=decide,
        accepts=(Drill.TYPE, TimerFired.TYPE, DrillStarted.TYPE, DrillStepCompleted.TYPE),
        gather=gather,
        description="rehearses rollbacks: back to the previous release and forward again, verified and timed",
    )


DRILL = _consumer()
