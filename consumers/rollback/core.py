"""The rollback consumer's pure core.

Triggers — a failed verification, a step the target refused, an ``abort`` command,
a ``rollback`` command for a service's environment, a ``rollback.requested`` of
the release coordinator (a service this one depends on was rolled back) — record the intent,
``rollback.started``, with a deterministic step id. On its own ``rollback.started``
the gather restores the snapshot through the target (idempotent by that step id)
and checks the health of what it restored; decide records ``rollback.completed``
and the terminal ``deployment.rolled_back``. A deployment that never changed
anything (aborted before its first step) ends ``deployment.failed`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import DeploymentState, Status, evolve
from consumers.deployment.emit import emit
from events.command import Abort, Rollback
from events.deployment import DeploymentFailed, DeploymentRolledBack, deployment_stream
from events.envelope import CloudEvent
from events.execution import StepApplied
from events.registry import REGISTRY
from events.release import RollbackRequested
from events.rollback import RollbackCompleted, RollbackStarted
from events.topics import COMMANDS, EXECUTIONS, ROLLBACKS, VERIFICATIONS
from events.verification import VerificationFailed

NAME = "rollback"
SOURCE = "shiplog/rollback"


@dataclass(frozen=True)
class Restored:
    ok: bool
    healthy: bool
    detail: dict[str, Any]
    error: str | None = None


def rollback_step_id(deployment_id: str) -> str:
    return f"{deployment_id}:rollback"


def trigger_reason(state: DeploymentState, event: CloudEvent) -> str | None:
    """Why this event calls for a rollback of this deployment, or None."""
    kind = event.type_name
    active = state.status in (
        Status.RUNNING,
        Status.PAUSED,
        Status.QUEUED,
        Status.APPROVED,
        Status.AWAITING_APPROVAL,
        Status.PLANNED,
    )
    if kind == VerificationFailed.TYPE and active:
        failed = REGISTRY.payload(event, VerificationFailed)
        return f"verification {failed.outcome.lower()} at step {failed.step_index}: {failed.reason}"
    if kind == StepApplied.TYPE and active:
        applied = REGISTRY.payload(event, StepApplied)
        if not applied.ok:
            return f"step {applied.index} ({applied.step.kind}) failed: {applied.error}"
    if kind == Abort.TYPE and active:
        return f"aborted by {event.actor or 'unknown'}"
    if kind == RollbackRequested.TYPE and (active or state.status is Status.SUCCEEDED):
        return REGISTRY.payload(event, RollbackRequested).reason
    if kind == Rollback.TYPE and (active or state.status is Status.SUCCEEDED):
        command = REGISTRY.payload(event, Rollback)
        return f"rollback requested by {event.actor or 'unknown'}" + (
            f": {command.comment}" if command.comment else ""
        )
    return None


def decide(
    state: DeploymentState, event: CloudEvent, *, now: datetime, facts: Restored | None = None
) -> list[CloudEvent]:
    plan = state.plan
    if plan is None:
        return []
    if event.type_name == RollbackStarted.TYPE:
        if state.rollback_done or not isinstance(facts, Restored):
            return []
        started = REGISTRY.payload(event, RollbackStarted)
        return [
            emit(
                plan,
                RollbackCompleted(
                    deployment_id=plan.deployment_id,
                    ok=facts.ok,
                    healthy=facts.healthy,
                    detail=facts.detail,
                    error=facts.error,
                ),
                source=SOURCE,
                cause=event,
            ),
            emit(
                plan,
                DeploymentRolledBack(
                    deployment_id=plan.deployment_id,
                    service=plan.service,
                    environment=plan.environment,
                    to_version=started.to_version,
                    reason=started.reason,
                    healthy=facts.ok and facts.healthy,
                ),
                source=SOURCE,
                cause=event,
            ),
        ]
    if state.status is Status.ROLLING_BACK or state.rollback_step_id is not None:
        return []
    reason = trigger_reason(state, event)
    if reason is None:
        return []
    if state.snapshot is None:
        # Nothing was changed yet: there is nothing to restore.
        return [
            emit(
                plan,
                DeploymentFailed(deployment_id=plan.deployment_id, reason=reason),
                source=SOURCE,
                cause=event,
            )
        ]
    return [
        emit(
            plan,
            RollbackStarted(
                deployment_id=plan.deployment_id,
                reason=reason,
                to_version=state.previous_version,
                step_id=rollback_step_id(plan.deployment_id),
            ),
            source=SOURCE,
            cause=event,
        )
    ]


async def locate(ports: Any, event: CloudEvent) -> str:
    """A rollback command names a service's environment: roll back its active
    deployment, or else the last one that succeeded there."""
    if event.type_name != Rollback.TYPE:
        return deployment_stream(event.subject)
    from shiplog.status import find_deployment

    command = REGISTRY.payload(event, Rollback)
    found = await find_deployment(ports.log, command.service, command.environment)
    return (
        deployment_stream(found) if found else f"rollback-unmatched-{command.service}.{command.environment}"
    )


async def gather(ports: Any, state: DeploymentState, event: CloudEvent) -> Restored | None:
    plan = state.plan
    if plan is None or event.type_name != RollbackStarted.TYPE or state.rollback_done:
        return None
    from consumers.rollback.restore import restore

    return await restore(ports, plan, state, REGISTRY.payload(event, RollbackStarted))


ROLLBACK: Consumer[DeploymentState] = Consumer(
    name=NAME,
    topics=(VERIFICATIONS.name, EXECUTIONS.name, COMMANDS.name, ROLLBACKS.name),
    stream_for=lambda event: deployment_stream(event.subject),
    initial=DeploymentState,
    evolve=evolve,
    decide=decide,
    accepts=(
        VerificationFailed.TYPE,
        StepApplied.TYPE,
        Abort.TYPE,
        Rollback.TYPE,
        RollbackRequested.TYPE,
        RollbackStarted.TYPE,
    ),
    gather=gather,
    locate=locate,
    description="restores the snapshot through the target on failure, abort or request",
)
