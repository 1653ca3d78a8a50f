"""The notification consumer's pure core: for one event, which notifications go to
which channels with what content; and, once delivered, what the log records.

- ``evolve`` folds the deployment's stream into what routing needs (service,
  environment, version) and the ``(event, channel)`` pairs already recorded;
- ``plan`` picks the channels the routes name for the event and composes one
  message per channel, leaving out the pairs already recorded — so a redelivered
  event never sends again what the log says was sent;
- ``decide`` turns the delivery outcomes (the shell's ``gather`` does the I/O) into
  ``notification.sent`` / ``notification.failed``, caused by the event.

A notification's id is derived from the event's id and the channel's name: the
webhook's delivery id, the e-mail's Message-ID and the recorded event's id are
the same across redeliveries and crashes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from adapters.notify import Message
from consumers.notification.config import EVENT_KINDS, NotificationsFile, Route
from events.approval import (
    ApprovalExpired,
    ApprovalReminded,
    ApprovalRequested,
    ApprovalVoided,
)
from events.deployment import (
    DeploymentApproved,
    DeploymentDenied,
    DeploymentFailed,
    DeploymentPlanned,
    DeploymentRejected,
    DeploymentRolledBack,
    DeploymentSucceeded,
    ReleasePlanned,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.notification import NotificationFailed, NotificationSent
from events.registry import REGISTRY, new_event

NAME = "notification"
SOURCE = "shiplog/notification"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://shiplog.dev/notification")

#: ``shiplog.<kind>`` type names the consumer reacts to
NOTIFIABLE_TYPES: tuple[str, ...] = tuple(f"shiplog.{kind}" for kind in EVENT_KINDS)


def kind_of(event: CloudEvent) -> str | None:
    """``shiplog.approval.requested.v2`` -> ``approval.requested`` (None: not notifiable)."""
    name = event.type_name.removeprefix("shiplog.")
    return name if name in EVENT_KINDS else None


def notification_id(event_id: str, channel: str) -> str:
    """Stable per (event, channel)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{event_id}\n{channel}"))


def stream_for(event: CloudEvent) -> str:
    """The deployment's stream; a release rejected before any deployment was planned
    has only its release stream."""
    deployment = event.data.get("deployment_id")
    if deployment:
        return deployment_stream(deployment)
    if event.type_name == DeploymentRejected.TYPE:
        return f"release-{event.data['release_id']}"
    return deployment_stream(event.subject)


# --- state --------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationState:
    deployment_id: str | None = None
    service: str | None = None
    environment: str | None = None
    version: str | None = None
    #: ``(event id, channel)`` pairs with a notification.sent or .failed in the stream
    recorded: frozenset[tuple[str, str]] = frozenset()


def evolve(state: NotificationState, event: CloudEvent) -> NotificationState:
    name = event.type_name
    if name in (NotificationSent.TYPE, NotificationFailed.TYPE):
        return replace(state, recorded=state.recorded | {(event.data["about"], event.data["channel"])})
    if name == DeploymentPlanned.TYPE:
        plan = REGISTRY.payload(event, DeploymentPlanned)
        return replace(
            state,
            deployment_id=plan.deployment_id,
            service=plan.service,
            environment=plan.environment,
            version=plan.version,
        )
    if name in (ApprovalRequested.TYPE, DeploymentRejected.TYPE, ReleasePlanned.TYPE):
        data = event.data
        return replace(
            state,
            deployment_id=state.deployment_id or data.get("deployment_id"),
            service=state.service or data.get("service"),
            environment=state.environment or data.get("environment"),
            version=state.version or data.get("version"),
        )
    return state


# --- routing ------------------------------------------------------------------------


@dataclass(frozen=True)
class About:
    """What a notification is about, as routes and people see it."""

    kind: str
    deployment_id: str | None
    service: str | None
    environment: str | None
    version: str | None

    @property
    def target(self) -> str:
        """``checkout 1.4.2 to production``, with what is known."""
        what = " ".join(p for p in (self.service, self.version) if p) or self.deployment_id or "a release"
        return f"{what} to {self.environment}" if self.environment else what


