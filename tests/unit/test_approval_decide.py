"""The approval core: gates evaluated on deployment.planned, failing closed, and a
person's answer (or its expiry) turned into the deployment's verdict."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from consumers.approval.core import EXPIRY, assess_criteria, decide
from events.approval import ApprovalRequested
from events.deployment import DeploymentApproved, DeploymentDenied
from events.timer import TimerScheduled
from tests.unit.sagafixtures import (
    DEPLOYMENT_ID,
    NOW,
    RELEASE_ID,
    approval_requested,
    approved,
    canary_plan,
    decide_on,
    denied,
    deployment_denied,
    granted,
    kinds,
    payload,
    planned,
    rolled_back,
    running,
    succeeded,
    timer_fired,
)

CRITERIA = {"tests_failed_max": 0, "coverage_min": 80, "critical_vulns_max": 0}
GOOD_BUILD = {"tests": {"failed": 0, "coverage": 91.5}, "security": {"critical": 0, "high": 3}}


def on_planned(gate: dict[str, Any], build: dict[str, Any] | None = None, environment: str = "production"):
    p = canary_plan(gate=gate, build=GOOD_BUILD if build is None else build, environment=environment)
    return decide_on(decide, [], planned(p))


# --- deployment.planned: the gate ------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "build", "rule"),
    [
        (
            {"auto_approve": CRITERIA},
            GOOD_BUILD,
            "auto-approved: coverage_min=80, critical_vulns_max=0, tests_failed_max=0",
        ),
        (
            {"auto_approve": {"tests_failed_max": 0, "environments": ["staging", "production"]}},
            {"tests": {"failed": 0}},
            "auto-approved: environments=['staging', 'production'], tests_failed_max=0",
        ),
        (
            {"auto_approve": {"high_vulns_max": 5}},
            GOOD_BUILD,
            "auto-approved: high_vulns_max=5",
        ),
        (
            {"auto_approve": CRITERIA, "manual": {"required": False}},
            GOOD_BUILD,
            "auto-approved: coverage_min=80, critical_vulns_max=0, tests_failed_max=0",
        ),
    ],
    ids=["every criterion", "environment listed", "high vulnerabilities", "person asked only on failure"],
)
def test_every_criterion_holding_auto_approves_with_the_rule_recorded(gate, build, rule):
    out = on_planned(gate, build)

    assert kinds(out) == ["deployment.approved"]
    verdict = payload(out[0], DeploymentApproved)
    assert verdict.automatic is True
    assert verdict.rule == rule
    assert verdict.approvers == []


@pytest.mark.parametrize(
    ("criteria", "build", "reasons"),
    [
        ({"coverage_min": 80}, {"tests": {"failed": 0}}, ["coverage unknown < 80"]),
        ({"coverage_min": 80}, {"tests": {"failed": 0, "coverage": 79.9}}, ["coverage 79.9 < 80"]),
        ({"tests_failed_max": 0}, {}, ["tests failed unknown > 0"]),
        ({"tests_failed_max": 0}, {"tests": {"failed": 2}}, ["tests failed 2 > 0"]),
        ({"critical_vulns_max": 0}, {"tests": {}}, ["critical vulnerabilities unknown > 0"]),
        ({"critical_vulns_max": 0}, {"security": {"critical": 1}}, ["critical vulnerabilities 1 > 0"]),
        ({"high_vulns_max": 1}, {"security": {"high": 3}}, ["high vulnerabilities 3 > 1"]),
        (
            {"environments": ["dev", "staging"]},
            GOOD_BUILD,
            ["environment production not in ['dev', 'staging']"],
        ),
        (
            CRITERIA,
            {"tests": {"failed": 3}, "security": {"critical": 2}},
            ["tests failed 3 > 0", "coverage unknown < 80", "critical vulnerabilities 2 > 0"],
        ),
    ],
    ids=[
        "no coverage in build",
        "coverage too low",
        "no test results",
        "failed tests",
        "no security scan",
        "critical vulnerability",
        "high vulnerabilities",
        "environment not listed",
        "every failure named",
    ],
)
def test_a_missing_fact_or_failing_criterion_asks_a_person_with_the_reasons(criteria, build, reasons):
    out = on_planned({"auto_approve": criteria}, build)

    assert kinds(out) == ["approval.requested"]
    request = payload(out[0], ApprovalRequested)
    assert request.why == "automatic approval criteria not met: " + "; ".join(reasons)
    assert request.expires_at is None
    assert assess_criteria(criteria, build, "production") == reasons


@pytest.mark.parametrize(
    "gate",
    [{}, {"manual": {"required": False}}, {"auto_approve": {}}],
    ids=["empty gate", "person optional", "no criteria"],
)
def test_without_a_gate_the_deployment_is_approved_ungated(gate):
    out = on_planned(gate)

    assert kinds(out) == ["deployment.approved"]
    verdict = payload(out[0], DeploymentApproved)
    assert (verdict.automatic, verdict.rule) == (True, "no gate")


@pytest.mark.parametrize(
    ("manual", "events"),
    [
        ({"required": True}, ["approval.requested"]),
        ({"required": True, "levels": [{"name": "prod"}]}, ["approval.requested"]),
        ({"required": True, "expires_after_s": 3600}, ["approval.requested", "timer.scheduled"]),
    ],
    ids=["no expiry", "one named level", "expiring"],
)
def test_required_manual_approval_asks_a_person(manual, events):
    out = on_planned({"manual": manual})

    assert kinds(out) == events
    request = payload(out[0], ApprovalRequested)
    assert request.why == "manual approval required"
    assert (request.deployment_id, request.service, request.environment, request.version) == (
        DEPLOYMENT_ID,
        "web",
        "production",
        "1.1.0",
    )


@pytest.mark.parametrize(
    ("gate", "due"),
    [
        ({"manual": {"required": True, "expires_after_s": 3600}}, NOW + timedelta(hours=1)),
        (
            {"auto_approve": {"coverage_min": 95}, "manual": {"expires_after_s": 60}},
            NOW + timedelta(minutes=1),
        ),
    ],
    ids=["manual", "criteria not met"],
)
def test_an_expiring_request_schedules_its_expiry_timer_in_the_deployment_stream(gate, due):
    out = on_planned(gate)

    assert kinds(out) == ["approval.requested", "timer.scheduled"]
    assert payload(out[0], ApprovalRequested).expires_at == due
    timer = payload(out[1], TimerScheduled)
    assert (timer.timer_id, timer.stream_id, timer.due_at, timer.purpose) == (
        f"{DEPLOYMENT_ID}:{EXPIRY}",
        f"deployment-{DEPLOYMENT_ID}",
        due,
        EXPIRY,
    )


def test_the_verdict_on_a_plan_belongs_to_the_deployment_and_its_release():
    incoming = planned(canary_plan(gate={}))

    (out,) = decide_on(decide, [], incoming)

    assert out.subject == DEPLOYMENT_ID
    assert out.correlationid == RELEASE_ID
    assert out.causationid == incoming.id
    assert out.source == "shiplog/approval"


@pytest.mark.parametrize(
    "build",
    [GOOD_BUILD, {"tests": {"failed": 4}}],
    ids=["criteria hold", "criteria fail"],
)
def test_a_required_person_is_asked_whatever_the_criteria_say(build):
    out = on_planned({"auto_approve": CRITERIA, "manual": {"required": True}}, build)

    assert kinds(out) == ["approval.requested"]


# --- a person's answer, and expiry ----------------------------------------------------

MANUAL = canary_plan(gate={"manual": {"required": True, "expires_after_s": 3600}})
AWAITING = [planned(MANUAL), approval_requested()]


def test_a_grant_approves_with_the_actor_as_approver():
    out = decide_on(decide, AWAITING, granted("alice", "looks good"))

    assert kinds(out) == ["deployment.approved"]
    verdict = payload(out[0], DeploymentApproved)
    assert (verdict.automatic, verdict.rule, verdict.approvers) == (False, "manual approval", ["alice"])
    assert out[0].actor == "alice"


@pytest.mark.parametrize(
    ("comment", "reason"),
    [("not on a Friday", "not on a Friday"), ("", "denied")],
    ids=["with a comment", "without a comment"],
)
def test_a_denial_denies_by_the_actor(comment, reason):
    out = decide_on(decide, AWAITING, denied("bob", comment))

    assert kinds(out) == ["deployment.denied"]
    verdict = payload(out[0], DeploymentDenied)
    assert (verdict.by, verdict.expired, verdict.reason) == ("bob", False, reason)
    assert out[0].actor == "bob"


def test_an_expired_request_denies_the_deployment():
    out = decide_on(decide, AWAITING, timer_fired(EXPIRY))

    assert kinds(out) == ["deployment.denied"]
    verdict = payload(out[0], DeploymentDenied)
    assert (verdict.by, verdict.expired, verdict.reason) == (None, True, "approval request expired")


def test_another_timer_while_awaiting_approval_changes_nothing():
    assert decide_on(decide, AWAITING, timer_fired("window")) == []


def test_a_grant_by_someone_not_among_the_named_approvers_approves_nothing():
    p = canary_plan(gate={"manual": {"required": True, "levels": [{"name": "prod", "approvers": ["alice"]}]}})

    out = decide_on(decide, [planned(p), approval_requested()], granted("mallory"))

    assert "deployment.approved" not in kinds(out)


@pytest.mark.parametrize(
    ("history", "incoming"),
    [
        ([planned(MANUAL)], granted()),
        ([planned(canary_plan(gate={})), approved()], granted()),
        ([planned(canary_plan(gate={})), approved()], denied()),
        ([planned(canary_plan(gate={})), approved()], timer_fired(EXPIRY)),
        (running(), denied()),
        (AWAITING, AWAITING[0]),
    ],
    ids=[
        "grant before the request",
        "grant after auto-approval",
        "denial after approval",
        "expiry after approval",
        "denial while running",
        "plan delivered again",
    ],
)
def test_answers_when_no_approval_is_awaited_change_nothing(history, incoming):
    assert decide_on(decide, history, incoming) == []


TERMINAL_HISTORIES = {
    "denied": [*AWAITING, deployment_denied()],
    "expired": [*AWAITING, timer_fired(EXPIRY), deployment_denied(expired=True)],
    "succeeded": [*running(MANUAL), succeeded()],
    "rolled back": [*running(MANUAL), rolled_back()],
}
REDELIVERED_PLAN = None


@pytest.mark.parametrize("terminal", TERMINAL_HISTORIES)
@pytest.mark.parametrize(
    "incoming",
    [REDELIVERED_PLAN, granted(), denied(), timer_fired(EXPIRY)],
    ids=["plan delivered again", "grant", "denial", "expiry"],
)
def test_a_terminal_deployment_ignores_everything(terminal, incoming):
    history = TERMINAL_HISTORIES[terminal]

    assert decide_on(decide, history, incoming or history[0]) == []


def test_a_stream_without_a_plan_decides_nothing():
    assert decide_on(decide, [], granted()) == []
