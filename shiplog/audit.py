"""``shiplog audit show DEPLOYMENT [--at TIME]``: a deployment as it stood at one
instant, rebuilt from the log alone — the plan, the approval levels and who had
approved (with role, comment, client address and time), what was refused or voided,
verification results so far, the window state, and where it was.

What an approver saw when they clicked is the state just before their approval was
recorded: ``--at`` that approval's time, or a moment before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.eventlog.records import RecordedEvent
from consumers.deployment import DeploymentState, evolve
from events.deployment import deployment_stream
from events.envelope import CloudEvent

#: what the audit lists per event type: the type name -> a short label
APPROVAL_TYPES = {
    "shiplog.approval.requested": "requested",
    "shiplog.approval.granted": "approve (command)",
    "shiplog.approval.denied": "deny (command)",
    "shiplog.approval.recorded": "counted",
    "shiplog.approval.level_completed": "level completed",
    "shiplog.approval.refused": "refused",
    "shiplog.approval.voided": "voided",
    "shiplog.approval.reminded": "reminded",
    "shiplog.approval.expired": "expired",
    "shiplog.command.refused": "command refused (unsigned)",
    "shiplog.deployment.approved": "approved",
    "shiplog.deployment.denied": "denied",
}
VERIFICATION_TYPES = (
    "shiplog.verification.passed",
    "shiplog.verification.failed",
    "shiplog.verification.inconclusive",
)
WINDOW_TYPES = ("shiplog.deployment.scheduled",)


@dataclass
class AuditView:
    deployment_id: str
    at: datetime | None
    state: DeploymentState
    events_seen: int
    events_total: int
    last_recorded_at: datetime | None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        plan = self.state.plan
        progress = self.state.approval
        return {
            "deployment_id": self.deployment_id,
            "at": self.at.isoformat() if self.at else None,
            "events": {"seen": self.events_seen, "total": self.events_total},
            "last_recorded_at": self.last_recorded_at.isoformat() if self.last_recorded_at else None,
            "status": self.state.status.value,
            "plan": None
            if plan is None
            else {
                "service": plan.service,
                "environment": plan.environment,
                "version": plan.version,
                "artifact": plan.artifact,
                "digest": plan.digest,
                "plan_hash": plan.plan_hash,
                "strategy": plan.strategy.model_dump(mode="json"),
                "gate": plan.gate,
                "build": plan.build,
            },
            "approval": None
            if progress is None
            else {
                "plan_hash": progress.plan_hash,
                "level": progress.request.level,
                "level_index": progress.level_index,
                "levels": progress.request.levels,
                "quorum": progress.request.quorum,
                "counted": {str(k): list(v) for k, v in progress.counted.items()},
                "completed_levels": sorted(progress.completed),
                "expires_at": progress.request.expires_at.isoformat()
                if progress.request.expires_at
                else None,
            },
            "approval_log": self.approvals,
            "verifications": self.verifications,
            "window": self.window,
            "steps": {
                str(i): {
                    "kind": r.step.kind,
                    "weight": r.step.weight,
                    "applied": r.applied,
                    "verified": r.verified,
                }
                for i, r in sorted(self.state.steps.items())
            },
            "snapshot": self.state.snapshot,
        }


def reconstruct(
    deployment_id: str, history: Sequence[RecordedEvent], at: datetime | None = None
) -> AuditView:
    """Fold the records recorded at or before ``at`` (all of them without it)."""
    state = DeploymentState()
    seen = [r for r in history if at is None or r.recorded_at <= at]
    view = AuditView(
        deployment_id,
        at,
        state,
        events_seen=len(seen),
        events_total=len(history),
        last_recorded_at=seen[-1].recorded_at if seen else None,
    )
    for record in seen:
        event = record.event
        state = evolve(state, event)
        if event.type_name in APPROVAL_TYPES:
            view.approvals.append(_approval_line(event, record))
        elif event.type_name in VERIFICATION_TYPES:
            view.verifications.append(
                {
                    "at": record.recorded_at.isoformat(),
                    "outcome": event.type_name.rsplit(".", 1)[1],
                    "step_index": event.data.get("step_index"),
                    "summary": event.data.get("reason") or "",
                    "measurements": event.data.get("measurements") or [],
                }
            )
        elif event.type_name in WINDOW_TYPES:
            view.window = {
                "state": "waiting for the window",
                "not_before": event.data.get("not_before"),
                "reason": event.data.get("reason"),
            }
        elif event.type_name == "shiplog.timer.fired" and event.data.get("purpose") == "window":
            view.window = {**view.window, "state": "window opened", "opened_at": event.data.get("fired_at")}
    view.state = state
    if not view.window and state.plan is not None:
        view.window = {"state": "open (the deployment was never held for a window)"}
    return view


def _approval_line(event: CloudEvent, record: RecordedEvent) -> dict[str, Any]:
    data = event.data
    return {
        "at": record.recorded_at.isoformat(),
        "what": APPROVAL_TYPES[event.type_name],
        "type": event.type_name,
        "actor": event.actor
        or data.get("approver")
        or data.get("actor")
        or data.get("by")
        or data.get("claimed_actor"),
        "role": data.get("role"),
        "level": data.get("level"),
        "comment": data.get("comment") or "",
        "client": data.get("client"),
        "reason": data.get("reason") or data.get("why") or data.get("rule") or "",
        "event_id": event.id,
    }


async def show(log: Any, deployment_id: str, at: datetime | None = None) -> AuditView | None:
    history = await log.read_stream(deployment_stream(deployment_id))
    if not history:
        return None
    return reconstruct(deployment_id, history, at)


def render(view: AuditView) -> list[str]:
    """The view as text lines (Rich markup)."""
    d = view.to_dict()
    plan = d["plan"]
    when = f"as of {view.at.isoformat()}" if view.at else "now"
    lines = [f"[bold]{view.deployment_id}[/bold] {when}: [bold]{d['status']}[/bold]"]
    lines.append(f"  events: {view.events_seen} of {view.events_total} recorded by then")
    if plan is None:
        lines.append("  nothing was planned yet at that time")
        return lines
    lines += [
        f"  plan: {plan['service']} {plan['version']} -> {plan['environment']}"
        f" ({plan['strategy']['type']}, {len(plan['strategy']['steps'])} steps)",
        f"        artifact {plan['artifact']} digest {plan['digest'] or '-'}"
        f" plan hash {plan['plan_hash'][:16]}",
    ]
    approval = d["approval"]
    if approval:
        counted = (
            "; ".join(f"level {k}: {', '.join(v)}" for k, v in approval["counted"].items()) or "none yet"
        )
        lines.append(
            f"  approval: level {approval['level_index'] + 1} of {approval['levels']} ({approval['level']!r},"
            f" quorum {approval['quorum']}); counted: {counted}; expires {approval['expires_at'] or 'never'}"
        )
    for line in d["approval_log"]:
        extra = " ".join(
            f"{k}={line[k]}" for k in ("level", "role", "client") if line.get(k) not in (None, "")
        )
        said = f" {line['comment']!r}" if line["comment"] else ""
        why = f" — {line['reason']}" if line["reason"] else ""
        lines.append(f"    {line['at']} {line['what']:<26} {line['actor'] or ''} {extra}{said}{why}")
    if d["verifications"]:
        lines.append("  verification so far:")
        for v in d["verifications"]:
            lines.append(f"    {v['at']} step {v['step_index']}: {v['outcome']} {v['summary']}")
    else:
        lines.append("  verification so far: none")
    lines.append(
        f"  window: {d['window'].get('state')}"
        + (f" until {d['window']['not_before']}" if d["window"].get("not_before") else "")
    )
    if d["steps"]:
        steps = ", ".join(
            f"{i}:{s['kind']}{'@' + str(s['weight']) if s['weight'] is not None else ''}"
            f"{' applied' if s['applied'] else ''}{' ' + s['verified'] if s['verified'] else ''}"
            for i, s in d["steps"].items()
        )
        lines.append(f"  steps: {steps}")
    if d["snapshot"]:
        lines.append(f"  rollback snapshot: {d['snapshot'].get('version', '?')}")
    return lines
