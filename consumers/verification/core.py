"""The verification consumer's pure core: when to verify, and the verdict as an event.

It decides against the shared deployment fold (``consumers.deployment``). A step
that changed the target and applied ok is verified with the health checks (and the
metric and query checks after a weight change, when a stable version serves beside
the canary); an ``analysis`` step runs the full analysis when it starts. Each step
is verified once: a step the state already holds a verification for is left alone.
A check that could not be measured more than its consecutive-error limit in a row
ends as Error, which is ``verification.failed``: the deployment is rolled back.

``gather`` (in ``consumers.verification.gather``) does the measuring; ``decide``
only judges what it found and records every measurement in exactly one of
``verification.passed``, ``verification.failed`` (Failed or Error) or
``verification.inconclusive``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from consumers.deployment.state import DeploymentState, Status
from consumers.verification.analysis import Verdict, measure, verdict_over
from consumers.verification.facts import Facts
from consumers.verification.impact import step_weight
from consumers.verification.policy import AnalysisPolicy, policy_of
from events.deployment import DeploymentPlanned, deployment_stream
from events.envelope import CloudEvent
from events.execution import StepApplied, StepStarted
from events.registry import REGISTRY, new_event
from events.verification import (
    Measurement,
    VerificationFailed,
    VerificationInconclusive,
    VerificationPassed,
)

NAME = "verification"
SOURCE = "shiplog/verification"
#: steps that change what serves, verified after they applied ok
TARGET_KINDS: frozenset[str] = frozenset(
    {"rolling", "preview", "switch", "set_weight", "promote", "scale_down"}
)
ANALYSIS = "analysis"
#: a deployment in these states has nothing left to verify
_DONE: frozenset[Status] = frozenset({Status.ROLLING_BACK})

_EVENT_FOR = {
    "Successful": VerificationPassed,
    "Failed": VerificationFailed,
    "Error": VerificationFailed,
    "Inconclusive": VerificationInconclusive,
}


@dataclass(frozen=True, slots=True)
class Check:
    """One verification to run: of which step, of which kind."""

    plan: DeploymentPlanned
    index: int
    kind: str


def stream_for(event: CloudEvent) -> str:
    """Every deployment event's subject is its deployment id."""
    return deployment_stream(event.subject)


def check_for(state: DeploymentState, event: CloudEvent) -> Check | None:
    """The verification this event calls for, or None."""
    plan = state.plan
    if plan is None or state.terminal or state.status in _DONE:
        return None
    step: StepApplied | StepStarted
    if event.type_name == StepApplied.TYPE:
        step = REGISTRY.payload(event, StepApplied)
        if not step.ok or step.step.kind not in TARGET_KINDS:
            return None
    elif event.type_name == StepStarted.TYPE:
        step = REGISTRY.payload(event, StepStarted)
        if step.step.kind != ANALYSIS:
            return None
    else:
        return None
    if step.deployment_id != plan.deployment_id:
        return None
    record = state.step(step.index)
    if record is not None and record.verified is not None:
        return None  # verified already: a redelivery, or a replay
    return Check(plan, step.index, step.step.kind)


def verdict_of(check: Check, facts: Facts | None) -> tuple[Verdict, list[Measurement]]:
    """Judge what gather found under the plan's analysis policy."""
    try:
        policy: AnalysisPolicy = policy_of(check.plan)
    except ValidationError as exc:
        return Verdict("Error", f"the plan's analysis policy is invalid: {exc}"), []
    if facts is None:
        return Verdict("Inconclusive", "nothing was measured"), []
    measurements = measure(facts, policy, check.kind, weight=step_weight(check.plan, check.index))
    return verdict_over(measurements, policy), measurements


def decide(
    state: DeploymentState,
    event: CloudEvent,
    *,
    now: datetime,
    facts: Facts | None = None,
) -> list[CloudEvent]:
    """Exactly one verification event for a step that calls for one, else nothing."""
    del now  # the measurements carry their own timing; the verdict needs no clock
    check = check_for(state, event)
    if check is None:
        return []
    verdict, measurements = verdict_of(check, facts)
    model = _EVENT_FOR[verdict.outcome]
    payload = model(
        deployment_id=check.plan.deployment_id,
        step_index=check.index,
        outcome=verdict.outcome,
        reason=verdict.reason,
        measurements=measurements,
    )
    return [
        new_event(
            payload,
            source=SOURCE,
            subject=check.plan.deployment_id,
            correlationid=check.plan.release_id,
            causationid=event.id,
        )
    ]
