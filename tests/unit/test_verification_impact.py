"""User impact, SLO burn rates and limits against previous releases, table-driven
with hand-computed figures."""

from __future__ import annotations

import math
from typing import Any

import pytest

from adapters.metrics import QueryResult, Sample
from consumers.verification.analysis import assess_query, measure, verdict_over
from consumers.verification.facts import Facts, History, PreviousValue, QueryRound, ScrapeAttempt
from consumers.verification.impact import IMPACT, figures, measure_impact
from consumers.verification.policy import AnalysisPolicy, BurnWindows, SloPolicy, VsPrevious
from consumers.verification.previous import assess_vs_previous
from consumers.verification.prometheus import VersionCounters, Window, count_above
from consumers.verification.slo import SLO, assess_burn, burn_rate, measure_slo
from events.verification import Outcome

CANARY, STABLE = "2.0", "1.0"
STATUS: dict[str, Any] = {"reachable": True, "tracks": []}
BUCKETS = [(0.1, 500.0), (0.5, 800.0), (1.0, 1000.0), (math.inf, 1000.0)]

# --- impact ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.5, 200.0),  # on a bucket bound: the buckets above it
        (0.25, 387.5),  # 0.15 / 0.4 of the 300 in (0.1, 0.5] are at or below
        (0.05, 750.0),  # half of the first bucket (from 0) is below
        (2.0, 0.0),  # beyond the last finite bound, nothing is in +Inf
        (1.0, 0.0),
    ],
)
def test_count_above_inverts_the_histogram(threshold: float, expected: float) -> None:
    assert count_above(threshold, BUCKETS) == pytest.approx(expected)


@pytest.mark.parametrize("buckets", [[], [(0.1, 1.0)], [(0.1, 0.0), (math.inf, 0.0)], [(math.inf, math.nan)]])
def test_count_above_without_observations_is_unknown(buckets: list[tuple[float, float]]) -> None:
    assert count_above(0.1, buckets) is None


@pytest.mark.parametrize(
    ("canary", "stable", "users", "expected"),
    [
        # 3% against 1% errors on 1000 canary requests: 20 failed beyond the stable's;
        # 200 canary requests slower than the stable's p99 of 0.5s, 10 expected: 190
        (
            Window(1000, 30),
            Window(4000, 40, 0.5),
            400.0,
            {
                "share_measured": 0.2,
                "affected_by_errors": 20.0,
                "canary_slower_than_stable_p99": 200.0,
                "affected_by_latency": 190.0,
                "affected_requests": 210.0,
                "affected_users": 84.0,  # 400 users * 210 / 1000
            },
        ),
        # a canary better than stable affects nobody: floored at 0
        (
            Window(1000, 0),
            Window(1000, 50, 5.0),
            None,
            {
                "share_measured": 0.5,
                "affected_by_errors": 0.0,
                "affected_by_latency": 0.0,
                "affected_requests": 0.0,
                "affected_users": None,
            },
        ),
        # nothing serves beside it: every request is the canary's, nothing to compare
        (
            Window(1000, 30),
            None,
            100.0,
            {
                "share_measured": 1.0,
                "affected_by_errors": None,
                "affected_requests": None,
                "affected_users": None,
            },
        ),
    ],
)
def test_impact_figures(
    canary: Window, stable: Window | None, users: float | None, expected: dict[str, Any]
) -> None:
    figs = figures(canary, stable, canary_buckets=BUCKETS, weight=20, users=users)
    assert figs["share_by_weight"] == 0.2
    for key, value in expected.items():
        assert figs[key] == (pytest.approx(value) if value is not None else None), key


def scrapes(*points: tuple[float, float, float, float]) -> tuple[ScrapeAttempt, ...]:
    """``(canary requests, canary errors, stable requests, stable errors)`` cumulative,
    one scrape a second."""

    def counters(n: float, errors: float) -> VersionCounters:
        return VersionCounters({"200": n - errors, "500": errors})

    return tuple(
        ScrapeAttempt(at_s=float(t), counters={CANARY: counters(c, ce), STABLE: counters(s, se)})
        for t, (c, ce, s, se) in enumerate(points)
    )


def facts(points: tuple[tuple[float, float, float, float], ...], **more: Any) -> Facts:
    return Facts(canary=CANARY, stable=STABLE, status=STATUS, scrapes=scrapes(*points), **more)


