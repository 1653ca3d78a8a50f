"""The rollback core: what triggers a rollback, the intent recorded once, and the
deployment's end from what the restore found."""

from __future__ import annotations

import pytest

from consumers.rollback.core import Restored, decide, rollback_step_id, trigger_reason
from events.command import Abort
from events.deployment import DeploymentFailed, DeploymentRolledBack
from events.rollback import RollbackCompleted, RollbackStarted
from tests.unit.sagafixtures import (
    DEPLOYMENT_ID,
    PREVIOUS_VERSION,
    SET_20,
    SET_50,
    approval_requested,
    approved,
    canary_plan,
    command,
    decide_on,
    deployment_denied,
    deployment_failed,
    deployment_paused,
    fold_events,
    kinds,
    payload,
    planned,
    queued,
    rollback_command,
    rollback_completed,
    rollback_started,
    rolled_back,
    running,
    snapshot_taken,
    step_applied,
    succeeded,
    verification_failed,
    verification_passed,
)

CANARY = canary_plan()
RUNNING = running(CANARY, at=SET_50, stage="applied")
PAUSED = [*RUNNING, deployment_paused(SET_50)]
SUCCEEDED = [*running(CANARY, at=4, stage="verified"), succeeded(CANARY)]


# --- triggers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "incoming", "reason"),
    [
        (RUNNING, verification_failed(SET_50), "verification failed at step 2: error rate 12%"),
        (
            RUNNING,
            verification_failed(SET_50, outcome="Error", reason="prometheus down 3 times"),
            "verification error at step 2: prometheus down 3 times",
        ),
        (PAUSED, verification_failed(SET_50), "verification failed at step 2: error rate 12%"),
        (
            running(CANARY, at=SET_50),
            step_applied(CANARY, SET_50, ok=False, error="proxy refused the weight"),
            "step 2 (set_weight) failed: proxy refused the weight",
        ),
        (RUNNING, command(Abort, "alice"), "aborted by alice"),
        (PAUSED, command(Abort, "bob"), "aborted by bob"),
        (SUCCEEDED, rollback_command("alice"), "rollback requested by alice"),
        (
            SUCCEEDED,
            rollback_command("alice", comment="customers see 500s"),
            "rollback requested by alice: customers see 500s",
        ),
        (RUNNING, rollback_command("carol"), "rollback requested by carol"),
    ],
    ids=[
        "verification failed",
        "verification error",
        "verification failed while paused",
        "step refused by the target",
        "abort while running",
        "abort while paused",
        "rollback of a succeeded deployment",
        "rollback with a comment",
        "rollback while running",
    ],
)
def test_a_trigger_starts_the_rollback_to_the_previous_version(history, incoming, reason):
    out = decide_on(decide, history, incoming)

    assert kinds(out) == ["rollback.started"]
    started = payload(out[0], RollbackStarted)
    assert (started.reason, started.to_version, started.step_id) == (
        reason,
        PREVIOUS_VERSION,
        f"{DEPLOYMENT_ID}:rollback",
    )
    assert out[0].subject == DEPLOYMENT_ID
    assert out[0].causationid == incoming.id
    assert out[0].actor == incoming.actor


def test_the_rollback_step_id_is_the_same_however_often_it_is_decided():
    incoming = verification_failed(SET_50)

    first = decide_on(decide, RUNNING, incoming)
    again = decide_on(decide, RUNNING, incoming)

    ids = {payload(e, RollbackStarted).step_id for e in (*first, *again)}
    assert ids == {rollback_step_id(DEPLOYMENT_ID)}


def test_a_first_deployment_rolls_back_to_nothing():
    history = [e if e.type_name != "shiplog.snapshot.taken" else snapshot_taken(None) for e in RUNNING]

    (out,) = decide_on(decide, history, verification_failed(SET_50))

    assert payload(out, RollbackStarted).to_version is None


@pytest.mark.parametrize(
    "history",
    [
        [planned(CANARY)],
        [planned(CANARY), approval_requested()],
        [planned(CANARY), approved()],
        [planned(CANARY), approved(), queued()],
    ],
    ids=["planned", "awaiting approval", "approved", "queued"],
)
def test_an_abort_before_any_snapshot_fails_the_deployment(history):
    out = decide_on(decide, history, command(Abort, "alice"))

    assert kinds(out) == ["deployment.failed"]
    assert payload(out[0], DeploymentFailed).reason == "aborted by alice"
    assert out[0].actor == "alice"


@pytest.mark.parametrize(
    ("history", "incoming"),
    [
        (RUNNING, verification_passed(SET_50)),
        (running(CANARY, at=SET_20), step_applied(CANARY, SET_20)),
        (RUNNING, rollback_started()),
    ],
    ids=["verification passed", "step applied ok", "intent without a restore"],
)
def test_what_is_no_trigger_starts_nothing(history, incoming):
    assert decide_on(decide, history, incoming) == []


