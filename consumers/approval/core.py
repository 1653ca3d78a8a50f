"""The approval consumer's pure core: a deployment's gate, level by level.

On ``deployment.planned`` the gate is evaluated. The first auto-approval rule whose
every criterion holds approves (unless people are required anyway); no rule holding
means people decide — fail closed, a criterion without data does not hold. People
approve in ordered levels; each level names the roles (and principals) that may
approve it and a quorum of distinct principals. Separation of duties keeps the
build's author and whoever triggered the deployment out (per policy, default on).

Every answer is judged here, from the log alone, and leaves a record: counted
(``approval.recorded``, and ``approval.level_completed`` when the quorum is met) or
refused (``approval.refused`` with the reason). An answer is bound to the plan and
the artifact the approver saw: one for another plan hash or digest is refused, and a
new plan voids what was counted under the old one (``approval.voided``). A level not
completed in time expires the deployment (``approval.expired``, then
``deployment.denied``), after a reminder (``approval.reminded``).

Two people approving at the same instant are decided one after the other (the
shell's expected-version check makes the second decide against the first's
record): both are recorded, the level advances once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import DeploymentState, Status, evolve
from consumers.deployment.emit import emit
from consumers.deployment.state import ApprovalProgress
from consumers.deployment.state import DeploymentState as _S
from consumers.planning.calendar import is_open
from consumers.planning.pipeline import ApprovalLevel, AutoApprove, Gate, parse_duration
from events.approval import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalLevelCompleted,
    ApprovalRecorded,
    ApprovalRefused,
    ApprovalReminded,
    ApprovalRequested,
    ApprovalVoided,
)
from events.base import EventData
from events.deployment import (
    DeploymentApproved,
    DeploymentDenied,
    DeploymentPlanned,
    DeploymentSucceeded,
    deployment_id,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.registry import REGISTRY
from events.timer import TimerFired, TimerScheduled
from events.topics import COMMANDS, PLANS, TIMERS

NAME = "approval"
SOURCE = "shiplog/approval"
EXPIRY = "approval_expiry"
REMINDER = "approval_reminder"
RECHECK = "approval_recheck"


@dataclass(frozen=True)
class ApprovalFacts:
    """What the gate needs from outside the deployment's own stream."""

    #: when this version succeeded in the previous environment (None: not known)
    previous_succeeded_at: datetime | None = None


# --- criteria -------------------------------------------------------------------------


def assess_criteria(
    criteria: dict[str, Any] | AutoApprove,
    build: dict[str, Any],
    environment: str,
    *,
    now: datetime | None = None,
    previous_succeeded_at: datetime | None = None,
) -> list[str]:
    """The criteria of one rule that do NOT hold (empty: all hold). Missing facts fail."""
    rule = criteria if isinstance(criteria, AutoApprove) else AutoApprove.model_validate(criteria)
    failed: list[str] = []
    tests = build.get("tests") or {}
    security = build.get("security") or {}
    change = build.get("change") or {}

    def at_most(value: Any, limit: int | float | None, what: str) -> None:
        if limit is not None and (value is None or value > limit):
            failed.append(f"{what} {value if value is not None else 'unknown'} > {limit}")

    at_most(tests.get("failed"), rule.tests_failed_max, "tests failed")
    if rule.coverage_min is not None:
        value = tests.get("coverage")
        if value is None or value < rule.coverage_min:
            failed.append(f"coverage {value if value is not None else 'unknown'} < {rule.coverage_min}")
    at_most(security.get("critical"), rule.critical_vulns_max, "critical vulnerabilities")
    at_most(security.get("high"), rule.high_vulns_max, "high vulnerabilities")
    at_most(change.get("lines"), rule.max_changed_lines, "changed lines")
    at_most(change.get("files"), rule.max_changed_files, "changed files")
    if rule.environments is not None and environment not in rule.environments:
        failed.append(f"environment {environment} not in {rule.environments}")
    if rule.min_soak is not None:
        soak = parse_duration(rule.min_soak)
        if previous_succeeded_at is None or now is None:
            failed.append(f"no success in the previous environment to have soaked {rule.min_soak}")
        elif now - previous_succeeded_at < soak:
            failed.append(
                f"soaked {_short(now - previous_succeeded_at)} of {rule.min_soak} in the previous environment"
            )
    if rule.windows is not None:
        open_now, why = is_open(rule.windows, now) if now is not None else (False, "no clock")
        if not open_now:
            failed.append(f"outside the auto-approval windows: {why}")
    return failed


