"""The execution core: taking the lane, walking the strategy's steps, pauses and
commands, and waking whoever waits for the lane."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumers.execution.core import LANE_FREE, PAUSE, WINDOW, Applied, Claimed, Released, decide, wants_start
from events.command import Abort, Pause, Promote, Resume, Schedule
from events.deployment import (
    DeploymentPaused,
    DeploymentQueued,
    DeploymentRejected,
    DeploymentResumed,
    DeploymentScheduled,
    DeploymentSucceeded,
    PlannedStep,
    Reason,
)
from events.execution import SnapshotTaken, StepApplied, StepStarted
from events.timer import TimerScheduled
from tests.unit.sagafixtures import (
    ANALYSIS,
    DEPLOYMENT_ID,
    NOW,
    PAUSE_30S,
    PROMOTE,
    SET_20,
    SET_50,
    SNAPSHOT,
    approved,
    canary_plan,
    command,
    decide_on,
    deployment_failed,
    deployment_paused,
    event,
    fold_events,
    kinds,
    payload,
    plan,
    planned,
    queued,
    rollback_started,
    rolled_back,
    rolling_plan,
    running,
    scheduled,
    step_id_of,
    step_started,
    succeeded,
    timer_fired,
    verification_failed,
    verification_inconclusive,
    verification_passed,
)

CANARY = canary_plan()
ROLLING = rolling_plan()
CLAIMED = Claimed(True, snapshot=SNAPSHOT, snapshot_version="1.0.0")
#: set_weight 20, pause until promoted, promote
UNTIL_PROMOTED = plan(
    [PlannedStep(kind="set_weight", weight=20), PlannedStep(kind="pause"), PlannedStep(kind="promote")]
)


# --- taking the lane ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "incoming", "first"),
    [
        ([planned(CANARY)], approved(), "set_weight"),
        ([planned(ROLLING)], approved(), "rolling"),
        (
            [planned(CANARY), approved(), queued()],
            timer_fired(LANE_FREE, subject=DEPLOYMENT_ID),
            "set_weight",
        ),
        (
            [planned(CANARY), scheduled(NOW - timedelta(minutes=1)), approved()],
            timer_fired(WINDOW),
            "set_weight",
        ),
    ],
    ids=["canary approved", "rolling approved", "woken from the queue", "window opened"],
)
def test_claiming_the_lane_starts_snapshots_and_starts_the_first_step(history, incoming, first):
    out = decide_on(decide, history, incoming, facts=CLAIMED)

    assert kinds(out) == ["deployment.started", "snapshot.taken", "step.started"]
    snapshot = payload(out[1], SnapshotTaken)
    assert (snapshot.version, snapshot.snapshot) == ("1.0.0", SNAPSHOT)
    step = payload(out[2], StepStarted)
    assert (step.index, step.step.kind, step.step_id) == (0, first, f"{DEPLOYMENT_ID}:0:{first}")
    assert all(e.causationid == incoming.id and e.subject == DEPLOYMENT_ID for e in out)


def test_a_first_deployment_snapshots_that_nothing_served():
    out = decide_on(decide, [planned(CANARY)], approved(), facts=Claimed(True, snapshot={}))

    snapshot = payload(out[1], SnapshotTaken)
    assert (snapshot.version, snapshot.snapshot) == (None, {})


def test_a_taken_lane_queues_the_deployment_behind_its_holder():
    out = decide_on(
        decide, [planned(CANARY)], approved(), facts=Claimed(False, behind="web.production.rel-0")
    )

    assert kinds(out) == ["deployment.queued"]
    assert payload(out[0], DeploymentQueued).behind == "web.production.rel-0"


def test_a_queued_deployment_woken_to_a_still_taken_lane_is_not_queued_again():
    history = [planned(CANARY), approved(), queued()]

    out = decide_on(
        decide, history, timer_fired(LANE_FREE, subject=DEPLOYMENT_ID), facts=Claimed(False, behind="rel-9")
    )

    assert out == []


@pytest.mark.parametrize(
    ("history", "incoming"),
    [
        ([planned(CANARY)], approved()),
        ([planned(CANARY), approved(), queued()], timer_fired(LANE_FREE)),
    ],
    ids=["on approval", "woken from the queue"],
)
def test_a_deployment_older_than_what_serves_is_rejected_as_outdated(history, incoming):
    outdated = "1.2.0 already serves in production"

    out = decide_on(decide, history, incoming, facts=Claimed(False, outdated=outdated))

    assert kinds(out) == ["deployment.rejected"]
    rejected = payload(out[0], DeploymentRejected)
    assert rejected.reasons == [Reason(code="outdated", message=outdated)]
    assert (rejected.deployment_id, rejected.version, rejected.environment) == (
        DEPLOYMENT_ID,
        "1.1.0",
        "production",
    )


LATER = NOW + timedelta(hours=2)
EARLIER = NOW - timedelta(seconds=1)


@pytest.mark.parametrize(
    ("history", "incoming", "wanted"),
    [
        ([planned(CANARY), approved()], approved(), True),
        ([planned(CANARY), approved(), queued()], timer_fired(LANE_FREE), True),
        ([planned(CANARY), approved()], timer_fired(WINDOW), True),
        ([planned(canary_plan(not_before=LATER)), approved()], approved(), False),
        ([planned(CANARY), scheduled(LATER), approved()], approved(), False),
        ([planned(CANARY), scheduled(LATER), approved()], timer_fired(WINDOW), False),
        ([planned(canary_plan(not_before=EARLIER)), approved()], approved(), True),
        ([planned(CANARY), scheduled(NOW), approved()], timer_fired(WINDOW), True),
        ([planned(CANARY), approved()], timer_fired(PAUSE, index=0), False),
        ([planned(CANARY)], approved(), False),
        (running(CANARY), timer_fired(LANE_FREE), False),
        ([planned(CANARY), approved()], step_started(CANARY, 0), False),
    ],
    ids=[
        "approved",
        "lane freed for a queued one",
        "window opened",
        "not before a later time",
        "scheduled for a later window",
        "window timer early",
        "not-before passed",
        "window opens now",
        "a pause timer",
        "not approved",
        "already running",
        "not a starting event",
    ],
)
def test_when_a_deployment_tries_to_take_its_lane(history, incoming, wanted):
    assert wants_start(fold_events(history), incoming, NOW) is wanted


# --- a step's intent and result --------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "index", "facts"),
    [
        (CANARY, SET_20, Applied(ok=True, detail={"weight": 20})),
        (CANARY, SET_50, Applied(ok=True, already_applied=True)),
        (CANARY, PROMOTE, Applied(ok=True)),
        (ROLLING, 0, Applied(ok=True, detail={"replaced": 3})),
        (CANARY, SET_20, Applied(ok=False, error="TargetRejected: no such artifact")),
        (ROLLING, 0, Applied(ok=False, error="instance 2 did not start")),
    ],
    ids=["set 20%", "redriven 50%", "promote", "rolling", "set 20% refused", "rolling failed"],
)
def test_a_target_step_records_what_the_target_answered(p, index, facts):
    history = running(p, at=index)

    out = decide_on(decide, history, history[-1], facts=facts)

    assert kinds(out) == ["step.applied"]
    applied = payload(out[0], StepApplied)
    assert (applied.index, applied.step_id, applied.step) == (
        index,
        step_id_of(p, index),
        p.strategy.steps[index],
    )
    assert (applied.ok, applied.already_applied, applied.detail, applied.error) == (
        facts.ok,
        facts.already_applied,
        facts.detail or {},
        facts.error,
    )


@pytest.mark.parametrize(
    ("history", "facts"),
    [
        (running(CANARY, at=SET_20, stage="applied"), Applied(ok=True, already_applied=True)),
        (running(CANARY, at=SET_50, stage="verified"), Applied(ok=True)),
        (running(CANARY, at=SET_20), None),
    ],
    ids=["already applied", "already verified", "nothing applied"],
)
def test_a_step_intent_delivered_again_or_not_applied_records_nothing(history, facts):
    redelivered = next(e for e in reversed(history) if e.type_name == "shiplog.step.started")

    assert decide_on(decide, history, redelivered, facts=facts) == []


def test_a_timed_pause_schedules_its_timer_and_pauses_until_it_fires():
    history = running(CANARY, at=PAUSE_30S)

    out = decide_on(decide, history, history[-1])

    assert kinds(out) == ["timer.scheduled", "deployment.paused"]
    timer = payload(out[0], TimerScheduled)
    assert (timer.timer_id, timer.stream_id, timer.due_at, timer.purpose, timer.payload) == (
        f"{DEPLOYMENT_ID}:3:pause:timer",
        f"deployment-{DEPLOYMENT_ID}",
        NOW + timedelta(seconds=30),
        PAUSE,
        {"index": PAUSE_30S},
    )
    paused = payload(out[1], DeploymentPaused)
    assert (paused.step_index, paused.reason, paused.until) == (
        PAUSE_30S,
        "pause 30s",
        NOW + timedelta(seconds=30),
    )


def test_an_indefinite_pause_waits_for_promote():
    history = running(UNTIL_PROMOTED, at=1)

    out = decide_on(decide, history, history[-1])

    assert kinds(out) == ["deployment.paused"]
    paused = payload(out[0], DeploymentPaused)
    assert (paused.step_index, paused.reason, paused.until) == (1, "waiting for promote", None)


@pytest.mark.parametrize("p", [CANARY, ROLLING], ids=["canary", "rolling"])
def test_an_analysis_step_waits_for_verification(p):
    history = running(p, at=ANALYSIS)

    assert decide_on(decide, history, history[-1]) == []


def test_a_step_intent_delivered_while_paused_by_a_person_is_not_applied():
    history = [*running(CANARY, at=SET_50), deployment_paused(SET_50)]
    intent = history[-2]

    assert decide_on(decide, history, intent, facts=Applied(ok=True)) == []


# --- verification's verdicts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "index", "next_kind"),
    [
        (CANARY, SET_20, "analysis"),
        (CANARY, ANALYSIS, "set_weight"),
        (CANARY, SET_50, "pause"),
        (ROLLING, 0, "analysis"),
    ],
    ids=["after 20%", "after analysis", "after 50%", "after rolling"],
)
def test_a_passed_current_step_starts_the_next(p, index, next_kind):
    history = running(p, at=index, stage="applied")

    out = decide_on(decide, history, verification_passed(index))

    assert kinds(out) == ["step.started"]
    step = payload(out[0], StepStarted)
    assert (step.index, step.step.kind, step.step_id) == (index + 1, next_kind, step_id_of(p, index + 1))


@pytest.mark.parametrize(
    ("p", "last", "next_environment"),
    [
        (CANARY, PROMOTE, None),
        (canary_plan(environment="staging", next_environment="production"), PROMOTE, "production"),
        (ROLLING, ANALYSIS, None),
    ],
    ids=["canary, last environment", "canary, promotes onward", "rolling"],
)
def test_a_passed_last_step_succeeds_naming_the_next_environment(p, last, next_environment):
    history = running(p, at=last, stage="applied")

    out = decide_on(decide, history, verification_passed(last))

    assert kinds(out) == ["deployment.succeeded"]
    done = payload(out[0], DeploymentSucceeded)
    assert (done.deployment_id, done.release_id, done.service, done.environment, done.version) == (
        p.deployment_id,
        p.release_id,
        p.service,
        p.environment,
        p.version,
    )
    assert done.next_environment == next_environment


@pytest.mark.parametrize(
    ("history", "index"),
    [
        (running(CANARY, at=SET_50, stage="applied"), SET_20),
        (running(CANARY, at=SET_20, stage="applied"), ANALYSIS),
        ([*running(CANARY, at=SET_20, stage="applied"), deployment_paused(SET_20)], SET_20),
    ],
    ids=["an earlier step", "a later step", "while paused"],
)
def test_a_pass_for_a_step_that_is_not_running_now_moves_nothing(history, index):
    assert decide_on(decide, history, verification_passed(index)) == []


def test_a_current_step_passed_twice_starts_the_next_step_once():
    history = [*running(CANARY, at=SET_20, stage="verified"), step_started(CANARY, ANALYSIS)]

    assert decide_on(decide, history, verification_passed(SET_20)) == []


@pytest.mark.parametrize(
    ("p", "index"),
    [(CANARY, ANALYSIS), (CANARY, SET_20), (ROLLING, ANALYSIS)],
    ids=["canary analysis", "canary 20%", "rolling analysis"],
)
def test_an_inconclusive_analysis_pauses_for_a_person(p, index):
    history = running(p, at=index, stage="applied")

    out = decide_on(decide, history, verification_inconclusive(index, reason="no latency data"))

    assert kinds(out) == ["deployment.paused"]
    paused = payload(out[0], DeploymentPaused)
    assert paused.step_index == index
    assert paused.reason == "analysis inconclusive, a person decides: no latency data"
    assert paused.until is None


def test_an_inconclusive_verdict_for_another_step_changes_nothing():
    history = running(CANARY, at=SET_50, stage="applied")

    assert decide_on(decide, history, verification_inconclusive(ANALYSIS)) == []


# --- timers and a person's commands ---------------------------------------------------------


def paused_at_timed_pause() -> list:
    history = running(CANARY, at=PAUSE_30S)
    return [*history, *decide_on(decide, history, history[-1])]


def paused_until_promoted() -> list:
    history = running(UNTIL_PROMOTED, at=1)
    return [*history, *decide_on(decide, history, history[-1])]


def paused_inconclusive() -> list:
    history = running(CANARY, at=ANALYSIS)
    return [*history, *decide_on(decide, history, verification_inconclusive(ANALYSIS))]


def test_the_pause_timer_firing_resumes_and_starts_the_next_step():
    out = decide_on(decide, paused_at_timed_pause(), timer_fired(PAUSE, timer_id="t", index=PAUSE_30S))

    assert kinds(out) == ["deployment.resumed", "step.started"]
    assert payload(out[0], DeploymentResumed).step_index == PAUSE_30S
    assert payload(out[1], StepStarted).index == PROMOTE


@pytest.mark.parametrize(
    ("history", "incoming"),
    [
        (paused_at_timed_pause(), timer_fired(PAUSE, index=SET_50)),
        (paused_at_timed_pause(), timer_fired(WINDOW)),
        (running(CANARY, at=PROMOTE), timer_fired(PAUSE, index=PAUSE_30S)),
    ],
    ids=["another step's timer", "not a pause timer", "already promoted past it"],
)
def test_a_timer_that_is_not_the_current_pause_moves_nothing(history, incoming):
    assert decide_on(decide, history, incoming) == []


@pytest.mark.parametrize(
    ("history", "index", "next_index"),
    [
        (paused_until_promoted(), 1, 2),
        (paused_at_timed_pause(), PAUSE_30S, PROMOTE),
        (paused_inconclusive(), ANALYSIS, SET_50),
    ],
    ids=["indefinite pause", "timed pause cut short", "inconclusive analysis"],
)
def test_promote_while_paused_resumes_and_starts_the_next_step(history, index, next_index):
    out = decide_on(decide, history, command(Promote, "carol"))

    assert kinds(out) == ["deployment.resumed", "step.started"]
    resumed = payload(out[0], DeploymentResumed)
    assert (resumed.step_index, resumed.by) == (index, "carol")
    assert payload(out[1], StepStarted).index == next_index
    assert all(e.actor == "carol" for e in out)


@pytest.mark.parametrize(
    "stage",
    ["started", "applied", "verified"],
)
def test_a_pause_command_while_running_pauses_by_its_actor(stage):
    history = running(CANARY, at=SET_50, stage=stage)

    out = decide_on(decide, history, command(Pause, "dave"))

    assert kinds(out) == ["deployment.paused"]
    paused = payload(out[0], DeploymentPaused)
    assert (paused.step_index, paused.reason, paused.by, paused.until) == (
        SET_50,
        "paused by dave",
        "dave",
        None,
    )
    assert out[0].actor == "dave"


@pytest.mark.parametrize(
    ("stage", "events"),
    [
        ("verified", ["deployment.resumed", "step.started"]),
        ("applied", ["deployment.resumed"]),
    ],
    ids=["current step verified", "current step not verified yet"],
)
def test_resume_after_a_pause_by_a_person_goes_on_only_from_a_verified_step(stage, events):
    history = [*running(CANARY, at=SET_50, stage=stage), deployment_paused(SET_50)]

    out = decide_on(decide, history, command(Resume, "erin"))

    assert kinds(out) == events
    assert payload(out[0], DeploymentResumed).by == "erin"
    if len(out) > 1:
        assert payload(out[1], StepStarted).index == PAUSE_30S


def test_a_pass_that_came_while_paused_lets_resume_go_on():
    history = [
        *running(CANARY, at=SET_50, stage="applied"),
        deployment_paused(SET_50),
        verification_passed(SET_50),
    ]

    out = decide_on(decide, history, command(Resume))

    assert kinds(out) == ["deployment.resumed", "step.started"]


@pytest.mark.parametrize("index", [SET_50, PAUSE_30S], ids=["target step", "timed pause"])
def test_resume_re_drives_a_step_whose_intent_was_caught_by_the_pause(index):
    history = [*running(CANARY, at=index), deployment_paused(index)]
    # the intent was delivered while paused: nothing was applied or scheduled
    assert decide_on(decide, history, history[-2], facts=Applied(ok=True)) == []

    out = decide_on(decide, history, command(Resume))

    assert kinds(out) == ["deployment.resumed", "step.started"]
    redriven = payload(out[1], StepStarted)
    assert (redriven.index, redriven.step_id) == (index, step_id_of(CANARY, index))


@pytest.mark.parametrize(
    ("history", "incoming"),
    [
        (running(CANARY, at=SET_50, stage="applied"), command(Promote)),
        (running(CANARY, at=SET_50, stage="applied"), command(Resume)),
        (paused_at_timed_pause(), command(Pause)),
        ([planned(CANARY), approved()], command(Pause)),
        ([planned(CANARY), approved(), queued()], command(Promote)),
        (running(CANARY, at=SET_50), command(Abort)),
    ],
    ids=[
        "promote while running",
        "resume while running",
        "pause while paused",
        "pause before starting",
        "promote while queued",
        "abort is rollback's",
    ],
)
def test_a_command_that_does_not_fit_the_state_changes_nothing(history, incoming):
    assert decide_on(decide, history, incoming) == []


# --- freeing the lane -------------------------------------------------------------------------

WOKEN = ("web.production.rel-2", "web.production.rel-3")


@pytest.mark.parametrize(
    "terminal",
    [
        succeeded(CANARY),
        rolled_back(),
        deployment_failed(),
    ],
    ids=["succeeded", "rolled back", "failed"],
)
def test_an_ended_deployment_wakes_each_queued_one_in_its_own_stream(terminal):
    out = decide_on(decide, running(CANARY, at=PROMOTE), terminal, facts=Released(woken=WOKEN))

    assert kinds(out) == ["timer.scheduled", "timer.scheduled"]
    timers = [payload(e, TimerScheduled) for e in out]
    for woken, timer in zip(WOKEN, timers, strict=True):
        assert timer.stream_id == f"deployment-{woken}"
        assert timer.purpose == LANE_FREE
        assert timer.due_at == NOW
        assert timer.payload == {"subject": woken, "after": DEPLOYMENT_ID}
        assert timer.timer_id == f"{woken}:{LANE_FREE}:{terminal.id}"
    assert all(e.subject == DEPLOYMENT_ID and e.causationid == terminal.id for e in out)


@pytest.mark.parametrize(
    "facts",
    [Released(woken=()), None],
    ids=["nobody waits", "lane not released"],
)
def test_an_ended_deployment_with_nobody_to_wake_schedules_nothing(facts):
    assert decide_on(decide, running(CANARY, at=PROMOTE), succeeded(CANARY), facts=facts) == []


# --- after the end ------------------------------------------------------------------------------

ROLLING_BACK = [*running(CANARY, at=SET_50, stage="applied"), verification_failed(SET_50), rollback_started()]
ENDED = {
    "rolling back": ROLLING_BACK,
    "rolled back": [*ROLLING_BACK, rolled_back()],
    "succeeded": [*running(CANARY, at=PROMOTE, stage="verified"), succeeded(CANARY)],
    "failed": [planned(CANARY), approved(), deployment_failed()],
}


@pytest.mark.parametrize("ended", ENDED)
@pytest.mark.parametrize(
    ("incoming", "facts"),
    [
        (verification_passed(SET_50), None),
        (verification_inconclusive(SET_50), None),
        (step_started(CANARY, SET_50), Applied(ok=True)),
        (timer_fired(PAUSE, index=SET_50), None),
        (timer_fired(LANE_FREE), CLAIMED),
        (command(Promote), None),
        (command(Pause), None),
        (command(Resume), None),
    ],
    ids=["passed", "inconclusive", "step intent", "pause timer", "lane freed", "promote", "pause", "resume"],
)
def test_after_rolling_back_or_ending_nothing_moves(ended, incoming, facts):
    assert decide_on(decide, ENDED[ended], incoming, facts=facts) == []


def test_a_stream_without_a_plan_decides_nothing():
    assert decide_on(decide, [], approved(), facts=CLAIMED) == []


def test_resume_after_an_inconclusive_analysis_goes_on_as_the_person_decided():
    history = [
        *running(CANARY, at=SET_50, stage="applied"),
        verification_inconclusive(SET_50),
        deployment_paused(SET_50),
    ]

    out = decide_on(decide, history, command(Resume, "erin"))

    assert kinds(out) == ["deployment.resumed", "step.started"]
    assert payload(out[1], StepStarted).index == PAUSE_30S


def test_resume_does_not_end_an_indefinite_pause_only_promote_does():
    indefinite = plan(
        (PlannedStep(kind="set_weight", weight=20), PlannedStep(kind="pause"), PlannedStep(kind="promote"))
    )
    history = [*running(indefinite, at=1), deployment_paused(1, "waiting for promote", by=None)]

    assert decide_on(decide, history, command(Resume)) == []
    assert kinds(decide_on(decide, history, command(Promote))) == ["deployment.resumed", "step.started"]


@pytest.mark.parametrize(
    ("history_of", "expected"),
    [
        (lambda: [planned()], ["deployment.scheduled", "timer.scheduled"]),
        (lambda: [planned(), approved()], ["deployment.scheduled", "timer.scheduled"]),
        (lambda: running(CANARY, at=SET_20), []),
    ],
    ids=["planned", "approved", "already running"],
)
def test_a_person_can_hold_a_deployment_that_has_not_started_until_a_time(history_of, expected):
    later = NOW + timedelta(hours=2)
    hold = event(Schedule(deployment_id=DEPLOYMENT_ID, not_before=later), actor="frank", source="shiplog/cli")

    out = decide_on(decide, history_of(), hold)

    assert kinds(out) == expected
    if out:
        assert payload(out[0], DeploymentScheduled).not_before == later
        timer = payload(out[1], TimerScheduled)
        assert (timer.due_at, timer.purpose) == (later, "window")
        # and approval no longer starts it before then
        history = [*history_of(), *out, approved()]
        assert decide_on(decide, history, history[-1], facts=None) == []