@pytest.mark.parametrize(
    ("impact", "expected", "gating"),
    [
        (None, "Successful", False),  # recorded for information
        ({"max_affected_requests": 25}, "Successful", True),
        ({"max_affected_requests": 15}, "Failed", True),  # 20 affected
        ({"max_affected_users": 1}, "Inconclusive", True),  # no user metric to know it
    ],
)
def test_the_impact_measurement(impact: dict[str, Any] | None, expected: Outcome, gating: bool) -> None:
    policy = AnalysisPolicy(health=None, metrics=[{"name": "error_rate", "max": 1}], impact=impact)
    points = ((0, 0, 0, 0), (500, 15, 2000, 20), (1000, 30, 4000, 40))
    (m,) = measure_impact(facts(points), policy, weight=20)
    assert (m.metric, m.outcome, m.detail["gating"]) == (IMPACT, expected, gating)
    assert m.value == pytest.approx(20.0)
    assert m.detail["affected_by_errors"] == pytest.approx(20.0)
    assert m.detail["share_measured"] == pytest.approx(0.2) and m.detail["weight_pct"] == 20
    assert m.detail["users_source"] == "no user metric named"


def test_an_impact_without_limits_does_not_decide() -> None:
    policy = AnalysisPolicy(health=None, impact={"max_affected_requests": 1})
    points = ((0, 0, 0, 0), (1000, 30, 4000, 40))
    out = measure(facts(points), policy, "analysis")
    assert verdict_over(out, policy).outcome == "Failed"
    relaxed = AnalysisPolicy(health=None, metrics=[{"name": "error_rate", "max": 1}])
    out = measure(facts(points), relaxed, "analysis")
    assert [m.metric for m in out][-1] == IMPACT
    assert verdict_over(out, relaxed).outcome == "Successful"
    assert IMPACT not in verdict_over(out, relaxed).reason


def test_users_from_the_user_metric() -> None:
    policy = AnalysisPolicy(
        health=None,
        prometheus={"url": "http://prometheus:9090"},
        impact={"users_query": 'sum(users{version="{{version}}"})', "max_affected_users": 10},
    )
    users = QueryResult("sum(users)", "ok", samples=(Sample({}, 0.0, 400.0),))
    points = ((0, 0, 0, 0), (1000, 30, 4000, 40))
    (m,) = measure_impact(facts(points, users=users), policy)
    # 20 of 1000 requests affected: 2% of 400 users
    assert m.detail["affected_users"] == pytest.approx(8.0)
    assert m.outcome == "Successful"


def test_no_traffic_is_no_impact_figure() -> None:
    policy = AnalysisPolicy(health=None, impact={})
    (m,) = measure_impact(facts(((0, 0, 0, 0), (0, 0, 100, 0))), policy)
    assert m.outcome == "Inconclusive"
    assert "no requests" in m.detail["reason"]
    unasked = AnalysisPolicy(health=None, metrics=[{"name": "error_rate", "max": 1}])
    assert measure_impact(facts(((0, 0, 0, 0), (0, 0, 100, 0))), unasked) == []


# --- SLO burn rate ---------------------------------------------------------------

SLO_999 = SloPolicy(target=0.999)
PAIR = BurnWindows(short="5m", long="1h", max_burn_rate=14.4)