def about(state: NotificationState, event: CloudEvent) -> About | None:
    kind = kind_of(event)
    if kind is None:
        return None
    data = event.data
    return About(
        kind=kind,
        deployment_id=data.get("deployment_id") or state.deployment_id,
        service=data.get("service") or state.service,
        environment=data.get("environment") or state.environment,
        version=data.get("version") or state.version,
    )


def _matches(value: str | None, patterns: list[str] | None) -> bool:
    if patterns is None:
        return True
    return value is not None and any(fnmatchcase(value, p) for p in patterns)


def route_matches(route: Route, subject: About) -> bool:
    return (
        (route.events is None or subject.kind in route.events)
        and _matches(subject.service, route.services)
        and _matches(subject.environment, route.environments)
    )


def channels_for(config: NotificationsFile, subject: About) -> list[str]:
    """The enabled channels the matching routes name, each once, in route order."""
    out: list[str] = []
    for route in config.routes:
        if not route_matches(route, subject):
            continue
        for name in route.channels:
            channel = config.channel(name)
            if channel is not None and channel.enabled and name not in out:
                out.append(name)
    return out


# --- content ------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    title: str
    text: str
    facts: tuple[tuple[str, str], ...] = ()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _requested(d: ApprovalRequested, s: About) -> Content:
    level = f"level '{d.level}'" + (f" ({d.level_index + 1} of {d.levels})" if d.levels > 1 else "")
    who = [*(f"role {r}" for r in d.roles), *d.approvers]
    lines = [
        f"{d.quorum} approval{'s' if d.quorum != 1 else ''} needed at {level}"
        + (f" from: {', '.join(who)}." if who else "."),
    ]
    if d.expires_at:
        lines.append(f"The request expires at {_when(d.expires_at)}; the deployment is then denied.")
    if d.why:
        lines.append(d.why)
    lines.append(f"Approve with: shiplog approve {d.deployment_id}")
    facts = [("Level", d.level), ("Quorum", str(d.quorum))]
    if d.roles:
        facts.append(("Roles", ", ".join(d.roles)))
    if d.expires_at:
        facts.append(("Expires", _when(d.expires_at)))
    return Content(f"Approval needed: {s.target}", "\n".join(lines), tuple(facts))


def _reminded(d: ApprovalReminded, s: About) -> Content:
    return Content(
        f"Reminder: approval for {s.target} expires at {_when(d.expires_at)}",
        f"Level '{d.level}' still waits for approval. Approve with: shiplog approve {d.deployment_id}",
        (("Level", d.level), ("Expires", _when(d.expires_at))),
    )


def _expired(d: ApprovalExpired, s: About) -> Content:
    return Content(
        f"Approval expired: {s.target}",
        f"Level '{d.level}' was not approved by {_when(d.expired_at)}; the deployment ends denied.",
        (("Level", d.level),),
    )


def _voided(d: ApprovalVoided, s: About) -> Content:
    voided = ", ".join(d.voided) or "none yet"
    return Content(
        f"Approvals voided: {s.target}",
        f"The plan changed ({d.reason}); approvals given so far no longer count: {voided}.",
        (("Reason", d.reason),),
    )


def _approved(d: DeploymentApproved, s: About) -> Content:
    how = f"automatically (rule '{d.rule}')" if d.automatic else f"by {', '.join(d.approvers) or 'people'}"
    return Content(f"Approved: {s.target}", f"Approved {how}.")


def _denied(d: DeploymentDenied, s: About) -> Content:
    if d.expired:
        return Content(f"Expired: {s.target}", "Nobody approved in time; the deployment is denied.")
    by = f" by {d.by}" if d.by else ""
    return Content(f"Denied: {s.target}", f"Denied{by}" + (f": {d.reason}" if d.reason else "."))


def _rejected(d: DeploymentRejected, s: About) -> Content:
    reasons = "\n".join(f"- {r.code}: {r.message}" for r in d.reasons)
    return Content(f"Rejected: {s.target}", f"Planning refused the release:\n{reasons}")


def _succeeded(d: DeploymentSucceeded, s: About) -> Content:
    text = f"{d.version} serves {d.environment}."
    if d.next_environment:
        text += f" Next: {d.next_environment}."
    return Content(f"Deployed: {s.target}", text)


def _failed(d: DeploymentFailed, s: About) -> Content:
    return Content(f"Failed: {s.target}", d.reason)