def rule_text(rule: AutoApprove) -> str:
    criteria = rule.model_dump(mode="json", exclude_none=True, exclude={"name", "windows"})
    if rule.windows:
        criteria["windows"] = [w.label for w in rule.windows]
    listed = ", ".join(f"{k}={v}" for k, v in sorted(criteria.items()))
    return f"auto-approved by rule {rule.name!r}: {listed}"


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def excluded_principals(plan: DeploymentPlanned, gate: Gate) -> list[str]:
    """Who may not approve under separation of duties: the build's author and whoever
    triggered the deployment (the build's ``triggered_by``)."""
    if gate.manual is not None and not gate.manual.separation_of_duties:
        return []
    names = [plan.build.get("author"), plan.build.get("triggered_by")]
    return sorted({n for n in names if isinstance(n, str) and n})


def _levels(gate: Gate) -> list[ApprovalLevel]:
    return gate.manual.levels if gate.manual is not None else [ApprovalLevel()]


# --- decide -----------------------------------------------------------------------------


def decide(
    state: DeploymentState, event: CloudEvent, *, now: datetime, facts: ApprovalFacts | None = None
) -> list[CloudEvent]:
    facts = facts or ApprovalFacts()
    plan = state.plan
    kind = event.type_name
    if kind in (ApprovalGranted.TYPE, ApprovalDenied.TYPE):
        if plan is None:
            return []  # nothing to refuse in the name of: the answer is in the log as it came
        return _on_answer(state, plan, event, now)
    if plan is None or state.terminal:
        return []
    if kind == DeploymentPlanned.TYPE:
        return _on_planned(state, plan, event, now, facts) if state.status is Status.PLANNED else []
    if kind == TimerFired.TYPE:
        return _on_timer(state, plan, event, now, facts)
    return []


def _on_planned(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, now: datetime, facts: ApprovalFacts
) -> list[CloudEvent]:
    out: list[CloudEvent] = []
    old = state.approval
    if old is not None and old.plan_hash != plan.plan_hash:
        out.append(
            emit(
                plan,
                ApprovalVoided(
                    deployment_id=plan.deployment_id,
                    reason="the plan changed (new version, edited pipeline or re-plan): "
                    "approvals given for the old plan no longer count",
                    old_plan_hash=old.plan_hash,
                    new_plan_hash=plan.plan_hash,
                    voided=[
                        f"{who} ({_level_name(old, index)})"
                        for index in sorted(old.counted)
                        for who in old.counted[index]
                    ],
                ),
                source=SOURCE,
                cause=event,
            )
        )
    gate = Gate.model_validate(plan.gate)
    if not gate.rules and gate.manual is None:
        return [*out, _approved(plan, event, automatic=True, rule="no gate")]
    verdicts = [
        (
            rule,
            assess_criteria(
                rule, plan.build, plan.environment, now=now, previous_succeeded_at=facts.previous_succeeded_at
            ),
        )
        for rule in gate.rules
    ]
    holding = next((rule for rule, failed in verdicts if not failed), None)
    manual_required = gate.manual is not None and gate.manual.required
    if holding is not None and not manual_required:
        return [*out, _approved(plan, event, automatic=True, rule=rule_text(holding))]
    if manual_required:
        why = "manual approval required"
    elif verdicts:
        why = "no auto-approval rule holds: " + " | ".join(
            f"{rule.name}: {'; '.join(failed)}" for rule, failed in verdicts
        )
    else:
        why = "manual approval required"
    out += _request(plan, gate, 0, event, now, why)
    if not manual_required:
        out += _recheck_when_soaked(plan, verdicts, facts, event)
    return out


