"""Builders for the saga cores' unit tests: plans, every event of a deployment's
stream, commands, and folds.

Every event is made with ``events.registry.new_event`` with the deployment id as
its subject and a fixed aware ``NOW`` as its time. ``decide_on`` calls a core's
``decide`` the way the consumer shell does: against the fold of the stream, which
already holds the incoming event (the shell reads it back from the log) — or, for a
person's command, may not hold it yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from consumers.deployment import DeploymentState, fold
from events.approval import ApprovalDenied, ApprovalGranted, ApprovalRequested
from events.base import EventData
from events.command import Abort, Pause, Promote, Resume, Rollback
from events.deployment import (
    DeploymentApproved,
    DeploymentDenied,
    DeploymentFailed,
    DeploymentPaused,
    DeploymentPlanned,
    DeploymentQueued,
    DeploymentResumed,
    DeploymentRolledBack,
    DeploymentScheduled,
    DeploymentStarted,
    DeploymentSucceeded,
    PlannedStep,
    StrategyPlan,
    TargetRef,
    deployment_id,
)
from events.envelope import CloudEvent
from events.execution import SnapshotTaken, StepApplied, StepStarted
from events.registry import REGISTRY, new_event
from events.rollback import RollbackCompleted, RollbackStarted
from events.timer import TimerFired, TimerScheduled
from events.verification import VerificationFailed, VerificationInconclusive, VerificationPassed

D = TypeVar("D", bound=EventData)

#: the frozen clock every decide is called with
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)

SERVICE = "web"
ENVIRONMENT = "production"
RELEASE_ID = "rel-1"
VERSION = "1.1.0"
PREVIOUS_VERSION = "1.0.0"
DEPLOYMENT_ID = deployment_id(SERVICE, ENVIRONMENT, RELEASE_ID)
SNAPSHOT = {"service": SERVICE, "environment": ENVIRONMENT, "version": PREVIOUS_VERSION}

CANARY_STEPS = (
    PlannedStep(kind="set_weight", weight=20),
    PlannedStep(kind="analysis"),
    PlannedStep(kind="set_weight", weight=50),
    PlannedStep(kind="pause", duration_s=30),
    PlannedStep(kind="promote"),
)
#: the indices of CANARY_STEPS, by what they are
SET_20, ANALYSIS, SET_50, PAUSE_30S, PROMOTE = range(5)
ROLLING_STEPS = (
    PlannedStep(kind="rolling", batch_size=1, max_unavailable=0),
    PlannedStep(kind="analysis"),
)

#: what a person gives on ``shiplog.commands``: the recorder appends it to the
#: deployment's stream in its own time, so a consumer may decide on it before or
#: after it is there
COMMAND_TYPES = frozenset(
    {
        ApprovalGranted.TYPE,
        ApprovalDenied.TYPE,
        Promote.TYPE,
        Pause.TYPE,
        Resume.TYPE,
        Abort.TYPE,
        Rollback.TYPE,
    }
)


# --- plans --------------------------------------------------------------------------


def plan(
    steps: Sequence[PlannedStep] = CANARY_STEPS,
    *,
    strategy: Literal["rolling", "blue_green", "canary"] = "canary",
    **overrides: Any,
) -> DeploymentPlanned:
    """A production deployment of web 1.1.0 over 1.0.0; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "deployment_id": DEPLOYMENT_ID,
        "release_id": RELEASE_ID,
        "service": SERVICE,
        "version": VERSION,
        "artifact": f"registry.example/{SERVICE}:{VERSION}",
        "environment": ENVIRONMENT,
        "stage": 1,
        "previous_environment": "staging",
        "next_environment": None,
        "strategy": StrategyPlan(type=strategy, reason="as configured", steps=list(steps)),
        "target": TargetRef(type="local", settings={}),
        "build": {"tests": {"failed": 0, "coverage": 91.5}, "security": {"critical": 0, "high": 2}},
        "plan_hash": "hash-1",
    }
    return DeploymentPlanned(**{**fields, **overrides})


def canary_plan(**overrides: Any) -> DeploymentPlanned:
    """Canary: set_weight 20, analysis, set_weight 50, pause 30s, promote."""
    return plan(CANARY_STEPS, strategy="canary", **overrides)


def rolling_plan(**overrides: Any) -> DeploymentPlanned:
    """Rolling: roll one at a time, then analyse."""
    return plan(ROLLING_STEPS, strategy="rolling", **overrides)


# --- events -------------------------------------------------------------------------


def event(
    data: EventData,
    *,
    actor: str | None = None,
    subject: str = DEPLOYMENT_ID,
    source: str = "shiplog/test",
    at: datetime = NOW,
) -> CloudEvent:
    return new_event(data, source=source, subject=subject, correlationid=RELEASE_ID, actor=actor, time=at)


