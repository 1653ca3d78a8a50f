"""The notification consumer's pure core: routing, content, what is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.notification.config import NotificationsFile
from consumers.notification.core import (
    NotificationState,
    Outcome,
    decide,
    evolve,
    notification_id,
    plan,
    stream_for,
)
from events.approval import ApprovalReminded, ApprovalRequested
from events.base import EventData
from events.deployment import (
    DeploymentApproved,
    DeploymentDenied,
    DeploymentFailed,
    DeploymentPlanned,
    DeploymentRejected,
    DeploymentRolledBack,
    DeploymentSucceeded,
    Reason,
    StrategyPlan,
    TargetRef,
)
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event

NOW = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
DEP = "checkout.production.r1"

CONFIG = NotificationsFile.model_validate(
    {
        "channels": [
            {
                "name": "hook",
                "kind": "webhook",
                "url": "http://127.0.0.1:1/h",
                "signing_secret": {"secret": {"env": "X"}},
            },
            {"name": "slack", "kind": "slack", "url": {"secret": {"env": "SLACK"}}},
            {"name": "mail", "kind": "email", "host": "h", "from": "a@b.c", "to": ["d@e.f"]},
            {"name": "off", "kind": "slack", "url": "http://x/y", "enabled": False},
        ],
        "routes": [
            {"channels": ["hook"]},
            {"channels": ["slack", "hook"], "events": ["approval.requested"], "environments": ["prod*"]},
            {"channels": ["mail"], "services": ["payments"]},
            {"channels": ["off"]},
        ],
    }
)


def event(data: EventData, *, time: datetime = NOW, subject: str = DEP) -> CloudEvent:
    return new_event(data, source="test", subject=subject, correlationid="r1", time=time)


def planned(service: str = "checkout", environment: str = "production") -> CloudEvent:
    return event(
        DeploymentPlanned(
            deployment_id=f"{service}.{environment}.r1",
            release_id="r1",
            service=service,
            version="1.4.2",
            artifact="reg/checkout:1.4.2",
            environment=environment,
            stage=2,
            strategy=StrategyPlan(type="rolling", reason="test", steps=[]),
            target=TargetRef(type="local"),
            plan_hash="h",
        ),
        subject=f"{service}.{environment}.r1",
    )


def state_of(*events: CloudEvent) -> NotificationState:
    state = NotificationState()
    for e in events:
        state = evolve(state, REGISTRY.decode(e.to_dict()))
    return state


def requested(**changes: Any) -> CloudEvent:
    fields: dict[str, Any] = {
        "deployment_id": DEP,
        "service": "checkout",
        "environment": "production",
        "version": "1.4.2",
        "level": "release-managers",
        "level_index": 1,
        "levels": 2,
        "roles": ["release-manager"],
        "quorum": 2,
        "expires_at": NOW + timedelta(hours=4),
    }
    return event(ApprovalRequested(**(fields | changes)))


ROUTED = [
    pytest.param(requested(), ["hook", "slack"], id="approval-request-in-production"),
    pytest.param(requested(environment="staging"), ["hook"], id="environment-filter"),
    pytest.param(requested(service="payments"), ["hook", "slack", "mail"], id="service-filter"),
    pytest.param(
        event(DeploymentApproved(deployment_id=DEP, automatic=True, rule="r")), ["hook"], id="kind-filter"
    ),
]


@pytest.mark.parametrize(("incoming", "channels"), ROUTED)
def test_routes_pick_channels_by_kind_service_and_environment(
    incoming: CloudEvent, channels: list[str]
) -> None:
    pending = plan(state_of(planned()), incoming, CONFIG, now=NOW)
    assert [p.channel for p in pending] == channels


def test_a_disabled_channel_gets_nothing() -> None:
    pending = plan(state_of(planned()), requested(), CONFIG, now=NOW)
    assert "off" not in {p.channel for p in pending}


def test_service_and_environment_come_from_the_plan_when_the_event_lacks_them() -> None:
    failed = event(DeploymentFailed(deployment_id="payments.production.r1", reason="boom"))
    assert [p.channel for p in plan(state_of(planned("payments")), failed, CONFIG, now=NOW)] == [
        "hook",
        "mail",
    ]
    # without the plan, a service filter cannot match
    assert [p.channel for p in plan(NotificationState(), failed, CONFIG, now=NOW)] == ["hook"]


def test_events_people_are_not_told_about_plan_nothing() -> None:
    assert plan(state_of(planned()), planned(), CONFIG, now=NOW) == []


def test_an_old_event_is_not_notified_about() -> None:
    old = requested()
    assert plan(state_of(planned()), old, CONFIG, now=NOW + timedelta(hours=25)) == []
    assert plan(state_of(planned()), old, CONFIG, now=NOW + timedelta(hours=23))


def test_a_notification_recorded_in_the_stream_is_not_planned_again() -> None:
    incoming = requested()
    [first, second] = plan(state_of(planned()), incoming, CONFIG, now=NOW)
    recorded = decide(
        NotificationState(),
        incoming,
        now=NOW,
        facts=[Outcome(first.message.id, first.channel, first.kind, True, 1, response="HTTP 200")],
    )
    state = state_of(planned(), *recorded)
    assert [p.channel for p in plan(state, incoming, CONFIG, now=NOW)] == [second.channel]


def test_the_message_is_about_the_event_with_a_stable_id_per_channel() -> None:
    incoming = requested()
    [hook, slack] = plan(state_of(planned()), incoming, CONFIG, now=NOW)
    assert hook.message.id == notification_id(incoming.id, "hook") != slack.message.id
    assert hook.message.id == plan(state_of(planned()), incoming, CONFIG, now=NOW)[0].message.id
    assert hook.message.event_type == "shiplog.approval.requested.v2"
    assert hook.message.title == "Approval needed: checkout 1.4.2 to production"
    assert (
        "2 approvals needed at level 'release-managers' (2 of 2) from: role release-manager"
        in hook.message.text
    )
    assert "shiplog approve checkout.production.r1" in hook.message.text
    assert ("Expires", "2025-03-04 14:00 UTC") in hook.message.facts
    body = hook.message.body
    assert body["delivery"] == hook.message.id
    assert body["event"]["id"] == incoming.id
    assert body["deployment"] == {
        "id": DEP,
        "service": "checkout",
        "environment": "production",
        "version": "1.4.2",
    }


TITLES = [
    (
        event(
            ApprovalReminded(
                deployment_id=DEP,
                service="checkout",
                environment="production",
                version="1.4.2",
                level="lead",
                expires_at=NOW,
            )
        ),
        "Reminder: approval for checkout 1.4.2 to production expires at 2025-03-04 10:00 UTC",
    ),
    (event(DeploymentApproved(deployment_id=DEP, automatic=False, approvers=["bob"])), "Approved: checkout"),
    (event(DeploymentDenied(deployment_id=DEP, expired=True)), "Expired: checkout 1.4.2 to production"),
    (event(DeploymentDenied(deployment_id=DEP, by="carol", reason="no")), "Denied: checkout"),
    (
        event(
            DeploymentSucceeded(
                deployment_id=DEP,
                release_id="r1",
                service="checkout",
                environment="production",
                version="1.4.2",
            )
        ),
        "Deployed: checkout 1.4.2 to production",
    ),
    (event(DeploymentFailed(deployment_id=DEP, reason="boom")), "Failed: checkout"),
    (
        event(
            DeploymentRolledBack(
                deployment_id=DEP, service="checkout", environment="production", reason="bad", healthy=True
            )
        ),
        "Rolled back: checkout",
    ),
]


@pytest.mark.parametrize(("incoming", "title"), TITLES)
def test_each_kind_reads_as_what_happened(incoming: CloudEvent, title: str) -> None:
    [first, *_] = plan(state_of(planned()), incoming, CONFIG, now=NOW)
    assert first.message.title.startswith(title)


def test_a_release_rejected_before_any_deployment_lives_in_its_release_stream() -> None:
    rejected = event(
        DeploymentRejected(
            release_id="r9",
            service="checkout",
            version="2.0.0",
            reasons=[Reason(code="no_pipeline", message="none")],
        ),
        subject="checkout",
    )
    assert stream_for(rejected) == "release-r9"
    assert stream_for(requested()) == f"deployment-{DEP}"
    [hook] = plan(NotificationState(), rejected, CONFIG, now=NOW)
    assert hook.message.title == "Rejected: checkout 2.0.0"
    assert "- no_pipeline: none" in hook.message.text


def test_decide_records_sent_and_failed_caused_by_the_event() -> None:
    incoming = requested()
    outcomes = [
        Outcome(notification_id(incoming.id, "hook"), "hook", "webhook", True, 3, response="HTTP 200"),
        Outcome(
            notification_id(incoming.id, "slack"), "slack", "slack", False, 4, error="Slack answered HTTP 500"
        ),
    ]
    sent, failed = decide(NotificationState(), incoming, now=NOW, facts=outcomes)
    assert sent.type == "shiplog.notification.sent.v1"
    assert sent.id == outcomes[0].notification_id
    assert sent.causationid == incoming.id and sent.correlationid == "r1" and sent.subject == DEP
    assert sent.data == {
        "about": incoming.id,
        "about_type": "shiplog.approval.requested.v2",
        "deployment_id": DEP,
        "channel": "hook",
        "kind": "webhook",
        "attempts": 3,
        "response": "HTTP 200",
    }
    assert failed.type == "shiplog.notification.failed.v1"
    assert failed.data["error"] == "Slack answered HTTP 500" and failed.data["attempts"] == 4
    # already recorded: nothing again
    assert decide(state_of(sent, failed), incoming, now=NOW, facts=outcomes) == []
