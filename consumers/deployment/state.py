"""The deployment's state, folded from its stream.

Every saga consumer (approval, execution, verification, rollback) decides against
the same fold of ``deployment-<id>``: what was planned, where approval stands, which
step runs and what the target said, what verification found, whether it ended.
One ``evolve`` per event type, dispatched on the type name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from events.approval import (
    ApprovalLevelCompleted,
    ApprovalRecorded,
    ApprovalRequested,
    ApprovalVoided,
)
from events.deployment import (
    DeploymentApproved,
    DeploymentDenied,
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
    PlannedStep,
)
from events.envelope import CloudEvent
from events.execution import SnapshotTaken, StepApplied, StepStarted
from events.registry import REGISTRY
from events.rollback import RollbackCompleted, RollbackStarted
from events.timer import TimerFired, TimerScheduled
from events.verification import VerificationFailed, VerificationInconclusive, VerificationPassed


class Status(StrEnum):
    NEW = "new"
    PLANNED = "planned"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    DENIED = "denied"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.ROLLED_BACK, Status.REJECTED, Status.DENIED})


@dataclass(frozen=True)
class StepRecord:
    step: PlannedStep
    step_id: str
    applied: bool = False
    ok: bool | None = None
    verified: str | None = None  # the verification outcome for this step, if any


@dataclass(frozen=True)
class ApprovalProgress:
    """Where the gate's levels stand, under one plan (a new plan voids it)."""

    plan_hash: str
    #: the level asked for last (its request), and when
    request: ApprovalRequested
    requested_at: datetime
    #: level index -> the principals counted there, in order
    counted: dict[int, tuple[str, ...]] = field(default_factory=dict)
    completed: frozenset[int] = frozenset()

    @property
    def level_index(self) -> int:
        return self.request.level_index

    @property
    def open(self) -> bool:
        """Whether the level asked for last still waits."""
        return self.level_index not in self.completed

    def approvers(self) -> list[str]:
        return [who for index in sorted(self.counted) for who in self.counted[index]]


@dataclass(frozen=True)
class DeploymentState:
    plan: DeploymentPlanned | None = None
    status: Status = Status.NEW
    approvers: tuple[str, ...] = ()
    approval: ApprovalProgress | None = None
    snapshot: dict[str, Any] | None = None
    previous_version: str | None = None
    #: index -> record, for every step started so far
    steps: dict[int, StepRecord] = field(default_factory=dict)
    current: int | None = None
    paused_reason: str | None = None
    #: timers scheduled and fired, by id
    timers_scheduled: frozenset[str] = frozenset()
    timers_fired: frozenset[str] = frozenset()
    rollback_step_id: str | None = None
    rollback_done: bool = False
    not_before: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def deployment_id(self) -> str | None:
        return self.plan.deployment_id if self.plan else None

    def step(self, index: int) -> StepRecord | None:
        return self.steps.get(index)


Evolver = Callable[[DeploymentState, Any, CloudEvent], DeploymentState]
_EVOLVERS: dict[str, tuple[type, Evolver]] = {}


def _on(model: type) -> Callable[[Evolver], Evolver]:
    def register(fn: Evolver) -> Evolver:
        _EVOLVERS[model.TYPE] = (model, fn)  # type: ignore[attr-defined]
        return fn

    return register


def evolve(state: DeploymentState, event: CloudEvent) -> DeploymentState:
    entry = _EVOLVERS.get(event.type_name)
    if entry is None:
        return state
    model, fn = entry
    return fn(state, REGISTRY.payload(event, model), event)


def fold(events: Iterable[CloudEvent]) -> DeploymentState:
    state = DeploymentState()
    for event in events:
        state = evolve(state, event)
    return state


@_on(DeploymentPlanned)
def _planned(s: DeploymentState, d: DeploymentPlanned, e: CloudEvent) -> DeploymentState:
    return replace(s, plan=d, status=Status.PLANNED, not_before=d.not_before)


@_on(DeploymentScheduled)
def _scheduled(s: DeploymentState, d: DeploymentScheduled, e: CloudEvent) -> DeploymentState:
    return replace(s, not_before=d.not_before)


@_on(DeploymentRejected)
def _rejected(s: DeploymentState, d: DeploymentRejected, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.REJECTED)


@_on(ApprovalRequested)
def _requested(s: DeploymentState, d: ApprovalRequested, e: CloudEvent) -> DeploymentState:
    previous = s.approval
    if previous is not None and previous.plan_hash == d.plan_hash:
        progress = replace(previous, request=d, requested_at=e.time)
    else:
        progress = ApprovalProgress(plan_hash=d.plan_hash, request=d, requested_at=e.time)
    return replace(s, status=Status.AWAITING_APPROVAL, approval=progress)


