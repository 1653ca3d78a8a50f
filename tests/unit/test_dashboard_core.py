"""The dashboard's board: deployment events folded into services x environments —
what serves where, what is deploying (strategy, step, canary weight, state) and how
the last deployment ended — whatever order the topics deliver them in, and however
often."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial

import pytest

import consumers.dashboard.core as core
from consumers.dashboard.core import (
    Board,
    BuildSeen,
    Cell,
    Deploying,
    Ended,
    Overview,
    Row,
    evolve,
    evolve_all,
    overview,
)
from consumers.deployment import Status
from events.build import BuildCompleted
from events.deployment import (
    DeploymentPlanned,
    DeploymentRejected,
    DeploymentRolledBack,
    Reason,
    deployment_id,
)
from events.envelope import CloudEvent
from events.topics import APPROVALS, COMMANDS, EXECUTIONS, PLANS, ROLLBACKS, VERIFICATIONS, topic_for
from tests.unit.sagafixtures import (
    ANALYSIS,
    DEPLOYMENT_ID,
    ENVIRONMENT,
    NOW,
    PAUSE_30S,
    PREVIOUS_VERSION,
    PROMOTE,
    RELEASE_ID,
    SERVICE,
    SET_20,
    SET_50,
    VERSION,
    approval_requested,
    approved,
    canary_plan,
    deployment_denied,
    deployment_failed,
    deployment_paused,
    deployment_resumed,
    event,
    planned,
    queued,
    rollback_completed,
    rollback_started,
    rolled_back,
    rolling_plan,
    running,
    started,
    step_applied,
    step_started,
    succeeded,
    timer_fired,
    verification_failed,
)

CELL = (SERVICE, ENVIRONMENT)
#: the topics the dashboard subscribes to that carry a deployment's events
TOPICS = (PLANS, APPROVALS, COMMANDS, EXECUTIONS, VERIFICATIONS, ROLLBACKS)


def timed(history: Sequence[CloudEvent]) -> list[CloudEvent]:
    """The events as appended one second apart, in this order (the fixtures give
    them all the same time)."""
    return [e.model_copy(update={"time": NOW + timedelta(seconds=i)}) for i, e in enumerate(history)]


def only_cell(view: Overview) -> Cell:
    [row] = view.rows
    [cell] = row.cells
    return cell


def board_of(history: Sequence[CloudEvent]) -> Board:
    return evolve_all(Board(), history)


def a_deployment(
    environment: str = ENVIRONMENT, *, stage: int = 1, release: str = RELEASE_ID, version: str = VERSION
) -> DeploymentPlanned:
    return canary_plan(
        deployment_id=deployment_id(SERVICE, environment, release),
        release_id=release,
        environment=environment,
        stage=stage,
        version=version,
    )


def build(service: str = SERVICE, version: str = VERSION, *, author: str | None = "ann") -> CloudEvent:
    data = BuildCompleted(
        service=service, version=version, artifact=f"reg/{service}:{version}", author=author
    )
    return event(data, subject=service, source="ci")


def build_rejected(
    service: str = SERVICE, version: str = VERSION, *, reasons: Sequence[str] = ("tests failed",)
) -> CloudEvent:
    data = DeploymentRejected(
        release_id=f"{service}-{version}",
        service=service,
        version=version,
        reasons=[Reason(code="policy", message=m) for m in reasons],
    )
    return event(data, subject=service, source="shiplog/planning")


# --- one deployment in progress -----------------------------------------------------

P = canary_plan()


@pytest.mark.parametrize(
    ("history", "status", "step", "weight"),
    [
        ([planned(P)], "planned", "0/5", None),
        ([planned(P), approval_requested()], "awaiting_approval", "0/5", None),
        ([planned(P), approved(), queued()], "queued", "0/5", None),
        ([planned(P), approved(), started()], "running", "0/5", None),
        (running(P, at=SET_20), "running", "1/5 set_weight", None),
        (running(P, at=SET_20, stage="applied"), "running", "1/5 set_weight", 20),
        (running(P, at=ANALYSIS), "running", "2/5 analysis", 20),
        (running(P, at=SET_50), "running", "3/5 set_weight", 20),
        (running(P, at=SET_50, stage="applied"), "running", "3/5 set_weight", 50),
        (running(P, at=PAUSE_30S), "running", "4/5 pause", 50),
    ],
    ids=[
        "planned",
        "awaiting-approval",
        "queued",
        "started",
        "set-20-started",
        "set-20-applied",
        "analysis",
        "set-50-started",
        "set-50-applied",
        "pause",
    ],
)
def test_a_deployment_in_progress_shows_its_state_step_and_weight(
    history: list[CloudEvent], status: str, step: str, weight: int | None
) -> None:
    cell = only_cell(overview(board_of(history)))
    assert cell.deploying == (
        Deploying(
            deployment_id=DEPLOYMENT_ID,
            version=VERSION,
            status=status,
            strategy="canary",
            step=step,
            weight=weight,
            paused_reason=None,
        ),
    )
    assert (cell.environment, cell.serving, cell.via, cell.last) == (ENVIRONMENT, None, None, None)


def test_a_step_the_target_refused_does_not_move_the_weight() -> None:
    history = [*running(P, at=SET_50), step_applied(P, SET_50, ok=False, error="quota")]
    [deploying] = only_cell(overview(board_of(history))).deploying
    assert deploying.weight == 20


def test_a_paused_deployment_shows_why_until_it_resumes() -> None:
    paused = [*running(P, at=PAUSE_30S), deployment_paused(PAUSE_30S, "pause 30s", by=None)]
    [deploying] = only_cell(overview(board_of(timed(paused)))).deploying
    assert (deploying.status, deploying.paused_reason) == ("paused", "pause 30s")

    resumed = timed([*paused, deployment_resumed(PAUSE_30S)])
    [deploying] = only_cell(overview(board_of(resumed))).deploying
    assert (deploying.status, deploying.paused_reason) == ("running", None)


def test_a_rolling_deployment_has_no_weight() -> None:
    p = rolling_plan()
    [deploying] = only_cell(overview(board_of(running(p, at=0, stage="applied")))).deploying
    assert (deploying.strategy, deploying.step, deploying.weight) == ("rolling", "1/2 rolling", None)


# --- how deployments end ------------------------------------------------------------

SUCCEEDED = [*running(P, at=PROMOTE, stage="verified"), succeeded(P)]
ROLLED_BACK = [
    *running(P, at=SET_20, stage="applied"),
    verification_failed(SET_20),
    rollback_started(),
    rollback_completed(),
    rolled_back(),
]
FAILED = [planned(P), approved(), started(), deployment_failed()]
DENIED = [planned(P), approval_requested(), deployment_denied()]
#: ``shiplog rollback`` of the deployment after it succeeded
ROLLED_BACK_AFTER_SUCCESS = [
    *SUCCEEDED,
    rollback_started("rollback requested by alice"),
    rollback_completed(),
    rolled_back(),
]
#: planning refused the deployment at its environment: no plan ever comes
REJECTED_AT_ENVIRONMENT = event(
    DeploymentRejected(
        deployment_id=DEPLOYMENT_ID,
        release_id=RELEASE_ID,
        service=SERVICE,
        version=VERSION,
        environment=ENVIRONMENT,
        reasons=[Reason(code="window", message="the deployment window is closed")],
    ),
    source="shiplog/planning",
)


@pytest.mark.parametrize(
    ("history", "serving", "via", "status"),
    [
        (SUCCEEDED, VERSION, "succeeded", Status.SUCCEEDED),
        (ROLLED_BACK, PREVIOUS_VERSION, "rolled_back", Status.ROLLED_BACK),
        (FAILED, None, None, Status.FAILED),
        (DENIED, None, None, Status.DENIED),
    ],
    ids=["succeeded", "rolled-back", "failed", "denied"],
)
def test_an_ended_deployment_leaves_what_serves_and_how_it_ended(
    history: list[CloudEvent], serving: str | None, via: str | None, status: Status
) -> None:
    board = board_of(history)
    assert board.active == {}
    assert board.ended_ids == (DEPLOYMENT_ID,)
    cell = only_cell(overview(board))
    assert cell == Cell(
        environment=ENVIRONMENT,
        serving=serving,
        via=via,
        deploying=(),
        last=Ended(DEPLOYMENT_ID, VERSION, status),
    )
    assert not cell.empty


def test_a_rollback_to_nothing_serves_nothing() -> None:
    to_nothing = event(
        DeploymentRolledBack(
            deployment_id=DEPLOYMENT_ID,
            service=SERVICE,
            environment=ENVIRONMENT,
            to_version=None,
            reason="verification failed",
            healthy=True,
        )
    )
    cell = only_cell(overview(board_of([*ROLLED_BACK[:-1], to_nothing])))
    assert (cell.serving, cell.via) == (None, "rolled_back")


def test_the_next_deployment_shows_beside_the_version_serving() -> None:
    nxt = a_deployment(release="rel-2", version="1.2.0")
    board = board_of([*SUCCEEDED, planned(nxt), step_started(nxt, SET_20), step_applied(nxt, SET_20)])
    cell = only_cell(overview(board))
    assert (cell.serving, cell.via) == (VERSION, "succeeded")
    assert [(d.version, d.weight) for d in cell.deploying] == [("1.2.0", 20)]
    assert cell.last == Ended(DEPLOYMENT_ID, VERSION, Status.SUCCEEDED)


def test_two_deployments_of_one_cell_in_progress_both_show() -> None:
    queued_behind = a_deployment(release="rel-2", version="1.2.0")
    board = board_of([*running(P, at=SET_20), planned(queued_behind)])
    versions = sorted(d.version for d in only_cell(overview(board)).deploying)
    assert versions == ["1.1.0", "1.2.0"]


def test_a_late_event_of_an_ended_deployment_does_not_bring_it_back() -> None:
    board = board_of(SUCCEEDED)
    for late in (step_started(P, SET_20), deployment_paused(SET_50), planned(P), succeeded(P)):
        assert evolve(board, late) == board


def test_only_the_latest_ended_deployments_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "ENDED_REMEMBERED", 2)
    plans = [a_deployment(release=f"rel-{i}", version=f"1.{i}.0") for i in range(3)]
    board = board_of([e for p in plans for e in (planned(p), succeeded(p))])
    assert board.ended_ids == (plans[1].deployment_id, plans[2].deployment_id)
    assert only_cell(overview(board)).serving == "1.2.0"


# --- out of order, and twice ----------------------------------------------------------

IN_PROGRESS = timed(
    [
        *running(P, at=SET_50, stage="applied"),
        verification_failed(SET_50, outcome="Inconclusive", reason="no data"),
        deployment_paused(SET_50, "inconclusive: no data", by=None),
    ]
)


def subscribed(history: Sequence[CloudEvent]) -> list[CloudEvent]:
    """The events the dashboard's topics carry (not the timers')."""
    return [e for e in history if topic_for(e.type) in TOPICS]


HISTORIES = {
    "in-progress": IN_PROGRESS,
    "succeeded": subscribed(timed(SUCCEEDED)),
    "rolled-back": timed(ROLLED_BACK),
    "denied": timed(DENIED),
    "rolled-back-after-success": subscribed(timed(ROLLED_BACK_AFTER_SUCCESS)),
}


def by_topic(history: Sequence[CloudEvent], order: Sequence[str]) -> list[CloudEvent]:
    """What a subscriber sees when it drains one topic after the other: each topic in
    its own order, the topics in ``order``."""
    return [e for name in order for e in history if topic_for(e.type).name == name]


def merged(history: Sequence[CloudEvent], seed: int) -> list[CloudEvent]:
    """A random interleaving of the topics, each kept in its own order."""
    rng = random.Random(seed)
    queues = {t.name: [e for e in history if topic_for(e.type) == t] for t in TOPICS}
    queues = {name: q for name, q in queues.items() if q}
    out = []
    while queues:
        name = rng.choice(sorted(queues))
        out.append(queues[name].pop(0))
        if not queues[name]:
            del queues[name]
    return out


ORDERS: dict[str, Callable[[list[CloudEvent]], list[CloudEvent]]] = {
    "reversed": lambda h: list(reversed(h)),
    "executions-first": lambda h: by_topic(h, [t.name for t in reversed(TOPICS)]),
    "plans-last": lambda h: by_topic(h, [t.name for t in (*TOPICS[1:], PLANS)]),
    "verifications-first": lambda h: by_topic(
        h, [t.name for t in (VERIFICATIONS, EXECUTIONS, APPROVALS, PLANS, ROLLBACKS, COMMANDS)]
    ),
    **{f"merged-{seed}": partial(merged, seed=seed) for seed in range(6)},
    "shuffled": lambda h: random.Random(7).sample(h, len(h)),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", HISTORIES)
def test_the_board_is_the_same_whatever_order_the_events_arrive_in(name: str, order: str) -> None:
    history = HISTORIES[name]
    arrival = ORDERS[order](history)
    assert sorted(e.id for e in arrival) == sorted(e.id for e in history)
    assert board_of(arrival) == board_of(history)
    assert overview(board_of(arrival)) == overview(board_of(history))


def test_an_event_that_overtook_the_plan_lands_after_it() -> None:
    plan_, request = timed([planned(P), approval_requested()])
    [deploying] = only_cell(overview(board_of([request, plan_]))).deploying
    assert deploying.status == "awaiting_approval"


def test_the_end_arriving_before_the_plan_ends_the_deployment_once_the_plan_arrives() -> None:
    history = timed(SUCCEEDED)
    end, plan_ = history[-1], history[0]
    board = evolve(Board(), end)
    assert board.serving == {CELL: (VERSION, "succeeded")}
    assert overview(board).rows[0].cells[0].deploying == ()  # nothing to show without the plan
    board = evolve(board, plan_)
    assert board.active == {}
    assert only_cell(overview(board)).last == Ended(DEPLOYMENT_ID, VERSION, Status.SUCCEEDED)


def test_events_of_the_same_instant_fold_in_arrival_order() -> None:
    paused, resumed = deployment_paused(SET_50), deployment_resumed(SET_50)  # both at NOW
    [deploying] = only_cell(overview(board_of([*running(P, at=SET_50), resumed, paused]))).deploying
    assert deploying.status == "paused"


@pytest.mark.parametrize("name", HISTORIES)
def test_a_redelivered_event_changes_nothing_shown(name: str) -> None:
    history = HISTORIES[name]
    expected = overview(board_of(history))
    for again in history:
        assert overview(board_of([*history, again])) == expected, again.type
    twice = [e for e in history for _ in range(2)]
    assert overview(board_of(twice)) == expected


def test_a_redelivered_event_of_an_ended_deployment_leaves_the_board_as_it_is() -> None:
    board = board_of(timed(SUCCEEDED))
    assert evolve_all(board, timed(SUCCEEDED)) == board


def test_a_step_started_delivered_again_at_the_instant_it_was_applied_stays_applied() -> None:
    history = running(P, at=SET_50, stage="applied")  # every event at NOW
    again = history[-2]
    assert again.type_name == "shiplog.step.started"
    [deploying] = only_cell(overview(board_of([*history, again]))).deploying
    assert deploying.weight == 50


def test_a_redelivered_rollback_does_not_undo_the_next_deployment() -> None:
    nxt = a_deployment(release="rel-2", version="1.2.0")
    history = timed([*ROLLED_BACK, planned(nxt), succeeded(nxt)])
    board = board_of([*history, history[-3]])  # the first deployment's rolled_back again
    cell = only_cell(overview(board))
    assert (cell.serving, cell.via) == ("1.2.0", "succeeded")
    assert cell.last == Ended(nxt.deployment_id, "1.2.0", Status.SUCCEEDED)


# --- builds ---------------------------------------------------------------------------


def test_a_build_shows_as_its_services_row_before_any_deployment() -> None:
    b = build(author="ann")
    view = overview(board_of([b]))
    assert view == Overview(environments=(), rows=(Row(SERVICE, BuildSeen(VERSION, b.id, NOW, "ann"), ()),))


def test_the_latest_build_replaces_the_one_before() -> None:
    board = board_of([build(version="1.0.0"), build(version="1.1.0", author=None)])
    assert (board.builds[SERVICE].version, board.builds[SERVICE].author) == ("1.1.0", None)


def test_a_rejected_build_shows_planning_reasons() -> None:
    board = board_of([build(), build_rejected(reasons=["tests failed", "2 critical findings"])])
    assert board.builds[SERVICE].rejected == "tests failed; 2 critical findings"


def test_a_rejection_without_reasons_still_marks_the_build() -> None:
    assert board_of([build(), build_rejected(reasons=[])]).builds[SERVICE].rejected == "rejected"


@pytest.mark.parametrize(
    "rejection",
    [build_rejected(version="0.9.0"), build_rejected(service="api")],
    ids=["older-version", "other-service"],
)
def test_a_rejection_of_another_build_changes_nothing_shown(rejection: CloudEvent) -> None:
    """The rejection is kept (its build may still be on its way), but shows nowhere."""
    board = board_of([build()])
    after = evolve(board, rejection)
    assert after.builds == board.builds
    assert overview(after) == overview(board)


def test_a_newer_build_clears_the_rejection_of_the_one_before() -> None:
    board = board_of([build(version="1.0.0"), build_rejected(version="1.0.0"), build(version="1.1.0")])
    assert board.builds[SERVICE].rejected is None


def test_an_event_the_board_does_not_show_changes_nothing() -> None:
    board = board_of(SUCCEEDED)
    assert evolve(board, timer_fired("pause", index=PAUSE_30S)) is board


# --- the overview's shape -------------------------------------------------------------


def test_environments_are_in_pipeline_order_and_services_sorted() -> None:
    staging = a_deployment("staging", stage=0)
    production = a_deployment("production", stage=1)
    qa = a_deployment("qa", stage=0)
    board = board_of(
        [
            planned(production),
            planned(staging),
            succeeded(staging),
            build("api", "2.0.0"),
            planned(qa),
        ]
    )
    view = overview(board)
    assert view.environments == ("qa", "staging", "production")  # stage, then name
    assert [r.service for r in view.rows] == ["api", "web"]
    api, web = view.rows
    assert [c.environment for c in api.cells] == ["qa", "staging", "production"]
    assert all(c.empty for c in api.cells)
    qa_cell, staging_cell, production_cell = web.cells
    assert [d.status for d in qa_cell.deploying] == ["planned"]
    assert (staging_cell.serving, staging_cell.deploying) == (VERSION, ())
    assert [d.deployment_id for d in production_cell.deploying] == [production.deployment_id]


def test_an_environment_whose_plan_has_not_arrived_comes_last() -> None:
    staging = a_deployment("staging", stage=0)
    early = a_deployment("canary-zone", stage=2)
    board = board_of([planned(staging), succeeded(early)])  # early's plan is still on its way
    assert overview(board).environments == ("staging", "canary-zone")


# --- found in review ------------------------------------------------------------------


def test_rolling_back_a_deployment_that_succeeded_shows_the_version_restored() -> None:
    history = timed(
        [
            *SUCCEEDED,
            rollback_started("rollback requested by alice"),
            rollback_completed(),
            rolled_back(),
        ]
    )
    cell = only_cell(overview(board_of(history)))
    assert (cell.serving, cell.via) == (PREVIOUS_VERSION, "rolled_back")
    assert cell.last == Ended(DEPLOYMENT_ID, VERSION, Status.ROLLED_BACK)


def test_the_rollback_of_a_deployment_that_succeeded_is_shown_once() -> None:
    board = board_of(timed(ROLLED_BACK_AFTER_SUCCESS))
    assert board.active == {}
    assert board.ended_ids == (DEPLOYMENT_ID,)
    assert evolve_all(board, timed(ROLLED_BACK_AFTER_SUCCESS)) == board


def test_a_deployment_rejected_at_its_environment_does_not_stay_active() -> None:
    assert board_of([REJECTED_AT_ENVIRONMENT]).active == {}


def test_a_deployment_rejected_at_its_environment_shows_as_the_cells_last() -> None:
    board = board_of([REJECTED_AT_ENVIRONMENT])
    assert board.ended_ids == (DEPLOYMENT_ID,)
    cell = only_cell(overview(board))
    assert cell == Cell(environment=ENVIRONMENT, last=Ended(DEPLOYMENT_ID, VERSION, Status.REJECTED))
    assert evolve(board, REJECTED_AT_ENVIRONMENT) == board


def test_a_build_rejection_that_overtakes_its_build_still_marks_it_rejected() -> None:
    the_build, rejection = timed([build(), build_rejected(reasons=["tests failed"])])
    assert board_of([rejection, the_build]).builds[SERVICE].rejected == "tests failed"


def test_a_build_delivered_again_stays_rejected() -> None:
    the_build, rejection = timed([build(), build_rejected(reasons=["tests failed"])])
    assert board_of([the_build, rejection, the_build]).builds[SERVICE].rejected == "tests failed"


def test_an_older_rejection_delivered_again_does_not_replace_the_newer_one() -> None:
    old_build, old_rejection, new_build, new_rejection = timed(
        [
            build(version="1.0.0"),
            build_rejected(version="1.0.0", reasons=["old"]),
            build(version="1.1.0"),
            build_rejected(version="1.1.0", reasons=["new"]),
        ]
    )
    board = board_of([old_rejection, new_rejection, old_rejection, old_build, new_build])
    assert (board.builds[SERVICE].version, board.builds[SERVICE].rejected) == ("1.1.0", "new")