def planned(p: DeploymentPlanned | None = None) -> CloudEvent:
    return event(p or canary_plan(), source="shiplog/planning")


def scheduled(not_before: datetime) -> CloudEvent:
    return event(DeploymentScheduled(deployment_id=DEPLOYMENT_ID, not_before=not_before, reason="window"))


def approval_requested() -> CloudEvent:
    return event(
        ApprovalRequested(
            deployment_id=DEPLOYMENT_ID, service=SERVICE, environment=ENVIRONMENT, version=VERSION
        )
    )


def approved() -> CloudEvent:
    return event(DeploymentApproved(deployment_id=DEPLOYMENT_ID, automatic=True, rule="no gate"))


def deployment_denied(*, expired: bool = False) -> CloudEvent:
    return event(
        DeploymentDenied(deployment_id=DEPLOYMENT_ID, by=None if expired else "bob", expired=expired)
    )


def queued(behind: str = "web.production.rel-0") -> CloudEvent:
    return event(DeploymentQueued(deployment_id=DEPLOYMENT_ID, behind=behind))


def started() -> CloudEvent:
    return event(DeploymentStarted(deployment_id=DEPLOYMENT_ID))


def snapshot_taken(version: str | None = PREVIOUS_VERSION) -> CloudEvent:
    return event(SnapshotTaken(deployment_id=DEPLOYMENT_ID, version=version, snapshot=SNAPSHOT))


def step_id_of(p: DeploymentPlanned, index: int) -> str:
    return f"{p.deployment_id}:{index}:{p.strategy.steps[index].kind}"


def step_started(p: DeploymentPlanned, index: int) -> CloudEvent:
    return event(
        StepStarted(
            deployment_id=p.deployment_id,
            index=index,
            step_id=step_id_of(p, index),
            step=p.strategy.steps[index],
        )
    )


def step_applied(
    p: DeploymentPlanned, index: int, *, ok: bool = True, error: str | None = None
) -> CloudEvent:
    return event(
        StepApplied(
            deployment_id=p.deployment_id,
            index=index,
            step_id=step_id_of(p, index),
            step=p.strategy.steps[index],
            ok=ok,
            error=error,
        )
    )


def verification_passed(index: int) -> CloudEvent:
    return event(VerificationPassed(deployment_id=DEPLOYMENT_ID, step_index=index, outcome="Successful"))


def verification_failed(index: int, *, outcome: str = "Failed", reason: str = "error rate 12%") -> CloudEvent:
    return event(
        VerificationFailed(
            deployment_id=DEPLOYMENT_ID,
            step_index=index,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
        )
    )


def verification_inconclusive(index: int, *, reason: str = "no data") -> CloudEvent:
    return event(
        VerificationInconclusive(
            deployment_id=DEPLOYMENT_ID, step_index=index, outcome="Inconclusive", reason=reason
        )
    )


def deployment_paused(index: int, reason: str = "paused by alice", *, by: str | None = "alice") -> CloudEvent:
    return event(DeploymentPaused(deployment_id=DEPLOYMENT_ID, step_index=index, reason=reason, by=by))


def deployment_resumed(index: int) -> CloudEvent:
    return event(DeploymentResumed(deployment_id=DEPLOYMENT_ID, step_index=index))


def timer_scheduled(purpose: str, *, timer_id: str | None = None, **payload: Any) -> CloudEvent:
    return event(
        TimerScheduled(
            timer_id=timer_id or f"{DEPLOYMENT_ID}:{purpose}",
            stream_id=f"deployment-{DEPLOYMENT_ID}",
            due_at=NOW,
            purpose=purpose,
            payload=payload,
        )
    )


def timer_fired(purpose: str, *, timer_id: str | None = None, **payload: Any) -> CloudEvent:
    return event(
        TimerFired(
            timer_id=timer_id or f"{DEPLOYMENT_ID}:{purpose}",
            stream_id=f"deployment-{DEPLOYMENT_ID}",
            due_at=NOW,
            fired_at=NOW,
            purpose=purpose,
            payload=payload,
        ),
        source="shiplog/timers",
    )


def succeeded(p: DeploymentPlanned | None = None) -> CloudEvent:
    p = p or canary_plan()
    return event(
        DeploymentSucceeded(
            deployment_id=p.deployment_id,
            release_id=p.release_id,
            service=p.service,
            environment=p.environment,
            version=p.version,
            next_environment=p.next_environment,
        )
    )


def deployment_failed(reason: str = "aborted by alice") -> CloudEvent:
    return event(DeploymentFailed(deployment_id=DEPLOYMENT_ID, reason=reason))


def rollback_started(reason: str = "verification failed") -> CloudEvent:
    return event(
        RollbackStarted(
            deployment_id=DEPLOYMENT_ID,
            reason=reason,
            to_version=PREVIOUS_VERSION,
            step_id=f"{DEPLOYMENT_ID}:rollback",
        )
    )