@_on(ApprovalRecorded)
def _recorded(s: DeploymentState, d: ApprovalRecorded, e: CloudEvent) -> DeploymentState:
    progress = s.approval
    if progress is None or progress.plan_hash != d.plan_hash:
        return s
    counted = {**progress.counted, d.level_index: (*progress.counted.get(d.level_index, ()), d.approver)}
    return replace(s, approval=replace(progress, counted=counted), approvers=(*s.approvers, d.approver))


@_on(ApprovalLevelCompleted)
def _level_completed(s: DeploymentState, d: ApprovalLevelCompleted, e: CloudEvent) -> DeploymentState:
    progress = s.approval
    if progress is None:
        return s
    return replace(s, approval=replace(progress, completed=progress.completed | {d.level_index}))


@_on(ApprovalVoided)
def _voided(s: DeploymentState, d: ApprovalVoided, e: CloudEvent) -> DeploymentState:
    return replace(s, approval=None, approvers=())


@_on(DeploymentApproved)
def _approved(s: DeploymentState, d: DeploymentApproved, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.APPROVED)


@_on(DeploymentDenied)
def _denied(s: DeploymentState, d: DeploymentDenied, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.DENIED)


@_on(DeploymentQueued)
def _queued(s: DeploymentState, d: DeploymentQueued, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.QUEUED)


@_on(DeploymentStarted)
def _started(s: DeploymentState, d: DeploymentStarted, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.RUNNING)


@_on(SnapshotTaken)
def _snapshot(s: DeploymentState, d: SnapshotTaken, e: CloudEvent) -> DeploymentState:
    return replace(s, snapshot=d.snapshot, previous_version=d.version)


@_on(StepStarted)
def _step_started(s: DeploymentState, d: StepStarted, e: CloudEvent) -> DeploymentState:
    steps = {**s.steps, d.index: StepRecord(d.step, d.step_id)}
    return replace(s, steps=steps, current=d.index)


@_on(StepApplied)
def _step_applied(s: DeploymentState, d: StepApplied, e: CloudEvent) -> DeploymentState:
    record = s.steps.get(d.index, StepRecord(d.step, d.step_id))
    return replace(s, steps={**s.steps, d.index: replace(record, applied=True, ok=d.ok)})


def _verified(s: DeploymentState, index: int, outcome: str) -> DeploymentState:
    record = s.steps.get(index)
    if record is None:
        return s
    return replace(s, steps={**s.steps, index: replace(record, verified=outcome)})


@_on(VerificationPassed)
def _passed(s: DeploymentState, d: VerificationPassed, e: CloudEvent) -> DeploymentState:
    return _verified(s, d.step_index, "Successful")


@_on(VerificationFailed)
def _failed(s: DeploymentState, d: VerificationFailed, e: CloudEvent) -> DeploymentState:
    return _verified(s, d.step_index, d.outcome)


@_on(VerificationInconclusive)
def _inconclusive(s: DeploymentState, d: VerificationInconclusive, e: CloudEvent) -> DeploymentState:
    return _verified(s, d.step_index, "Inconclusive")


@_on(DeploymentPaused)
def _paused(s: DeploymentState, d: DeploymentPaused, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.PAUSED, paused_reason=d.reason)


@_on(DeploymentResumed)
def _resumed(s: DeploymentState, d: DeploymentResumed, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.RUNNING, paused_reason=None)


@_on(TimerScheduled)
def _timer_scheduled(s: DeploymentState, d: TimerScheduled, e: CloudEvent) -> DeploymentState:
    return replace(s, timers_scheduled=s.timers_scheduled | {d.timer_id})


@_on(TimerFired)
def _timer_fired(s: DeploymentState, d: TimerFired, e: CloudEvent) -> DeploymentState:
    return replace(s, timers_fired=s.timers_fired | {d.timer_id})


@_on(RollbackStarted)
def _rollback_started(s: DeploymentState, d: RollbackStarted, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.ROLLING_BACK, rollback_step_id=d.step_id)


@_on(RollbackCompleted)
def _rollback_completed(s: DeploymentState, d: RollbackCompleted, e: CloudEvent) -> DeploymentState:
    return replace(s, rollback_done=True)


@_on(DeploymentSucceeded)
def _succeeded(s: DeploymentState, d: DeploymentSucceeded, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.SUCCEEDED)


@_on(DeploymentFailed)
def _dep_failed(s: DeploymentState, d: DeploymentFailed, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.FAILED)


@_on(DeploymentRolledBack)
def _rolled_back(s: DeploymentState, d: DeploymentRolledBack, e: CloudEvent) -> DeploymentState:
    return replace(s, status=Status.ROLLED_BACK)
