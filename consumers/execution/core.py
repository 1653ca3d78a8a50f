"""The execution consumer's pure core: the step machine.

- A deployment starts when it is approved (or its window / lane timer fires) and
  its lane is free: ``deployment.started``, ``snapshot.taken`` (what ran before,
  from the target), and the first ``step.started``.
- ``step.started`` is intent; for a target step the shell's gather applies it
  (idempotent by step id) and decide records ``step.applied`` — applying and
  verifying are separate steps. A pause step schedules a durable timer (or waits
  for ``promote``); an analysis step waits for verification.
- ``verification.passed`` for the current step moves to the next, and after the
  last, ``deployment.succeeded``. ``verification.inconclusive`` pauses for a human.
- A terminal event frees the lane; every deployment queued behind is woken by a
  timer in its own stream to claim the lane again.
Failures and aborts are the rollback consumer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import DeploymentState, Status, evolve
from consumers.deployment.emit import emit, step_id
from consumers.deployment.state import StepRecord
from events.command import Pause, Promote, Resume, Schedule
from events.deployment import (
    DeploymentApproved,
    DeploymentFailed,
    DeploymentPaused,
    DeploymentPlanned,
    DeploymentQueued,
    DeploymentRejected,
    DeploymentResumed,
    DeploymentRolledBack,
    DeploymentScheduled,
    DeploymentStarted,
    DeploymentSucceeded,
    Reason,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.execution import SnapshotTaken, StepApplied, StepStarted
from events.registry import REGISTRY
from events.timer import TimerFired, TimerScheduled
from events.topics import APPROVALS, COMMANDS, EXECUTIONS, ROLLBACKS, TIMERS, VERIFICATIONS
from events.verification import VerificationInconclusive, VerificationPassed

NAME = "execution"
SOURCE = "shiplog/execution"
TARGET_KINDS = frozenset({"rolling", "preview", "switch", "scale_down", "set_weight", "promote"})
PAUSE, WINDOW, LANE_FREE = "pause", "window", "lane_free"
TERMINAL_TYPES = (DeploymentSucceeded.TYPE, DeploymentRolledBack.TYPE, DeploymentFailed.TYPE)
NOT_STARTED = frozenset({Status.PLANNED, Status.AWAITING_APPROVAL, Status.APPROVED, Status.QUEUED})


@dataclass(frozen=True)
class Claimed:
    claimed: bool
    behind: str | None = None
    outdated: str | None = None
    #: the target's snapshot, taken once the lane is ours
    snapshot: dict[str, Any] | None = None
    snapshot_version: str | None = None


@dataclass(frozen=True)
class Applied:
    ok: bool
    already_applied: bool = False
    detail: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Released:
    woken: tuple[str, ...]


Facts = Claimed | Applied | Released | None


def wants_start(state: DeploymentState, event: CloudEvent, now: datetime) -> bool:
    """Whether this event is one on which the deployment should try to take its lane."""
    if state.status not in (Status.APPROVED, Status.QUEUED):
        return False
    if state.not_before is not None and state.not_before > now:
        return False
    if event.type_name == DeploymentApproved.TYPE:
        return True
    if event.type_name == TimerFired.TYPE:
        return REGISTRY.payload(event, TimerFired).purpose in (WINDOW, LANE_FREE)
    return False


def decide(
    state: DeploymentState, event: CloudEvent, *, now: datetime, facts: Facts = None
) -> list[CloudEvent]:
    plan = state.plan
    if plan is None:
        return []
    if event.type_name in TERMINAL_TYPES:
        return _wake_queued(plan, event, facts, now)
    if state.terminal or state.status is Status.ROLLING_BACK:
        return []
    if isinstance(facts, Claimed):
        return _start(state, plan, event, facts)
    kind = event.type_name
    if kind == StepStarted.TYPE:
        return _on_step_started(state, plan, event, facts, now)
    if kind == VerificationPassed.TYPE:
        passed = REGISTRY.payload(event, VerificationPassed)
        if state.status is Status.RUNNING and passed.step_index == state.current:
            return _advance(state, plan, event, passed.step_index)
        return []
    if kind == VerificationInconclusive.TYPE:
        inconclusive = REGISTRY.payload(event, VerificationInconclusive)
        if state.status is Status.RUNNING and inconclusive.step_index == state.current:
            return [
                _paused(
                    plan,
                    event,
                    inconclusive.step_index,
                    f"analysis inconclusive, a person decides: {inconclusive.reason}",
                )
            ]
        return []
    if kind == TimerFired.TYPE:
        fired = REGISTRY.payload(event, TimerFired)
        index = state.current
        if (
            fired.purpose == PAUSE
            and state.status is Status.PAUSED
            and index is not None
            and fired.payload.get("index") == index
        ):
            return [_resumed(plan, event, index), *_advance(state, plan, event, index)]
        return []
    if kind == Promote.TYPE and state.status is Status.PAUSED and state.current is not None:
        return [_resumed(plan, event, state.current), *_advance(state, plan, event, state.current)]
    if kind == Schedule.TYPE and state.status in NOT_STARTED:
        return _schedule(plan, event, REGISTRY.payload(event, Schedule).not_before, now)
    if kind == Pause.TYPE and state.status is Status.RUNNING:
        return [_paused(plan, event, state.current or 0, f"paused by {event.actor or 'unknown'}")]
    if kind == Resume.TYPE and state.status is Status.PAUSED and state.current is not None:
        record = state.step(state.current)
        resumed = [_resumed(plan, event, state.current)]
        if record is not None and _never_acted_on(state, record):
            # the pause came between the step's intent and its processing: act on it now
            return [*resumed, _step_started(plan, event, state.current)]
        if record is not None and record.step.kind == "pause" and record.step.duration_s is None:
            return []  # an indefinite pause waits for exactly `promote`
        # Inconclusive paused for a person; their resume is the decision to go on.
        done = record is not None and (
            record.verified in ("Successful", "Inconclusive") or record.step.kind == "pause"
        )
        return resumed + (_advance(state, plan, event, state.current) if done else [])
    return []


def _schedule(
    plan: DeploymentPlanned, event: CloudEvent, not_before: datetime, now: datetime
) -> list[CloudEvent]:
    """A person asked for a not-before time: record it, and wake the deployment then
    through the same durable timer a deploy window uses."""
    due = max(not_before, now)
    return [
        emit(
            plan,
            DeploymentScheduled(
                deployment_id=plan.deployment_id,
                not_before=due,
                reason=f"not before {due:%Y-%m-%d %H:%M %Z}, asked by {event.actor or 'unknown'}",
            ),
            source=SOURCE,
            cause=event,
        ),
        emit(
            plan,
            TimerScheduled(
                timer_id=f"{plan.deployment_id}:{WINDOW}:{event.id}",
                stream_id=deployment_stream(plan.deployment_id),
                due_at=due,
                purpose=WINDOW,
            ),
            source=SOURCE,
            cause=event,
        ),
    ]


def _never_acted_on(state: DeploymentState, record: StepRecord) -> bool:
    """A step whose intent is recorded but that nothing acted on (it came while paused)."""
    if record.step.kind in TARGET_KINDS:
        return not record.applied
    if record.step.kind == "pause" and record.step.duration_s is not None:
        return f"{record.step_id}:timer" not in state.timers_scheduled
    return False


def _start(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, facts: Claimed
) -> list[CloudEvent]:
    if facts.outdated:
        return [
            emit(
                plan,
                DeploymentRejected(
                    deployment_id=plan.deployment_id,
                    release_id=plan.release_id,
                    service=plan.service,
                    version=plan.version,
                    environment=plan.environment,
                    reasons=[Reason(code="outdated", message=facts.outdated)],
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    if not facts.claimed:
        if state.status is Status.QUEUED:
            return []
        return [
            emit(
                plan,
                DeploymentQueued(deployment_id=plan.deployment_id, behind=facts.behind or "?"),
                source=SOURCE,
                cause=event,
            )
        ]
    return [
        emit(plan, DeploymentStarted(deployment_id=plan.deployment_id), source=SOURCE, cause=event),
        emit(
            plan,
            SnapshotTaken(
                deployment_id=plan.deployment_id,
                version=facts.snapshot_version,
                snapshot=facts.snapshot or {},
            ),
            source=SOURCE,
            cause=event,
        ),
        _step_started(plan, event, 0),
    ]


def _step_started(plan: DeploymentPlanned, event: CloudEvent, index: int) -> CloudEvent:
    step = plan.strategy.steps[index]
    return emit(
        plan,
        StepStarted(
            deployment_id=plan.deployment_id,
            index=index,
            step_id=step_id(plan.deployment_id, index, step.kind),
            step=step,
        ),
        source=SOURCE,
        cause=event,
    )


def _on_step_started(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, facts: Facts, now: datetime
) -> list[CloudEvent]:
    started = REGISTRY.payload(event, StepStarted)
    record = state.step(started.index)
    if state.status is not Status.RUNNING or record is None or record.applied:
        return []
    step = started.step
    if step.kind in TARGET_KINDS:
        if not isinstance(facts, Applied):
            return []
        return [
            emit(
                plan,
                StepApplied(
                    deployment_id=plan.deployment_id,
                    index=started.index,
                    step_id=started.step_id,
                    step=step,
                    ok=facts.ok,
                    already_applied=facts.already_applied,
                    detail=facts.detail or {},
                    error=facts.error,
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    if step.kind == "pause":
        if step.duration_s is None:
            return [_paused(plan, event, started.index, "waiting for promote")]
        until = now + timedelta(seconds=step.duration_s)
        return [
            emit(
                plan,
                TimerScheduled(
                    timer_id=f"{started.step_id}:timer",
                    stream_id=deployment_stream(plan.deployment_id),
                    due_at=until,
                    purpose=PAUSE,
                    payload={"index": started.index},
                ),
                source=SOURCE,
                cause=event,
            ),
            _paused(plan, event, started.index, f"pause {step.duration_s:g}s", until=until),
        ]
    return []  # analysis: verification answers


def _advance(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, index: int
) -> list[CloudEvent]:
    if index + 1 < len(plan.strategy.steps):
        if state.step(index + 1) is not None:
            return []
        return [_step_started(plan, event, index + 1)]
    return [
        emit(
            plan,
            DeploymentSucceeded(
                deployment_id=plan.deployment_id,
                release_id=plan.release_id,
                service=plan.service,
                environment=plan.environment,
                version=plan.version,
                next_environment=plan.next_environment,
            ),
            source=SOURCE,
            cause=event,
        )
    ]


def _paused(
    plan: DeploymentPlanned, event: CloudEvent, index: int, reason: str, until: datetime | None = None
) -> CloudEvent:
    return emit(
        plan,
        DeploymentPaused(
            deployment_id=plan.deployment_id, step_index=index, reason=reason, until=until, by=event.actor
        ),
        source=SOURCE,
        cause=event,
    )


def _resumed(plan: DeploymentPlanned, event: CloudEvent, index: int) -> CloudEvent:
    return emit(
        plan,
        DeploymentResumed(deployment_id=plan.deployment_id, step_index=index, by=event.actor),
        source=SOURCE,
        cause=event,
    )


def _wake_queued(plan: DeploymentPlanned, event: CloudEvent, facts: Facts, now: datetime) -> list[CloudEvent]:
    if not isinstance(facts, Released):
        return []
    return [
        emit(
            plan,
            TimerScheduled(
                timer_id=f"{woken}:{LANE_FREE}:{event.id}",
                stream_id=deployment_stream(woken),
                due_at=now,
                purpose=LANE_FREE,
                payload={"subject": woken, "after": plan.deployment_id},
            ),
            source=SOURCE,
            cause=event,
        )
        for woken in facts.woken
    ]


EXECUTION_ACCEPTS = (
    DeploymentApproved.TYPE,
    StepStarted.TYPE,
    VerificationPassed.TYPE,
    VerificationInconclusive.TYPE,
    TimerFired.TYPE,
    Schedule.TYPE,
    Promote.TYPE,
    Pause.TYPE,
    Resume.TYPE,
    *TERMINAL_TYPES,
)


def _consumer() -> Consumer[DeploymentState]:
    from consumers.execution.gather import gather

    return Consumer(
        name=NAME,
        topics=(
            APPROVALS.name,
            EXECUTIONS.name,
            VERIFICATIONS.name,
            TIMERS.name,
            COMMANDS.name,
            ROLLBACKS.name,
        ),
        stream_for=lambda event: deployment_stream(event.subject),
        initial=DeploymentState,
        evolve=evolve,
        decide=decide,
        accepts=EXECUTION_ACCEPTS,
        gather=gather,
        description="snapshots, then walks the strategy's steps through the target",
    )


EXECUTION = _consumer()