def rollback_completed(*, ok: bool = True, healthy: bool = True) -> CloudEvent:
    return event(RollbackCompleted(deployment_id=DEPLOYMENT_ID, ok=ok, healthy=healthy))


def rolled_back(*, healthy: bool = True) -> CloudEvent:
    return event(
        DeploymentRolledBack(
            deployment_id=DEPLOYMENT_ID,
            service=SERVICE,
            environment=ENVIRONMENT,
            to_version=PREVIOUS_VERSION,
            reason="verification failed",
            healthy=healthy,
        )
    )


# --- a person's commands --------------------------------------------------------------


def granted(actor: str = "alice", comment: str = "") -> CloudEvent:
    return event(
        ApprovalGranted(deployment_id=DEPLOYMENT_ID, comment=comment), actor=actor, source="shiplog/cli"
    )


def denied(actor: str = "bob", comment: str = "") -> CloudEvent:
    return event(
        ApprovalDenied(deployment_id=DEPLOYMENT_ID, comment=comment), actor=actor, source="shiplog/cli"
    )


def command(
    model: type[Promote | Pause | Resume | Abort], actor: str = "alice", comment: str = ""
) -> CloudEvent:
    return event(model(deployment_id=DEPLOYMENT_ID, comment=comment), actor=actor, source="shiplog/cli")


def rollback_command(actor: str = "alice", *, to_version: str | None = None, comment: str = "") -> CloudEvent:
    return event(
        Rollback(service=SERVICE, environment=ENVIRONMENT, to_version=to_version, comment=comment),
        actor=actor,
        subject=f"{SERVICE}.{ENVIRONMENT}",
        source="shiplog/cli",
    )


# --- histories ----------------------------------------------------------------------

StepStage = Literal["started", "applied", "verified"]


def running(
    p: DeploymentPlanned | None = None, *, at: int = 0, stage: StepStage = "started"
) -> list[CloudEvent]:
    """The stream of a deployment that started, snapshotted, walked every step before
    ``at`` to its end, and has step ``at`` at ``stage``: its intent recorded
    (``started``), the target's answer recorded (``applied``, target steps only), or
    its verification passed (``verified``)."""
    p = p or canary_plan()
    history = [planned(p), approved(), started(), snapshot_taken()]
    for index in range(at):
        history += _completed_step(p, index)
    history.append(step_started(p, at))
    if stage in ("applied", "verified") and p.strategy.steps[at].kind not in ("pause", "analysis"):
        history.append(step_applied(p, at))
    if stage == "verified":
        history.append(verification_passed(at))
    return history


def _completed_step(p: DeploymentPlanned, index: int) -> list[CloudEvent]:
    kind = p.strategy.steps[index].kind
    if kind == "pause":
        return [
            step_started(p, index),
            timer_scheduled("pause", index=index),
            deployment_paused(index, "pause 30s", by=None),
            timer_fired("pause", index=index),
            deployment_resumed(index),
        ]
    if kind == "analysis":
        return [step_started(p, index), verification_passed(index)]
    return [step_started(p, index), step_applied(p, index), verification_passed(index)]


# --- folding and deciding -----------------------------------------------------------


def fold_events(events: Iterable[CloudEvent]) -> DeploymentState:
    return fold(events)


def decide_on(
    decide: Callable[..., list[CloudEvent]],
    history: Sequence[CloudEvent],
    incoming: CloudEvent,
    **kwargs: Any,
) -> list[CloudEvent]:
    """``decide`` as the shell calls it, at ``NOW``, against the fold of the stream,
    which holds ``incoming`` (an event already in ``history`` is a redelivery and is
    not folded twice).

    A person's command may or may not be in the stream yet (the recorder races the
    consumer): it is decided both ways, the two answers must agree, and the one
    without it is returned."""
    folded = [*history, incoming] if all(e.id != incoming.id for e in history) else list(history)
    out = decide(fold(folded), incoming, now=NOW, **kwargs)
    if incoming.type_name in COMMAND_TYPES:
        before = decide(fold(e for e in folded if e.id != incoming.id), incoming, now=NOW, **kwargs)
        assert _meaning(before) == _meaning(out), "a command decided differently once recorded"
        return before
    return out


def _meaning(events: Iterable[CloudEvent]) -> list[tuple[str, dict[str, Any], str | None]]:
    return [(e.type, e.data, e.actor) for e in events]


def kinds(events: Iterable[CloudEvent]) -> list[str]:
    """``["deployment.started", ...]``: the type names without ``shiplog.``."""
    return [e.type_name.removeprefix("shiplog.") for e in events]


def payload(e: CloudEvent, model: type[D]) -> D:
    return REGISTRY.payload(e, model)