@pytest.mark.parametrize(
    ("error_rate", "target", "expected"),
    [(0.001, 0.999, 1.0), (0.0144, 0.999, 14.4), (0.05, 0.99, 5.0), (0.0, 0.999, 0.0), (None, 0.999, None)],
)
def test_burn_rate_is_the_error_rate_over_the_budget(
    error_rate: float | None, target: float, expected: float | None
) -> None:
    rate = burn_rate(error_rate, target)
    assert rate == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("short", "long", "expected"),
    [
        (0.02, 0.015, "Failed"),  # 20 and 15: both over 14.4
        (0.02, 0.01, "Successful"),  # a spike: the long window is at 10
        (0.01, 0.02, "Successful"),  # over, but no longer now: 10 over the short window
        (0.0144, 0.0144, "Successful"),  # at the limit is not over it
        (None, 0.02, "Inconclusive"),
        (0.02, None, "Inconclusive"),
        (math.nan, 0.02, "Inconclusive"),
    ],
)
def test_the_multi_window_rule(short: float | None, long: float | None, expected: Outcome) -> None:
    m = assess_burn(PAIR, SLO_999, short, long)
    assert (m.metric, m.outcome, m.threshold) == (SLO, expected, 14.4)
    if expected == "Failed":
        assert m.detail["reason"] == "error budget burn rate 20 over 5m and 15 over 1h, both above 14.4"
        assert m.value == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        # 2% errors throughout: 20x the budget on both windows
        (((0, 0, 0, 0), (1000, 20, 0, 0), (2000, 40, 0, 0)), "Failed"),
        # 2% in the latest window only: the whole analysis is at 1% (burn 10)
        (((0, 0, 0, 0), (1000, 0, 0, 0), (2000, 20, 0, 0)), "Successful"),
        # healthy
        (((0, 0, 0, 0), (1000, 0, 0, 0), (2000, 1, 0, 0)), "Successful"),
        # no requests to the new version: never a pass
        (((0, 0, 0, 0), (0, 0, 100, 0), (0, 0, 200, 0)), "Inconclusive"),
        # one good scrape only
        (((0, 0, 0, 0),), "Inconclusive"),
    ],
)
def test_burn_rates_from_the_scrapes_decide_the_step(
    points: tuple[tuple[float, float, float, float], ...], expected: Outcome
) -> None:
    policy = AnalysisPolicy(health=None, slo={"target": 0.999})
    out = measure(facts(points), policy, "analysis")
    slo = [m for m in out if m.metric == SLO]
    assert [m.outcome for m in slo] == [expected]
    verdict = verdict_over(out, policy)
    assert verdict.outcome == expected
    if expected == "Failed":
        assert "burn rate 20 over 5m and 20 over 1h" in verdict.reason


def test_one_inconclusive_window_pair_is_not_tolerated() -> None:
    policy = AnalysisPolicy(
        health=None,
        prometheus={"url": "http://prometheus:9090"},
        slo={
            "target": 0.999,
            "error_rate_query": 'sum(rate(errors{version="{{version}}"}[{{window}}]))',
            "windows": [
                {"short": "5m", "long": "1h", "max_burn_rate": 14.4},
                {"short": "30m", "long": "6h", "max_burn_rate": 6},
            ],
        },
    )

    def result(value: float | None) -> QueryResult:
        if value is None:
            return QueryResult("q", "empty", message="no series")
        return QueryResult("q", "ok", samples=(Sample({}, 0.0, value),))

    rates = {"5m": 0.001, "1h": 0.001, "30m": 0.001, "6h": None}
    found = Facts(
        canary=CANARY,
        stable=STABLE,
        status=STATUS,
        slo_results=tuple((w, result(r)) for w, r in rates.items()),
    )
    out = measure_slo(found, policy)
    assert [m.outcome for m in out] == ["Successful", "Inconclusive"]
    assert "long (no series)" in out[1].detail["reason"]
    assert verdict_over(out, policy).outcome == "Inconclusive"
    rates["6h"] = 0.01  # 10x: with 30m at 1x, only one window over 6
    found = Facts(
        canary=CANARY,
        stable=STABLE,
        status=STATUS,
        slo_results=tuple((w, result(r)) for w, r in rates.items()),
    )
    assert verdict_over(measure_slo(found, policy), policy).outcome == "Successful"


# --- previous releases -----------------------------------------------------------


def history(*values: float, error: str | None = None) -> History:
    previous = tuple(PreviousValue(f"web.production.rel-{i}", f"1.{i}", v) for i, v in enumerate(values))
    return History("p99", previous=previous, error=error)


@pytest.mark.parametrize(
    ("value", "rule", "found", "expected"),
    [
        (1.2, {"pct": 10}, history(1.0, 1.1, 0.9), "Failed"),  # 20% above the mean 1.0
        (1.05, {"pct": 10}, history(1.0, 1.1, 0.9), None),
        (1.1, {"pct": 10}, history(1.0, 1.1, 0.9), None),  # at the limit is not above it
        (0.5, {"pct": 10}, history(1.0, 1.1), "Inconclusive"),  # 2 of 3 releases
        (0.5, {"pct": 10, "min_releases": 2}, history(1.0, 1.1), None),
        (1.2, {"pct": 10, "releases": 2}, history(5.0, 1.0, 1.0), "Failed"),  # the last 2 only
        (0.5, {"pct": 10}, history(error="LogUnavailable: down"), "Error"),
        (0.5, {"pct": 10}, None, "Inconclusive"),
    ],
)
def test_against_previous_releases(
    value: float, rule: dict[str, Any], found: History | None, expected: Outcome | None
) -> None:
    relative = assess_vs_previous("p99", value, VsPrevious(**rule), found)
    assert relative.outcome == expected, relative.reason