def _recheck_when_soaked(
    plan: DeploymentPlanned,
    verdicts: list[tuple[AutoApprove, list[str]]],
    facts: ApprovalFacts,
    cause: CloudEvent,
) -> list[CloudEvent]:
    """A rule that fails only for want of soak time holds later: look again then."""
    if facts.previous_succeeded_at is None:
        return []
    due: datetime | None = None
    for rule, failed in verdicts:
        if rule.min_soak and len(failed) == 1 and failed[0].startswith("soaked "):
            at = facts.previous_succeeded_at + parse_duration(rule.min_soak)
            due = at if due is None else min(due, at)
    if due is None:
        return []
    return [
        emit(
            plan,
            TimerScheduled(
                timer_id=f"{plan.deployment_id}:{RECHECK}:{plan.plan_hash[:12]}",
                stream_id=deployment_stream(plan.deployment_id),
                due_at=due,
                purpose=RECHECK,
                payload={"plan_hash": plan.plan_hash},
            ),
            source=SOURCE,
            cause=cause,
        )
    ]


def _request(
    plan: DeploymentPlanned, gate: Gate, index: int, cause: CloudEvent, now: datetime, why: str
) -> list[CloudEvent]:
    levels = _levels(gate)
    level = levels[index]
    expiry = gate.manual.expiry if gate.manual is not None else None
    lead = gate.manual.reminder_lead if gate.manual is not None else None
    expires_at = now + expiry if expiry is not None else None
    remind_at = None
    if expires_at is not None and expiry is not None and lead is not None and lead < expiry:
        remind_at = expires_at - lead
    out = [
        emit(
            plan,
            ApprovalRequested(
                deployment_id=plan.deployment_id,
                service=plan.service,
                environment=plan.environment,
                version=plan.version,
                level=level.name,
                level_index=index,
                levels=len(levels),
                roles=level.roles,
                approvers=level.approvers,
                quorum=level.quorum,
                excluded=excluded_principals(plan, gate),
                plan_hash=plan.plan_hash,
                digest=plan.digest,
                expires_at=expires_at,
                remind_at=remind_at,
                why=why,
            ),
            source=SOURCE,
            cause=cause,
        )
    ]
    for purpose, due in ((EXPIRY, expires_at), (REMINDER, remind_at)):
        if due is not None:
            out.append(
                emit(
                    plan,
                    TimerScheduled(
                        timer_id=f"{plan.deployment_id}:{purpose}:{plan.plan_hash[:12]}:{index}",
                        stream_id=deployment_stream(plan.deployment_id),
                        due_at=due,
                        purpose=purpose,
                        payload={"plan_hash": plan.plan_hash, "level_index": index},
                    ),
                    source=SOURCE,
                    cause=cause,
                )
            )
    return out


def _approved(
    plan: DeploymentPlanned,
    cause: CloudEvent,
    *,
    automatic: bool,
    rule: str,
    approvers: list[str] | None = None,
) -> CloudEvent:
    return emit(
        plan,
        DeploymentApproved(
            deployment_id=plan.deployment_id, automatic=automatic, rule=rule, approvers=approvers or []
        ),
        source=SOURCE,
        cause=cause,
    )


def _level_name(progress: ApprovalProgress, index: int) -> str:
    return progress.request.level if progress.level_index == index else f"level {index + 1}"


# --- answers ----------------------------------------------------------------------------


