"""The approval core: rules that approve without people (failing closed), levels with
roles and quorums completed in order, separation of duties, answers bound to the
plan, voiding on a new plan, reminders and expiry — each decided from the stream."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from consumers.approval.core import EXPIRY, RECHECK, REMINDER, ApprovalFacts, assess_criteria, decide
from events.approval import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalLevelCompleted,
    ApprovalRecorded,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalVoided,
)
from events.deployment import DeploymentApproved, DeploymentDenied
from events.envelope import CloudEvent
from events.timer import TimerScheduled
from tests.unit.sagafixtures import (
    DEPLOYMENT_ID,
    NOW,
    RELEASE_ID,
    canary_plan,
    decide_on,
    event,
    kinds,
    payload,
    planned,
    rolled_back,
    succeeded,
    timer_fired,
)

CRITERIA = {"tests_failed_max": 0, "coverage_min": 80, "critical_vulns_max": 0}
GOOD_BUILD = {
    "tests": {"failed": 0, "coverage": 91.5},
    "security": {"critical": 0, "high": 3},
    "author": "dora",
}
TWO_LEVELS = {
    "manual": {
        "levels": [
            {"name": "team-lead", "roles": ["lead"], "quorum": 2},
            {"name": "release-manager", "roles": ["release-manager"]},
        ],
        "expires_after": "1h",
    }
}


def on_planned(
    gate: dict[str, Any], build: dict[str, Any] | None = None, environment: str = "production", **kw: Any
):
    p = canary_plan(gate=gate, build=GOOD_BUILD if build is None else build, environment=environment)
    return decide_on(decide, [], planned(p), **kw)


def answer(
    who: str,
    *,
    roles: tuple[str, ...] = (),
    deny: bool = False,
    role: str | None = None,
    level: str | None = None,
    plan_hash: str | None = None,
    comment: str = "",
) -> CloudEvent:
    model = ApprovalDenied if deny else ApprovalGranted
    data = model(
        deployment_id=DEPLOYMENT_ID,
        comment=comment,
        roles=list(roles),
        role=role,
        level=level,
        plan_hash=plan_hash,
        client="10.0.0.7",
    )
    return event(data, actor=who, source="shiplog/api")


class Stream:
    """A deployment's stream as the shell grows it: each decision's events appended."""

    def __init__(self, gate: dict[str, Any], build: dict[str, Any] | None = None):
        self.plan = canary_plan(gate=gate, build=GOOD_BUILD if build is None else build)
        self.history: list[CloudEvent] = []
        self.last = self.on(planned(self.plan))

    def on(self, incoming: CloudEvent, **kw: Any) -> list[CloudEvent]:
        out = decide_on(decide, self.history, incoming, **kw)
        self.history += [incoming, *out]
        self.last = out
        return out

    def replan(self, **changes: Any) -> list[CloudEvent]:
        self.plan = self.plan.model_copy(update=changes)
        return self.on(planned(self.plan))


# --- rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "build", "rule"),
    [
        (
            {"auto_approve": CRITERIA},
            GOOD_BUILD,
            "rule 'auto': coverage_min=80.0, critical_vulns_max=0, tests_failed_max=0",
        ),
        (
            {
                "auto_approve": {
                    "name": "envs",
                    "tests_failed_max": 0,
                    "environments": ["staging", "production"],
                }
            },
            {"tests": {"failed": 0}, "security": {"critical": 0}},
            "rule 'envs': critical_vulns_max=0, environments=['staging', 'production'], tests_failed_max=0",
        ),
        (
            {"auto_approve": {"high_vulns_max": 5, "max_changed_lines": 200}},
            {**GOOD_BUILD, "change": {"lines": 120, "files": 4}},
            "rule 'auto': critical_vulns_max=0, high_vulns_max=5, max_changed_lines=200, tests_failed_max=0",
        ),
        (
            {
                "auto_approve": [
                    {"name": "strict", "coverage_min": 99},
                    {"name": "lenient", "coverage_min": 50},
                ]
            },
            GOOD_BUILD,
            "rule 'lenient': coverage_min=50.0, critical_vulns_max=0, tests_failed_max=0",
        ),
        (
            {"auto_approve": CRITERIA, "manual": {"required": False}},
            GOOD_BUILD,
            "rule 'auto': coverage_min=80.0, critical_vulns_max=0, tests_failed_max=0",
        ),
    ],
    ids=[
        "every criterion",
        "environment listed",
        "change size",
        "first rule that holds",
        "people only on failure",
    ],
)
def test_a_rule_whose_every_criterion_holds_approves_and_is_recorded(gate, build, rule):
    out = on_planned(gate, build)

    assert kinds(out) == ["deployment.approved"]
    verdict = payload(out[0], DeploymentApproved)
    assert verdict.automatic is True
    assert verdict.rule == f"auto-approved by {rule}"


@pytest.mark.parametrize(
    ("criteria", "build", "reason"),
    [
        (
            CRITERIA,
            {"tests": {"failed": 2, "coverage": 91}, "security": {"critical": 0}},
            "tests failed 2 > 0",
        ),
        (CRITERIA, {"tests": {"failed": 0}, "security": {"critical": 0}}, "coverage unknown < 80"),
        ({"max_changed_lines": 100}, {**GOOD_BUILD, "change": {"lines": 4000}}, "changed lines 4000 > 100"),
        ({"max_changed_files": 3}, GOOD_BUILD, "changed files unknown > 3"),
        ({"environments": ["dev"]}, GOOD_BUILD, "environment production not in ['dev']"),
    ],
    ids=["failed tests", "no coverage data", "change too large", "no change data", "environment"],
)
def test_no_rule_holding_asks_people_with_every_reason(criteria, build, reason):
    out = on_planned({"auto_approve": criteria}, build)

    assert kinds(out) == ["approval.requested"]
    assert reason in payload(out[0], ApprovalRequested).why


def test_a_soak_time_not_yet_reached_asks_people_and_looks_again_when_it_is():
    soaked_at = NOW - timedelta(minutes=30)
    facts = ApprovalFacts(previous_succeeded_at=soaked_at)
    stream = Stream({"auto_approve": {"min_soak": "2h"}})
    stream.history.clear()
    out = stream.on(planned(stream.plan), facts=facts)

    assert kinds(out) == ["approval.requested", "timer.scheduled"]
    timer = payload(out[1], TimerScheduled)
    assert (timer.purpose, timer.due_at) == (RECHECK, soaked_at + timedelta(hours=2))
    out = stream.on(
        timer_fired(RECHECK, plan_hash=stream.plan.plan_hash),
        facts=ApprovalFacts(previous_succeeded_at=NOW - timedelta(hours=3)),
    )
    assert kinds(out) == ["deployment.approved"]


def test_soak_and_window_criteria():
    build = GOOD_BUILD
    assert assess_criteria({"min_soak": "1h"}, build, "prod", now=NOW, previous_succeeded_at=None) == [
        "no success in the previous environment to have soaked 1h"
    ]
    assert not assess_criteria(
        {"min_soak": "1h"}, build, "prod", now=NOW, previous_succeeded_at=NOW - timedelta(hours=2)
    )
    office = {"windows": [{"kind": "allow", "cron": "0 9 * * 1-5", "duration": "8h", "timezone": "UTC"}]}
    # NOW is a Tuesday 12:00 UTC: inside; Saturday is outside
    assert not assess_criteria(office, build, "prod", now=NOW)
    saturday = NOW + timedelta(days=4)
    assert assess_criteria(office, build, "prod", now=saturday)[0].startswith(
        "outside the auto-approval windows"
    )


def test_without_a_gate_the_deployment_is_approved_ungated():
    out = on_planned({})
    assert kinds(out) == ["deployment.approved"]
    assert payload(out[0], DeploymentApproved).rule == "no gate"


def test_required_people_are_asked_whatever_the_rules_say():
    out = on_planned({"auto_approve": CRITERIA, "manual": {"required": True}})
    assert kinds(out) == ["approval.requested"]
    assert payload(out[0], ApprovalRequested).why == "manual approval required"


# --- levels, roles, quorum ------------------------------------------------------------


def test_the_first_request_names_the_level_its_roles_quorum_and_who_is_excluded():
    stream = Stream(TWO_LEVELS, {**GOOD_BUILD, "triggered_by": "tom"})
    request = payload(stream.last[0], ApprovalRequested)

    assert (request.level, request.level_index, request.levels) == ("team-lead", 0, 2)
    assert (request.roles, request.quorum) == (["lead"], 2)
    assert request.excluded == ["dora", "tom"]
    assert request.plan_hash == stream.plan.plan_hash
    assert request.expires_at == NOW + timedelta(hours=1)
    assert request.remind_at == NOW + timedelta(minutes=48)
    timers = [payload(e, TimerScheduled) for e in stream.last[1:]]
    assert [(t.purpose, t.due_at) for t in timers] == [
        (EXPIRY, NOW + timedelta(hours=1)),
        (REMINDER, NOW + timedelta(minutes=48)),
    ]


def test_levels_complete_in_order_with_a_quorum_of_distinct_people():
    stream = Stream(TWO_LEVELS)

    assert kinds(stream.on(answer("ann", roles=("lead",)))) == ["approval.recorded"]
    assert payload(stream.last[0], ApprovalRecorded).count == 1
    refused = stream.on(answer("ann", roles=("lead",)))
    assert "one person counts once per level" in payload(refused[0], ApprovalRefused).reason
    early = stream.on(answer("rita", roles=("release-manager",), level="release-manager"))
    assert "not open yet" in payload(early[0], ApprovalRefused).reason

    out = stream.on(answer("ben", roles=("lead", "dev")))
    assert kinds(out) == [
        "approval.recorded",
        "approval.level_completed",
        "approval.requested",
        "timer.scheduled",
        "timer.scheduled",
    ]
    assert payload(out[1], ApprovalLevelCompleted).approvers == ["ann", "ben"]
    assert payload(out[2], ApprovalRequested).level == "release-manager"

    out = stream.on(answer("rita", roles=("release-manager",)))
    assert kinds(out) == ["approval.recorded", "approval.level_completed", "deployment.approved"]
    verdict = payload(out[2], DeploymentApproved)
    assert (verdict.automatic, verdict.approvers) == (False, ["ann", "ben", "rita"])
    assert verdict.rule == "approved at team-lead by ann, ben, release-manager by rita"


@pytest.mark.parametrize(
    ("who", "roles", "role", "reason"),
    [
        ("dora", ("lead",), None, "separation of duties: dora"),
        ("sam", ("dev",), None, "sam holds none of the roles level 'team-lead' needs (lead)"),
        ("sam", ("dev",), "lead", "sam does not hold the role 'lead'"),
        ("sam", ("dev", "admin"), "admin", "the role 'admin' may not approve level 'team-lead'"),
    ],
    ids=["the author", "no role", "a role not held", "a role the level does not name"],
)
def test_an_answer_from_someone_who_may_not_give_it_is_refused_and_recorded(who, roles, role, reason):
    stream = Stream(TWO_LEVELS)
    for deny in (False, True):
        out = stream.on(answer(who, roles=roles, role=role, deny=deny))
        assert kinds(out) == ["approval.refused"]
        refused = payload(out[0], ApprovalRefused)
        assert reason in refused.reason
        assert (refused.actor, refused.client, refused.answer) == (
            who,
            "10.0.0.7",
            "deny" if deny else "approve",
        )


def test_separation_of_duties_can_be_switched_off_per_policy():
    gate = {"manual": {"separation_of_duties": False}}
    stream = Stream(gate)
    assert kinds(stream.on(answer("dora"))) == [
        "approval.recorded",
        "approval.level_completed",
        "deployment.approved",
    ]


def test_a_named_approver_needs_no_role():
    stream = Stream({"manual": {"levels": [{"roles": ["sre"], "approvers": ["carol"]}]}})
    assert kinds(stream.on(answer("carol")))[-1] == "deployment.approved"


def test_a_qualified_denial_denies_by_the_actor():
    stream = Stream(TWO_LEVELS)
    out = stream.on(answer("ann", roles=("lead",), deny=True, comment="not on a Friday"))
    assert kinds(out) == ["deployment.denied"]
    verdict = payload(out[0], DeploymentDenied)
    assert (verdict.by, verdict.reason, verdict.expired) == ("ann", "not on a Friday", False)


def test_two_approvals_of_one_level_at_once_are_both_recorded_and_it_advances_once():
    stream = Stream(
        {"manual": {"levels": [{"name": "ops", "roles": ["ops"]}, {"name": "cab", "roles": ["cab"]}]}}
    )
    first = answer("ann", roles=("ops",), level="ops")
    second = answer("ben", roles=("ops",), level="ops")
    out_first = stream.on(first)
    out_second = stream.on(second)

    assert kinds(out_first)[:3] == ["approval.recorded", "approval.level_completed", "approval.requested"]
    assert kinds(out_second) == ["approval.recorded"]
    recorded = payload(out_second[0], ApprovalRecorded)
    assert (recorded.approver, recorded.count, recorded.quorum) == ("ben", 2, 1)
    assert sum(k == "approval.level_completed" for k in kinds(stream.history)) == 1


# --- binding to the plan ---------------------------------------------------------------


def test_an_answer_bound_to_another_plan_or_artifact_is_refused():
    stream = Stream(TWO_LEVELS)
    out = stream.on(answer("ann", roles=("lead",), plan_hash="some-old-plan"))
    assert "the plan is now" in payload(out[0], ApprovalRefused).reason


def test_a_new_plan_voids_what_was_counted_and_asks_again():
    stream = Stream(TWO_LEVELS)
    stream.on(answer("ann", roles=("lead",)))
    out = stream.replan(plan_hash="hash-2")

    assert kinds(out)[:2] == ["approval.voided", "approval.requested"]
    voided = payload(out[0], ApprovalVoided)
    assert (voided.old_plan_hash, voided.new_plan_hash, voided.voided) == (
        "hash-1",
        "hash-2",
        ["ann (team-lead)"],
    )
    # ann counts again under the new plan: her old approval did not carry over
    assert payload(stream.on(answer("ann", roles=("lead",)))[0], ApprovalRecorded).count == 1
    stale = stream.on(answer("ben", roles=("lead",), plan_hash="hash-1"))
    assert kinds(stale) == ["approval.refused"]


# --- reminders and expiry ------------------------------------------------------------


def test_a_reminder_then_expiry_of_the_open_level():
    stream = Stream(TWO_LEVELS)
    level0 = {"plan_hash": stream.plan.plan_hash, "level_index": 0}
    assert kinds(stream.on(timer_fired(REMINDER, **level0))) == ["approval.reminded"]
    out = stream.on(timer_fired(EXPIRY, **level0))
    assert kinds(out) == ["approval.expired", "deployment.denied"]
    assert payload(out[1], DeploymentDenied).expired is True


def test_timers_of_a_completed_level_or_an_old_plan_change_nothing():
    stream = Stream({"manual": {"levels": [{"name": "a"}, {"name": "b"}], "expires_after": "1h"}})
    stream.on(answer("ann"))
    assert stream.on(timer_fired(EXPIRY, plan_hash=stream.plan.plan_hash, level_index=0)) == []
    assert stream.on(timer_fired(EXPIRY, plan_hash="hash-0", level_index=1)) == []


# --- when nothing awaits approval ------------------------------------------------------


@pytest.mark.parametrize("ended", [succeeded, rolled_back], ids=["succeeded", "rolled back"])
def test_answers_after_the_end_are_refused(ended):
    stream = Stream(TWO_LEVELS)
    stream.history.append(ended())
    out = stream.on(answer("ann", roles=("lead",)))
    assert "nothing awaits approval" in payload(out[0], ApprovalRefused).reason


def test_a_stream_without_a_plan_decides_nothing():
    assert decide_on(decide, [], answer("ann")) == []
    assert decide_on(decide, [], timer_fired(EXPIRY)) == []


def test_the_verdict_belongs_to_the_deployment_and_its_release():
    out = on_planned({})
    assert (out[0].subject, out[0].correlationid) == (DEPLOYMENT_ID, RELEASE_ID)
