"""The topic catalogue: every shiplog topic, and which topic each event type goes to.

Topic names are part of the contract (DESIGN.md). Routing raises on an event type
it does not know: a silent fallback would put events where nobody listens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from events.errors import InvalidEvent

DEFAULT_PARTITIONS = 6


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    description: str
    partitions: int = DEFAULT_PARTITIONS


BUILDS = Topic("shiplog.builds", "CI build results (key = service) and multi-service release manifests")
PLANS = Topic("shiplog.plans", "release.planned, deployment.planned | deployment.rejected")
APPROVALS = Topic("shiplog.approvals", "approval.requested, deployment.approved | deployment.denied")
COMMANDS = Topic("shiplog.commands", "human commands: approve, deny, promote, pause, abort, rollback")
EXECUTIONS = Topic("shiplog.executions", "snapshot.taken, step.applied, deployment.succeeded")
VERIFICATIONS = Topic("shiplog.verifications", "verification.passed | failed | inconclusive")
ROLLBACKS = Topic(
    "shiplog.rollbacks", "rollback.started, rollback.completed, deployment.rolled_back; rollback drills"
)
TIMERS = Topic("shiplog.timers", "timer.fired: bake times, deploy windows, approval expiry")
NOTIFICATIONS = Topic(
    "shiplog.notifications", "notification.sent | notification.failed: what reached people's channels"
)
DEADLETTER = Topic("shiplog.deadletter", "messages a consumer could not process, with the reason", 1)

ALL_TOPICS: tuple[Topic, ...] = (
    BUILDS,
    PLANS,
    APPROVALS,
    COMMANDS,
    EXECUTIONS,
    VERIFICATIONS,
    ROLLBACKS,
    TIMERS,
    NOTIFICATIONS,
    DEADLETTER,
)

# Exact type names first (the deployment noun spans several topics), then by noun.
_BY_TYPE: dict[str, Topic] = {
    "shiplog.deployment.planned": PLANS,
    "shiplog.deployment.rejected": PLANS,
    "shiplog.deployment.scheduled": PLANS,
    "shiplog.deployment.replan_requested": PLANS,
    "shiplog.deployment.queued": EXECUTIONS,
    "shiplog.deployment.started": EXECUTIONS,
    "shiplog.deployment.paused": EXECUTIONS,
    "shiplog.deployment.resumed": EXECUTIONS,
    "shiplog.deployment.approved": APPROVALS,
    "shiplog.deployment.denied": APPROVALS,
    "shiplog.approval.granted": COMMANDS,
    "shiplog.approval.denied": COMMANDS,
    "shiplog.deployment.succeeded": EXECUTIONS,
    "shiplog.deployment.failed": EXECUTIONS,
    "shiplog.deployment.rolled_back": ROLLBACKS,
    # CI's: a multi-service release is a build of several services
    "shiplog.release.manifest": BUILDS,
}
_BY_NOUN: dict[str, Topic] = {
    "build": BUILDS,
    "release": PLANS,
    "approval": APPROVALS,
    "command": COMMANDS,
    "access": COMMANDS,
    "snapshot": EXECUTIONS,
    "step": EXECUTIONS,
    "verification": VERIFICATIONS,
    "analysis": VERIFICATIONS,
    "rollback": ROLLBACKS,
    "drill": ROLLBACKS,
    "timer": TIMERS,
    "notification": NOTIFICATIONS,
    "message": DEADLETTER,
}


_ROUTABLE = re.compile(r"(?P<name>shiplog\.(?P<noun>[a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*)(?:\.v[1-9][0-9]*)?")


def topic_name(topic: Topic | str, prefix: str = "") -> str:
    """The name on the broker: the catalogue name behind an optional namespace
    prefix (tests give each test its own; a shared cluster may give each install one)."""
    return prefix + (topic.name if isinstance(topic, Topic) else topic)


@lru_cache(maxsize=1024)
def topic_for(event_type: str) -> Topic:
    """The topic an event of this type (``shiplog.x.y.vN`` or ``shiplog.x.y``) goes to."""
    match = _ROUTABLE.fullmatch(event_type)
    if match is not None:
        if match["name"] in _BY_TYPE:
            return _BY_TYPE[match["name"]]
        if match["noun"] in _BY_NOUN:
            return _BY_NOUN[match["noun"]]
    raise InvalidEvent("unknown_type", f"no topic is catalogued for event type {event_type!r}")