def test_the_history_used_is_recorded() -> None:
    check = AnalysisPolicy(
        health=None,
        prometheus={"url": "http://prometheus:9090"},
        queries=[
            {
                "name": "p99",
                "query": 'p99{version="{{version}}"}',
                "compare": "none",
                "max_increase_pct_vs_previous": {"pct": 10, "releases": 3},
            }
        ],
    ).queries[0]
    from datetime import UTC, datetime

    run = QueryRound(
        check="p99",
        attempt=0,
        at=datetime(2025, 6, 10, tzinfo=UTC),
        canary_version=CANARY,
        canary=QueryResult("p99", "ok", samples=(Sample({}, 0.0, 1.2),)),
    )
    m = assess_query(check, run, history(1.0, 1.1, 0.9))
    assert m.outcome == "Failed"
    assert m.threshold == pytest.approx(1.1)
    assert [p["value"] for p in m.detail["vs_previous"]["previous"]] == [1.0, 1.1, 0.9]
    assert m.detail["vs_previous"]["mean"] == pytest.approx(1.0)
    assert "more than 10% above the mean 1 of the last 3 successful releases" in m.detail["reason"]
    assert assess_query(check, run, None).outcome == "Inconclusive"


def test_a_metric_check_against_previous_releases() -> None:
    policy = AnalysisPolicy(
        health=None, metrics=[{"name": "error_rate", "max_increase_pct_vs_previous": {"pct": 10}}]
    )
    points = ((0, 0, 0, 0), (1000, 12, 1000, 0))
    found = {"error_rate": History("error_rate", previous=history(0.01, 0.01, 0.01).previous)}
    out = measure(facts(points, history=found), policy, "analysis")
    (m,) = [m for m in out if m.metric == "error_rate"]
    assert m.outcome == "Failed"  # 1.2% against 1% + 10%
    assert m.detail["vs_previous"]["limit"] == pytest.approx(0.011)


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"metrics": [{"name": "error_rate"}]}, "max_increase_pct_vs_previous"),
        ({"slo": {"target": 1.0}}, "less than 1"),
        ({"slo": {"target": 0.999, "error_rate_query": "x"}}, "need a `prometheus` provider"),
        ({"impact": {"users_query": "x"}}, "need a `prometheus` provider"),
        (
            {
                "metrics": [
                    {"name": "error_rate", "max_increase_pct_vs_previous": {"pct": 1, "min_releases": 4}}
                ]
            },
            "4",
        ),
    ],
)
def test_invalid_policies_are_refused(analysis: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnalysisPolicy.model_validate(analysis)


def test_the_pipeline_yaml_reaches_verification() -> None:
    import yaml

    from consumers.planning.pipeline import Analysis

    text = """
    metrics:
      - name: latency_p99
        max_increase_pct_vs_previous: {pct: 10, releases: 3}
    prometheus: {url: "http://prometheus:9090"}
    queries:
      - name: errors
        query: 'sum(rate(errors{version="{{version}}"}[{{window}}]))'
        max: 0.05
        max_increase_pct_vs_previous: {pct: 10, releases: 5, min_releases: 2}
    slo:
      target: 0.999
      windows:
        - {short: 5m, long: 1h, max_burn_rate: 14.4}
        - {short: 30m, long: 6h, max_burn_rate: 6}
    impact: {max_affected_requests: 100}
    """
    spec = Analysis.model_validate(yaml.safe_load(text))
    recorded = spec.model_dump(mode="json", exclude_none=True)
    policy = AnalysisPolicy.model_validate(recorded)
    assert policy.slo is not None and [w.max_burn_rate for w in policy.slo.windows] == [14.4, 6]
    assert policy.impact is not None and policy.impact.max_affected_requests == 100
    rules = policy.history_checks()
    assert (rules["latency_p99"].pct, rules["errors"].needed) == (10, 2)
    # a pipeline without them records nothing new: its plan keeps its hash
    assert (
        Analysis.model_validate({})
        .model_dump(mode="json", exclude_none=True)
        .keys()
        .isdisjoint({"slo", "impact"})
    )


def test_the_pipeline_refuses_a_short_window_longer_than_the_long() -> None:
    from consumers.planning.pipeline import Analysis

    with pytest.raises(ValueError, match="not shorter"):
        Analysis.model_validate({"slo": {"target": 0.99, "windows": [{"short": "2h", "long": "1h"}]}})
