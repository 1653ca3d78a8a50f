"""The approval consumer's pure core.

On ``deployment.planned`` the gate is evaluated against the build's facts: when a
person is required, people are asked even if the criteria hold; when automatic
approval is configured and every criterion holds, the deployment is approved with
the rule that approved it; with no gate at all it passes; otherwise people are
asked (``approval.requested``, with an expiry timer if the policy has one). Fail
closed: a criterion that cannot be evaluated is a criterion that did not hold.

The policy is the ``gate`` of the plan, shaped for levels (each with roles and a
quorum) that a later issue fills in; today one level and one approver.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import DeploymentState, Status, evolve
from consumers.deployment.emit import emit
from consumers.deployment.state import DeploymentState as _S
from events.approval import ApprovalDenied, ApprovalGranted, ApprovalRequested
from events.deployment import DeploymentApproved, DeploymentDenied, DeploymentPlanned, deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY
from events.timer import TimerFired, TimerScheduled
from events.topics import COMMANDS, PLANS, TIMERS

NAME = "approval"
SOURCE = "shiplog/approval"
EXPIRY = "approval_expiry"


def assess_criteria(criteria: dict[str, Any], build: dict[str, Any], environment: str) -> list[str]:
    """The criteria that do NOT hold (empty: all hold). Missing facts fail."""
    failed: list[str] = []
    tests = build.get("tests") or {}
    security = build.get("security") or {}
    if (limit := criteria.get("tests_failed_max")) is not None:
        value = tests.get("failed")
        if value is None or value > limit:
            failed.append(f"tests failed {value if value is not None else 'unknown'} > {limit}")
    if (minimum := criteria.get("coverage_min")) is not None:
        value = tests.get("coverage")
        if value is None or value < minimum:
            failed.append(f"coverage {value if value is not None else 'unknown'} < {minimum}")
    if (limit := criteria.get("critical_vulns_max")) is not None:
        value = security.get("critical")
        if value is None or value > limit:
            failed.append(f"critical vulnerabilities {value if value is not None else 'unknown'} > {limit}")
    if (limit := criteria.get("high_vulns_max")) is not None:
        value = security.get("high")
        if value is None or value > limit:
            failed.append(f"high vulnerabilities {value if value is not None else 'unknown'} > {limit}")
    if (envs := criteria.get("environments")) is not None and environment not in envs:
        failed.append(f"environment {environment} not in {envs}")
    return failed


def may_answer(gate: dict[str, Any], who: str) -> bool:
    """Whether ``who`` may answer the (today: single) approval level: anyone when the
    level names nobody."""
    levels = (gate.get("manual") or {}).get("levels") or [{}]
    named = levels[0].get("approvers") or []
    return not named or who in named


def decide(state: DeploymentState, event: CloudEvent, *, now: datetime) -> list[CloudEvent]:
    plan = state.plan
    if plan is None or state.terminal:
        return []
    if event.type_name == DeploymentPlanned.TYPE:
        return _on_planned(state, plan, event, now) if state.status is Status.PLANNED else []
    if state.status is not Status.AWAITING_APPROVAL:
        return []
    if event.type_name in (ApprovalGranted.TYPE, ApprovalDenied.TYPE) and not may_answer(
        plan.gate, event.actor or ""
    ):
        return []  # not one of the named approvers: no answer (fail closed)
    if event.type_name == ApprovalGranted.TYPE:
        who = event.actor or "unknown"
        return [
            emit(
                plan,
                DeploymentApproved(
                    deployment_id=plan.deployment_id, automatic=False, rule="manual approval", approvers=[who]
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    if event.type_name == ApprovalDenied.TYPE:
        denied = REGISTRY.payload(event, ApprovalDenied)
        return [
            emit(
                plan,
                DeploymentDenied(
                    deployment_id=plan.deployment_id, by=event.actor, reason=denied.comment or "denied"
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    if event.type_name == TimerFired.TYPE and REGISTRY.payload(event, TimerFired).purpose == EXPIRY:
        return [
            emit(
                plan,
                DeploymentDenied(
                    deployment_id=plan.deployment_id, expired=True, reason="approval request expired"
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    return []


def _on_planned(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, now: datetime
) -> list[CloudEvent]:
    gate = plan.gate or {}
    criteria = gate.get("auto_approve")
    manual = gate.get("manual") or {}
    failed = assess_criteria(criteria, plan.build, plan.environment) if criteria else []
    if "manual" in gate and manual.get("required", True):  # fail closed on a bare manual gate
        why = "manual approval required"
    elif criteria and failed:
        why = "automatic approval criteria not met: " + "; ".join(failed)
    elif criteria:
        rule = "auto-approved: " + ", ".join(f"{k}={v}" for k, v in sorted(criteria.items()))
        return [
            emit(
                plan,
                DeploymentApproved(deployment_id=plan.deployment_id, automatic=True, rule=rule),
                source=SOURCE,
                cause=event,
            )
        ]
    else:
        return [
            emit(
                plan,
                DeploymentApproved(deployment_id=plan.deployment_id, automatic=True, rule="no gate"),
                source=SOURCE,
                cause=event,
            )
        ]
    expires_after = manual.get("expires_after_s")
    expires_at = now + timedelta(seconds=float(expires_after)) if expires_after else None
    out = [
        emit(
            plan,
            ApprovalRequested(
                deployment_id=plan.deployment_id,
                service=plan.service,
                environment=plan.environment,
                version=plan.version,
                expires_at=expires_at,
                why=why,
            ),
            source=SOURCE,
            cause=event,
        )
    ]
    if expires_at is not None:
        out.append(
            emit(
                plan,
                TimerScheduled(
                    timer_id=f"{plan.deployment_id}:{EXPIRY}",
                    stream_id=deployment_stream(plan.deployment_id),
                    due_at=expires_at,
                    purpose=EXPIRY,
                ),
                source=SOURCE,
                cause=event,
            )
        )
    return out


APPROVAL: Consumer[_S] = Consumer(
    name=NAME,
    topics=(PLANS.name, COMMANDS.name, TIMERS.name),
    stream_for=lambda event: deployment_stream(event.subject),
    initial=DeploymentState,
    evolve=evolve,
    decide=decide,
    accepts=(DeploymentPlanned.TYPE, ApprovalGranted.TYPE, ApprovalDenied.TYPE, TimerFired.TYPE),
    description="evaluates each deployment's gate; fails closed",
)