def _rolled_back(d: DeploymentRolledBack, s: About) -> Content:
    health = "healthy" if d.healthy else "NOT healthy"
    back = f"back to {d.to_version}" if d.to_version else "back to what ran before"
    return Content(
        f"Rolled back: {s.target}",
        f"{d.service} in {d.environment} is {back} ({d.reason}); the environment is {health}.",
        (("Healthy", "yes" if d.healthy else "no"),),
    )


_COMPOSERS: dict[str, tuple[type[Any], Callable[[Any, About], Content]]] = {
    ApprovalRequested.TYPE: (ApprovalRequested, _requested),
    ApprovalReminded.TYPE: (ApprovalReminded, _reminded),
    ApprovalExpired.TYPE: (ApprovalExpired, _expired),
    ApprovalVoided.TYPE: (ApprovalVoided, _voided),
    DeploymentApproved.TYPE: (DeploymentApproved, _approved),
    DeploymentDenied.TYPE: (DeploymentDenied, _denied),
    DeploymentRejected.TYPE: (DeploymentRejected, _rejected),
    DeploymentSucceeded.TYPE: (DeploymentSucceeded, _succeeded),
    DeploymentFailed.TYPE: (DeploymentFailed, _failed),
    DeploymentRolledBack.TYPE: (DeploymentRolledBack, _rolled_back),
}
assert set(_COMPOSERS) == set(NOTIFIABLE_TYPES), "every notifiable kind has a composer"


def compose(event: CloudEvent, subject: About) -> Content:
    model, fn = _COMPOSERS[event.type_name]
    content = fn(REGISTRY.payload(event, model), subject)
    known = [
        ("Service", subject.service),
        ("Environment", subject.environment),
        ("Version", subject.version),
        ("Deployment", subject.deployment_id),
    ]
    return replace(content, facts=(*((k, v) for k, v in known if v), *content.facts))


# --- plan and decide ----------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """One notification to deliver: a message for one channel."""

    about: str
    about_type: str
    channel: str
    kind: str
    message: Message


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended (the facts ``decide`` receives)."""

    notification_id: str
    channel: str
    kind: str
    ok: bool
    attempts: int
    response: str = ""
    error: str = ""


def plan(
    state: NotificationState, event: CloudEvent, config: NotificationsFile, *, now: datetime
) -> list[Pending]:
    """The notifications ``event`` calls for and the log does not hold yet."""
    subject = about(state, event)
    if subject is None or now - event.time > config.delivery.max_age_delta:
        return []
    channels = [c for c in channels_for(config, subject) if (event.id, c) not in state.recorded]
    if not channels:
        return []
    content = compose(event, subject)
    out = []
    for name in channels:
        channel = config.channel(name)
        assert channel is not None
        nid = notification_id(event.id, name)
        body = {
            "delivery": nid,
            "channel": name,
            "kind": subject.kind,
            "title": content.title,
            "text": content.text,
            "facts": dict(content.facts),
            "deployment": {
                "id": subject.deployment_id,
                "service": subject.service,
                "environment": subject.environment,
                "version": subject.version,
            },
            "event": event.to_dict(),
        }
        message = Message(nid, event.type, content.title, content.text, content.facts, body)
        out.append(Pending(event.id, event.type, name, channel.kind, message))
    return out


def decide(
    state: NotificationState, event: CloudEvent, *, now: datetime, facts: Sequence[Outcome] | None = None
) -> list[CloudEvent]:
    """One notification.sent or .failed per delivered (event, channel) not yet recorded."""
    out: list[CloudEvent] = []
    deployment = event.data.get("deployment_id") or state.deployment_id
    for outcome in facts or ():
        if (event.id, outcome.channel) in state.recorded:
            continue
        common: dict[str, Any] = {
            "about": event.id,
            "about_type": event.type,
            "deployment_id": deployment,
            "channel": outcome.channel,
            "kind": outcome.kind,
            "attempts": outcome.attempts,
        }
        data = (
            NotificationSent(**common, response=outcome.response)
            if outcome.ok
            else NotificationFailed(**common, error=outcome.error)
        )
        out.append(
            new_event(
                data,
                id=outcome.notification_id,
                time=now,
                source=SOURCE,
                subject=event.subject,
                correlationid=event.correlationid,
                causationid=event.id,
            )
        )
    return out