def _on_answer(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, now: datetime
) -> list[CloudEvent]:
    granted = event.type_name == ApprovalGranted.TYPE
    answer: ApprovalGranted | ApprovalDenied = (
        REGISTRY.payload(event, ApprovalGranted) if granted else REGISTRY.payload(event, ApprovalDenied)
    )
    who = event.actor or ""

    def refuse(reason: str) -> list[CloudEvent]:
        return [
            emit(
                plan,
                ApprovalRefused(
                    deployment_id=plan.deployment_id,
                    actor=who or None,
                    answer="approve" if granted else "deny",
                    reason=reason,
                    role=answer.role,
                    client=answer.client,
                    command_id=event.id,
                ),
                source=SOURCE,
                cause=event,
            )
        ]

    if not who:
        return refuse("the answer names no authenticated principal")
    progress = state.approval
    if answer.plan_hash is not None and answer.plan_hash != plan.plan_hash:
        return refuse(
            f"the answer is bound to plan {answer.plan_hash[:12]}, the plan is now {plan.plan_hash[:12]}: "
            "look at the new plan and answer again"
        )
    if answer.digest is not None and answer.digest != plan.digest:
        return refuse(f"the answer is bound to artifact {answer.digest}, the plan deploys {plan.digest}")
    if state.terminal or progress is None or progress.plan_hash != plan.plan_hash:
        return refuse(f"nothing awaits approval (the deployment is {state.status.value})")
    gate = Gate.model_validate(plan.gate)
    levels = _levels(gate)
    names = [level.name for level in levels]
    if answer.level is not None and answer.level not in names:
        return refuse(f"the gate has no level {answer.level!r} (levels: {', '.join(names)})")
    if answer.level is not None:
        index = names.index(answer.level)
    elif progress.open:
        index = progress.level_index
    else:
        index = max(progress.completed)  # a late answer: the level the approver saw
    if index > progress.level_index:
        return refuse(
            f"levels complete in order: {names[index]!r} is not open yet "
            f"(waiting for {names[progress.level_index]!r})"
        )
    level = levels[index]
    if who in progress.request.excluded or who in excluded_principals(plan, gate):
        return refuse(f"separation of duties: {who} wrote or triggered this release and may not approve it")
    role, why_not = _qualifies(level, who, answer)
    if why_not:
        return refuse(why_not)
    counted = progress.counted.get(index, ())
    if who in counted:
        return refuse(f"{who} already approved level {level.name!r}: one person counts once per level")
    done = index in progress.completed
    if not granted:
        if done or state.status is not Status.AWAITING_APPROVAL:
            return refuse(f"level {level.name!r} is already complete: it can no longer be denied")
        return [
            emit(
                plan,
                DeploymentDenied(
                    deployment_id=plan.deployment_id,
                    by=who,
                    reason=answer.comment or f"denied at level {level.name!r}",
                ),
                source=SOURCE,
                cause=event,
            )
        ]
    out = [
        emit(
            plan,
            ApprovalRecorded(
                deployment_id=plan.deployment_id,
                level=level.name,
                level_index=index,
                approver=who,
                role=role,
                comment=answer.comment,
                client=answer.client,
                plan_hash=plan.plan_hash,
                count=len(counted) + 1,
                quorum=level.quorum,
                command_id=event.id,
            ),
            source=SOURCE,
            cause=event,
        )
    ]
    if done or len(counted) + 1 < level.quorum:
        return out  # a late approval is recorded; the level advanced already
    approvers = [*counted, who]
    out.append(
        emit(
            plan,
            ApprovalLevelCompleted(
                deployment_id=plan.deployment_id, level=level.name, level_index=index, approvers=approvers
            ),
            source=SOURCE,
            cause=event,
        )
    )
    if index + 1 < len(levels):
        return out + _request(plan, gate, index + 1, event, now, f"level {level.name!r} approved")
    everyone = [*progress.approvers(), who]
    rule = "approved at " + ", ".join(
        f"{lv.name} by {', '.join(progress.counted.get(i, ()) if i != index else approvers)}"
        for i, lv in enumerate(levels)
    )
    return [*out, _approved(plan, event, automatic=False, rule=rule, approvers=everyone)]