# --- one rollback at a time --------------------------------------------------------------

ROLLING_BACK = [*RUNNING, verification_failed(SET_50), rollback_started()]


@pytest.mark.parametrize(
    "incoming",
    [
        verification_failed(SET_50, reason="again"),
        step_applied(CANARY, SET_50, ok=False, error="late refusal"),
        command(Abort),
        rollback_command(),
    ],
    ids=["verification failed", "step refused", "abort", "rollback"],
)
def test_a_second_trigger_while_rolling_back_starts_nothing(incoming):
    assert decide_on(decide, ROLLING_BACK, incoming) == []


# --- the restore's outcome ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "healthy"),
    [
        (Restored(ok=True, healthy=True, detail={"health": {"codes": [200]}}), True),
        (Restored(ok=True, healthy=False, detail={"health": {"codes": [503]}}), False),
        (Restored(ok=False, healthy=False, detail={}, error="TargetRejected: snapshot gone"), False),
        (Restored(ok=False, healthy=True, detail={}, error="half restored"), False),
    ],
    ids=["restored and healthy", "restored, unhealthy", "restore failed", "restore failed, health ok"],
)
def test_a_restore_completes_the_rollback_and_ends_the_deployment(facts, healthy):
    started = ROLLING_BACK[-1]

    out = decide_on(decide, ROLLING_BACK, started, facts=facts)

    assert kinds(out) == ["rollback.completed", "deployment.rolled_back"]
    completed = payload(out[0], RollbackCompleted)
    assert (completed.ok, completed.healthy, completed.detail, completed.error) == (
        facts.ok,
        facts.healthy,
        facts.detail,
        facts.error,
    )
    ended = payload(out[1], DeploymentRolledBack)
    assert (ended.healthy, ended.to_version, ended.service, ended.environment) == (
        healthy,
        PREVIOUS_VERSION,
        "web",
        "production",
    )
    assert ended.reason == payload(started, RollbackStarted).reason
    assert all(e.causationid == started.id for e in out)


@pytest.mark.parametrize(
    ("history", "facts"),
    [
        (ROLLING_BACK, None),
        ([*ROLLING_BACK, rollback_completed()], Restored(ok=True, healthy=True, detail={})),
        ([*ROLLING_BACK, rollback_completed(), rolled_back()], Restored(ok=True, healthy=True, detail={})),
    ],
    ids=["nothing restored", "already completed", "already ended"],
)
def test_a_rollback_intent_without_a_new_restore_records_nothing(history, facts):
    started = next(e for e in history if e.type_name == "shiplog.rollback.started")

    assert decide_on(decide, history, started, facts=facts) == []


# --- after the end -----------------------------------------------------------------------------

ENDED = {
    "succeeded": SUCCEEDED,
    "rolled back": [*ROLLING_BACK, rollback_completed(), rolled_back()],
    "failed": [planned(CANARY), approved(), deployment_failed()],
    "denied": [planned(CANARY), approval_requested(), deployment_denied()],
}


@pytest.mark.parametrize("ended", ENDED)
@pytest.mark.parametrize(
    "incoming",
    [
        verification_failed(SET_50),
        step_applied(CANARY, SET_50, ok=False, error="late"),
        command(Abort),
    ],
    ids=["verification failed", "step refused", "abort"],
)
def test_after_the_end_a_failure_or_abort_starts_nothing(ended, incoming):
    assert decide_on(decide, ENDED[ended], incoming) == []


@pytest.mark.parametrize("ended", ["rolled back", "failed", "denied"])
def test_a_rollback_command_for_a_deployment_that_did_not_succeed_starts_nothing(ended):
    assert decide_on(decide, ENDED[ended], rollback_command()) == []


@pytest.mark.parametrize(
    ("history", "incoming", "reason"),
    [
        (RUNNING, verification_passed(SET_50), None),
        (SUCCEEDED, verification_failed(SET_50), None),
        (SUCCEEDED, command(Abort), None),
        (SUCCEEDED, rollback_command("alice"), "rollback requested by alice"),
        ([planned(CANARY)], command(Abort, "zoe"), "aborted by zoe"),
    ],
    ids=["a pass", "failure after success", "abort after success", "rollback after success", "early abort"],
)
def test_why_an_event_calls_for_a_rollback(history, incoming, reason):
    assert trigger_reason(fold_events(history), incoming) == reason


def test_a_stream_without_a_plan_decides_nothing():
    assert decide_on(decide, [], command(Abort)) == []
