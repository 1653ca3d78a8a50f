"""The traffic plan shared by the Cloud Run and Azure Container Apps targets: what a
step does to the traffic block, that every step is declarative (the same step on
the traffic it produced gives the same traffic) and that the traffic always adds
up to 100%."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.targets.traffic import Route, plan, routes_of, serving, stable_of
from events.errors import AdapterRejected, InvalidInput

OLD = "web-1-0-0"
NEW = "web-1-1-0"
THIRD = "web-0-9-0"
PREVIEW = "preview"
ACTIVE = "active"

STABLE = [Route(OLD, 100)]


def step(kind: str, routes: list[Route], *, weight: int | None = None) -> list[Route]:
    return plan(kind, routes, NEW, weight=weight, preview_tag=PREVIEW, active_tag=ACTIVE)


def total(routes: list[Route]) -> int:
    return sum(r.percent for r in routes)


def walk(start: list[Route], steps: list[tuple[str, int | None]]) -> list[list[Route]]:
    """The traffic after each step, in order."""
    out, routes = [], start
    for kind, weight in steps:
        routes = step(kind, routes, weight=weight)
        out.append(routes)
    return out


CANARY = [("set_weight", 20), ("set_weight", 50), ("promote", None), ("scale_down", None)]
BLUE_GREEN = [("preview", None), ("switch", None), ("scale_down", None)]
CANARY_AFTER_PREVIEW = [("preview", None), ("set_weight", 10), ("set_weight", 60), ("promote", None)]


# --- each kind ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("rolling", [Route(NEW, 100)]),
        ("promote", [Route(NEW, 100)]),
        ("switch", [Route(NEW, 100, ACTIVE)]),
    ],
)
@pytest.mark.parametrize(
    "start",
    [[], STABLE, [Route(OLD, 80), Route(NEW, 20, PREVIEW)], [Route(OLD, 50, "x"), Route(THIRD, 50)]],
    ids=["nothing", "stable", "canary", "two-others"],
)
def test_a_full_cutover_sends_everything_to_the_new_revision(
    kind: str, expected: list[Route], start: list[Route]
) -> None:
    assert step(kind, start) == expected


def test_switch_without_an_active_tag_leaves_the_route_untagged() -> None:
    assert plan("switch", STABLE, NEW, preview_tag=PREVIEW) == [Route(NEW, 100)]


@pytest.mark.parametrize("weight", [1, 5, 20, 50, 75, 99])
def test_set_weight_splits_between_the_canary_and_the_stable_revision(weight: int) -> None:
    routes = step("set_weight", STABLE, weight=weight)
    assert routes == [Route(NEW, weight), Route(OLD, 100 - weight)]
    assert total(routes) == 100


def test_set_weight_keeps_the_stable_revision_across_steps() -> None:
    """Stable is the revision other than the canary with the most traffic: at 60% the
    canary has more than the old revision, and the old one is still the stable one."""
    twenty, sixty, thirty = walk(STABLE, [("set_weight", 20), ("set_weight", 60), ("set_weight", 30)])
    assert twenty == [Route(NEW, 20), Route(OLD, 80)]
    assert sixty == [Route(NEW, 60), Route(OLD, 40)]
    assert thirty == [Route(NEW, 30), Route(OLD, 70)]


def test_set_weight_keeps_the_preview_tag_the_canary_was_started_with() -> None:
    previewed = step("preview", STABLE)
    assert step("set_weight", previewed, weight=10) == [Route(NEW, 10, PREVIEW), Route(OLD, 90)]


def test_set_weight_keeps_the_stable_revisions_own_tag() -> None:
    routes = step("set_weight", [Route(OLD, 100, "prod")], weight=25)
    assert routes == [Route(NEW, 25), Route(OLD, 75, "prod")]


def test_set_weight_zero_sends_nothing_to_an_untagged_canary_and_drops_its_route() -> None:
    assert step("set_weight", [Route(NEW, 20), Route(OLD, 80)], weight=0) == [Route(OLD, 100)]


def test_set_weight_zero_keeps_a_tagged_canary_reachable_by_its_tag() -> None:
    routes = step("set_weight", [Route(NEW, 20, PREVIEW), Route(OLD, 80)], weight=0)
    assert routes == [Route(NEW, 0, PREVIEW), Route(OLD, 100)]


def test_set_weight_takes_the_busiest_other_revision_as_stable_and_drops_the_rest() -> None:
    routes = step("set_weight", [Route(THIRD, 30), Route(OLD, 70)], weight=10)
    assert routes == [Route(NEW, 10), Route(OLD, 90)]
    assert total(routes) == 100


def test_set_weight_needs_a_weight() -> None:
    with pytest.raises(InvalidInput, match="needs a weight"):
        step("set_weight", STABLE)


@pytest.mark.parametrize(
    "start",
    [[], [Route(NEW, 100)], [Route(NEW, 100), Route(OLD, 0, "old")]],
    ids=["nothing", "only-new", "old-tag-only"],
)
def test_set_weight_refuses_without_a_stable_revision_serving_traffic(start: list[Route]) -> None:
    with pytest.raises(AdapterRejected, match="needs a stable one"):
        step("set_weight", start, weight=20)


def test_preview_starts_the_new_revision_at_zero_behind_the_preview_tag() -> None:
    assert step("preview", [Route(OLD, 100, ACTIVE)]) == [Route(OLD, 100, ACTIVE), Route(NEW, 0, PREVIEW)]


def test_preview_moves_the_preview_tag_off_the_revision_that_had_it() -> None:
    routes = step("preview", [Route(OLD, 100), Route(THIRD, 0, PREVIEW)])
    assert Route(NEW, 0, PREVIEW) in routes
    assert [r for r in routes if r.tag == PREVIEW] == [Route(NEW, 0, PREVIEW)]
    assert total(routes) == 100


def test_preview_refuses_when_the_new_revision_already_serves_traffic() -> None:
    with pytest.raises(AdapterRejected, match="already serves 20%"):
        step("preview", [Route(OLD, 80), Route(NEW, 20)])


def test_scale_down_keeps_only_the_new_revisions_routes() -> None:
    routes = step("scale_down", [Route(NEW, 100, ACTIVE), Route(OLD, 0, "old")])
    assert routes == [Route(NEW, 100, ACTIVE)]


def test_scale_down_sends_everything_to_the_new_revision_when_it_has_no_route() -> None:
    assert step("scale_down", STABLE) == [Route(NEW, 100)]


def test_an_unknown_step_kind_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown step kind 'pause'"):
        step("pause", STABLE)


# --- declarative: the same step twice, and the sum ---------------------------------


@pytest.mark.parametrize(
    "steps", [CANARY, BLUE_GREEN, CANARY_AFTER_PREVIEW], ids=["canary", "blue-green", "preview-canary"]
)
@pytest.mark.parametrize(
    "start", [STABLE, [Route(OLD, 100, ACTIVE)], [Route(OLD, 60), Route(THIRD, 40, "v09")]]
)
def test_every_step_on_the_traffic_it_produced_gives_the_same_traffic(
    steps: list[tuple[str, int | None]], start: list[Route]
) -> None:
    routes = start
    for kind, weight in steps:
        once = step(kind, routes, weight=weight)
        assert step(kind, once, weight=weight) == once, f"{kind} {weight} is not idempotent"
        routes = once


@pytest.mark.parametrize(
    "steps", [CANARY, BLUE_GREEN, CANARY_AFTER_PREVIEW], ids=["canary", "blue-green", "preview-canary"]
)
@pytest.mark.parametrize(
    "start", [STABLE, [Route(OLD, 100, ACTIVE)], [Route(OLD, 60), Route(THIRD, 40, "v09")]]
)
def test_the_traffic_adds_up_to_100_after_every_step(
    steps: list[tuple[str, int | None]], start: list[Route]
) -> None:
    for routes in walk(start, steps):
        assert total(routes) == 100, routes
        assert all(0 <= r.percent <= 100 for r in routes)


@pytest.mark.parametrize("weight", range(0, 100, 7))
def test_set_weight_is_idempotent_at_every_weight_below_100(weight: int) -> None:
    once = step("set_weight", STABLE, weight=weight)
    assert step("set_weight", once, weight=weight) == once
    assert total(once) == 100


def test_set_weight_100_on_the_traffic_it_produced_gives_the_same_traffic() -> None:
    once = step("set_weight", [Route(NEW, 20), Route(OLD, 80)], weight=100)
    assert once == [Route(NEW, 100)]
    assert step("set_weight", once, weight=100) == once


def test_set_weight_100_keeps_the_tags_it_kept_when_stepped_again() -> None:
    once = step("set_weight", [Route(NEW, 20, PREVIEW), Route(OLD, 80, "prod")], weight=100)
    assert once == [Route(NEW, 100, PREVIEW), Route(OLD, 0, "prod")]
    assert step("set_weight", once, weight=100) == once


# --- reading a traffic block --------------------------------------------------------


def test_routes_of_reads_the_stored_block_back() -> None:
    routes = [Route(OLD, 90), Route(NEW, 10, PREVIEW)]
    assert routes_of([r.as_dict() for r in routes]) == routes


def test_routes_of_normalises_types_and_a_missing_tag() -> None:
    stored: list[dict[str, Any]] = [
        {"revision": "r1", "percent": "100"},
        {"revision": 7, "percent": 0.0, "tag": "t"},
    ]
    assert routes_of(stored) == [Route("r1", 100), Route("7", 0, "t")]


def test_as_dict_has_every_field() -> None:
    assert Route(NEW, 10).as_dict() == {"revision": NEW, "percent": 10, "tag": None}


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ([], None),
        ([Route(NEW, 100)], None),
        ([Route(NEW, 50), Route(OLD, 0, "t")], None),
        ([Route(NEW, 90), Route(OLD, 10)], OLD),
        ([Route(OLD, 40), Route(THIRD, 40), Route(NEW, 20)], OLD),
        ([Route(THIRD, 40), Route(OLD, 40), Route(NEW, 20)], THIRD),
        ([Route(THIRD, 10), Route(OLD, 60), Route(NEW, 30)], OLD),
    ],
    ids=["empty", "only-new", "zero-other", "one-other", "tie-first", "tie-first-swapped", "busiest"],
)
def test_stable_is_the_busiest_other_revision_first_on_a_tie(
    routes: list[Route], expected: str | None
) -> None:
    assert stable_of(routes, NEW) == expected


def test_serving_adds_up_each_revision_and_drops_tag_only_routes() -> None:
    routes = [Route(OLD, 30), Route(NEW, 0, PREVIEW), Route(OLD, 50, "old"), Route(NEW, 20)]
    assert serving(routes) == [Route(OLD, 80), Route(NEW, 20)]


def test_serving_of_nothing_is_nothing() -> None:
    assert serving([]) == []
    assert serving([Route(NEW, 0, PREVIEW)]) == []