def _qualifies(
    level: ApprovalLevel, who: str, answer: ApprovalGranted | ApprovalDenied
) -> tuple[str | None, str]:
    """(the role used, '') when ``who`` may answer ``level``; (None, why not) otherwise."""
    if answer.role is not None and answer.role not in answer.roles:
        return None, f"{who} does not hold the role {answer.role!r}"
    if not level.roles and not level.approvers:
        return answer.role, ""
    if who in level.approvers:
        return answer.role, ""
    if answer.role is not None:
        if answer.role in level.roles:
            return answer.role, ""
        return (
            None,
            f"the role {answer.role!r} may not approve level {level.name!r}"
            f" (roles: {', '.join(level.roles)})",
        )
    held = [r for r in answer.roles if r in level.roles]
    if held:
        return held[0], ""
    needed = ", ".join(level.roles) or "none"
    return None, f"{who} holds none of the roles level {level.name!r} needs ({needed})"


# --- timers -----------------------------------------------------------------------------


def _on_timer(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, now: datetime, facts: ApprovalFacts
) -> list[CloudEvent]:
    fired = REGISTRY.payload(event, TimerFired)
    progress = state.approval
    if state.status is not Status.AWAITING_APPROVAL or progress is None:
        return []
    if fired.payload.get("plan_hash", progress.plan_hash) != progress.plan_hash:
        return []  # set under a plan since replaced
    if fired.purpose == RECHECK:
        return _recheck(state, plan, event, now, facts)
    index = fired.payload.get("level_index", progress.level_index)
    if index != progress.level_index or not progress.open:
        return []
    request = progress.request
    if fired.purpose == REMINDER and request.expires_at is not None:
        data: EventData = ApprovalReminded(
            deployment_id=plan.deployment_id,
            service=plan.service,
            environment=plan.environment,
            version=plan.version,
            level=request.level,
            expires_at=request.expires_at,
        )
        return [emit(plan, data, source=SOURCE, cause=event)]
    if fired.purpose == EXPIRY:
        return [
            emit(
                plan,
                ApprovalExpired(deployment_id=plan.deployment_id, level=request.level, expired_at=now),
                source=SOURCE,
                cause=event,
            ),
            emit(
                plan,
                DeploymentDenied(
                    deployment_id=plan.deployment_id,
                    expired=True,
                    reason=f"approval level {request.level!r} was not completed in time (expired)",
                ),
                source=SOURCE,
                cause=event,
            ),
        ]
    return []


def _recheck(
    state: DeploymentState, plan: DeploymentPlanned, event: CloudEvent, now: datetime, facts: ApprovalFacts
) -> list[CloudEvent]:
    gate = Gate.model_validate(plan.gate)
    if gate.manual is not None and gate.manual.required:
        return []
    for rule in gate.rules:
        if not assess_criteria(
            rule, plan.build, plan.environment, now=now, previous_succeeded_at=facts.previous_succeeded_at
        ):
            return [_approved(plan, event, automatic=True, rule=rule_text(rule))]
    return []


# --- gather -----------------------------------------------------------------------------


async def gather(ports: Any, state: DeploymentState, event: CloudEvent) -> ApprovalFacts:
    """When this version succeeded in the previous environment (for soak criteria)."""
    plan = state.plan
    if (
        plan is None
        or plan.previous_environment is None
        or event.type_name not in (DeploymentPlanned.TYPE, TimerFired.TYPE)
    ):
        return ApprovalFacts()
    gate = Gate.model_validate(plan.gate)
    if not any(rule.min_soak for rule in gate.rules):
        return ApprovalFacts()
    previous = deployment_id(plan.service, plan.previous_environment, plan.release_id)
    for record in await ports.log.read_stream(deployment_stream(previous)):
        if record.event.type_name == DeploymentSucceeded.TYPE:
            return ApprovalFacts(previous_succeeded_at=record.event.time)
    return ApprovalFacts()


APPROVAL: Consumer[_S] = Consumer(
    name=NAME,
    topics=(PLANS.name, COMMANDS.name, TIMERS.name),
    stream_for=lambda event: deployment_stream(event.subject),
    initial=DeploymentState,
    evolve=evolve,
    decide=decide,
    gather=gather,
    accepts=(DeploymentPlanned.TYPE, ApprovalGranted.TYPE, ApprovalDenied.TYPE, TimerFired.TYPE),
    description="evaluates each deployment's gate, level by level; fails closed",
)
