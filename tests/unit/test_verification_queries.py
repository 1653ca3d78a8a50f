"""Query checks, without a server: the pipeline's `analysis.queries` and how planning
records them, verification's reading of that record, and the pure judging of query
results — limits, NaN, empty, errors, dry run, per-check limits — table-driven."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.metrics import QueryResult, Sample, classify
from consumers.planning.core import _analysis
from consumers.planning.loader import parse_pipeline
from consumers.planning.pipeline import Environment
from consumers.verification.analysis import (
    assess_check,
    assess_query,
    combine,
    is_dry_run,
    measure,
    measure_queries,
    round_from_measurement,
    wants_metrics,
)
from consumers.verification.facts import Facts, QueryRound
from consumers.verification.policy import Limits, QueryCheck, Schedule, policy_of
from events.verification import Measurement, Outcome

AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
TEMPLATE = (
    'sum(rate(errors_total{service="{{service}}",version="{{version}}",track="{{track}}"}[{{window}}]))'
)
PROVIDER = {"url": "http://prometheus:9090"}


def result(*values: float, status: str | None = None, message: str = "") -> QueryResult:
    """An instant query's answer with these values (one sample each); ``status``
    ``error`` for no answer at all."""
    query = 'sum(rate(errors_total{version="2.0"}[1m]))'
    if status == "error":
        return QueryResult(
            query, "error", message=message or "cannot reach Prometheus", error_type="unavailable"
        )
    samples = tuple(Sample({"pod": str(i)}, AT.timestamp(), v) for i, v in enumerate(values))
    return classify(query, samples=samples, params={"time": AT.timestamp()})


EMPTY = result()
NAN = result(math.nan)
INF = result(math.inf)
DOWN = result(status="error")
TWO_SERIES = result(0.01, 0.02)


def check(**fields: Any) -> QueryCheck:
    return QueryCheck.model_validate({"name": "errors", "query": TEMPLATE, **fields})


def run(
    canary: QueryResult, compared: QueryResult | None = None, *, missing: str | None = None
) -> QueryRound:
    return QueryRound(
        check="errors",
        attempt=0,
        at=AT,
        canary_version="2.0",
        canary=canary,
        compared_version="1.0" if compared is not None else None,
        compared=compared,
        compared_missing=missing,
    )


# --- limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "canary", "compared", "outcome", "threshold"),
    [
        ({"max": 0.1}, result(0.05), result(0.01), "Successful", 0.1),
        ({"max": 0.05}, result(0.05), None, "Successful", 0.05),  # at the limit is within it
        ({"max": 0.02}, result(0.05), result(0.01), "Failed", 0.02),
        ({"min": 10}, result(5), None, "Failed", 10),
        ({"min": 1}, result(5), None, "Successful", 1),
        ({"min": 1, "max": 9}, result(5), None, "Successful", 9),
        ({"min": 1, "max": 9}, result(10), None, "Failed", 9),
        ({"max_increase_pct": 100}, result(0.05), result(0.01), "Failed", 0.02),
        ({"max_increase_pct": 500}, result(0.05), result(0.01), "Successful", 0.06),
        ({"max_increase_pct": 0}, result(0.01), result(0.01), "Successful", 0.01),
        ({"max_increase_pct": 0}, result(0.011), result(0.01), "Failed", 0.01),
        # any increase over zero is too much: the limit is relative
        ({"max_increase_pct": 50}, result(0.001), result(0.0), "Failed", 0.0),
        # a negative compared value: the increase is of its magnitude
        ({"max_increase_pct": 10}, result(-9.5), result(-10), "Successful", -9),
        ({"max_increase_pct": 10}, result(-8), result(-10), "Failed", -9),
        # both: the tighter upper limit is the threshold
        ({"max": 0.1, "max_increase_pct": 500}, result(0.05), result(0.01), "Successful", 0.06),
        ({"max": 0.03, "max_increase_pct": 500}, result(0.05), result(0.01), "Failed", 0.03),
    ],
)
def test_limits(
    limits: dict[str, Any],
    canary: QueryResult,
    compared: QueryResult | None,
    outcome: Outcome,
    threshold: float,
) -> None:
    m = assess_query(check(**limits), run(canary, compared))
    assert m.outcome == outcome, m.detail.get("reason")
    assert m.threshold == pytest.approx(threshold)
    assert m.value == canary.value and m.baseline == (compared.value if compared else None)
    assert (m.outcome == "Failed") == bool(m.detail.get("reason"))


@pytest.mark.parametrize(
    ("limits", "canary", "compared", "missing", "outcome", "why"),
    [
        ({"max": 1}, NAN, result(0.01), None, "Inconclusive", "not finite"),
        ({"max": 1}, INF, result(0.01), None, "Inconclusive", "not finite"),
        ({"min": 0}, EMPTY, result(0.01), None, "Inconclusive", "no series"),
        ({"max": 1}, DOWN, result(0.01), None, "Error", "cannot reach Prometheus"),
        ({"max": 1}, TWO_SERIES, None, None, "Error", "2 series where one value was expected"),
        # the compared track only matters to an increase limit
        ({"max": 1}, result(0.5), NAN, None, "Successful", ""),
        ({"max": 1}, result(0.5), DOWN, None, "Successful", ""),
        ({"max_increase_pct": 10}, result(0.5), NAN, None, "Inconclusive", "stable: 1 of 1 values"),
        ({"max_increase_pct": 10}, result(0.5), EMPTY, None, "Inconclusive", "stable: the query returned"),
        ({"max_increase_pct": 10}, result(0.5), DOWN, None, "Error", "stable: cannot reach"),
        (
            {"max_increase_pct": 10},
            result(0.5),
            None,
            "no stable version",
            "Inconclusive",
            "no stable version",
        ),
        # an absolute limit the new version breaks decides, whatever the compared track did
        ({"max": 0.1, "max_increase_pct": 10}, result(0.5), DOWN, None, "Failed", "above max"),
    ],
    ids=[
        "NaN",
        "infinite",
        "empty",
        "error",
        "not aggregated",
        "compared NaN, max only",
        "compared error, max only",
        "compared NaN",
        "compared empty",
        "compared error",
        "no compared version",
        "max broken, compared error",
    ],
)
def test_missing_data_is_never_a_pass(
    limits: dict[str, Any],
    canary: QueryResult,
    compared: QueryResult | None,
    missing: str | None,
    outcome: Outcome,
    why: str,
) -> None:
    m = assess_query(check(**limits), run(canary, compared, missing=missing))
    assert m.outcome == outcome
    text = (m.error or "") + str(m.detail.get("reason", ""))
    assert why in text
    if outcome == "Error":
        assert m.error


def test_a_measurement_records_what_it_was_judged_from() -> None:
    m = assess_query(check(max=0.1, window="5m"), run(NAN, result(0.01)))
    d = m.detail
    assert (d["source"], d["template"], d["window"], d["compare"]) == ("prometheus", TEMPLATE, "5m", "stable")
    assert (d["at"], d["attempt"], d["dry_run"], d["limits"]) == (AT.isoformat(), 0, False, {"max": 0.1})
    assert (d["canary"]["track"], d["canary"]["version"], d["canary"]["status"]) == ("canary", "2.0", "nan")
    assert d["canary"]["samples"][0]["v"] == "NaN" and d["canary"]["time"] == AT.timestamp()
    assert (d["stable"]["version"], d["stable"]["samples"][0]["v"]) == ("1.0", 0.01)


@pytest.mark.parametrize(
    "recorded",
    [
        run(result(0.05), result(0.01)),
        run(NAN, EMPTY),
        run(DOWN, result(0.01)),
        run(result(0.2), None, missing="x"),
    ],
    ids=["values", "NaN and empty", "error", "no compared version"],
)
@pytest.mark.parametrize(
    "policy", [{"max": 0.1}, {"max_increase_pct": 100}, {"min": 0.1, "dry_run": True}], ids=str
)
def test_a_recorded_measurement_is_judged_again_the_same_way(
    recorded: QueryRound, policy: dict[str, Any]
) -> None:
    c = check(**policy)
    m = assess_query(c, recorded)
    again = assess_query(c, round_from_measurement(Measurement.model_validate_json(m.model_dump_json())))
    assert again == m


# --- dry run, limits per check, the verdict -----------------------------------------


def measured(
    outcome: Outcome, metric: str = "errors", *, dry_run: bool = False, error: str = ""
) -> Measurement:
    detail = {"dry_run": True} if dry_run else {}
    return Measurement(metric=metric, outcome=outcome, detail=detail, error=error or None)


OK = measured("Successful", "target")


@pytest.mark.parametrize(
    ("measurements", "outcome", "words"),
    [
        ([OK, measured("Failed", dry_run=True)], "Successful", "errors (dry run, not gating) Failed"),
        ([OK, measured("Error", dry_run=True, error="down")] * 6, "Successful", "not gating"),
        ([OK, measured("Inconclusive", dry_run=True)] * 3, "Successful", "not gating"),
        ([measured("Failed", dry_run=True)], "Inconclusive", "only dry-run checks"),
        ([OK, measured("Failed")], "Failed", "errors Failed"),
        ([OK] + [measured("Error", error="down")] * 4 + [measured("Successful")], "Successful", ""),
        ([OK] + [measured("Error", error="down")] * 5, "Error", "5 errors in a row (limit 4): down"),
        ([OK, measured("Inconclusive"), measured("Inconclusive")], "Inconclusive", "2 inconclusive"),
    ],
    ids=[
        "dry run failed",
        "dry run errs",
        "dry run inconclusive",
        "only dry run",
        "gating failed",
        "4 errors then a success",
        "5 errors in a row",
        "too many inconclusive",
    ],
)
def test_the_verdict_ignores_dry_run_checks(
    measurements: list[Measurement], outcome: Outcome, words: str
) -> None:
    verdict = combine(measurements, Limits())
    assert verdict.outcome == outcome
    assert words in verdict.reason


def test_assess_check_leaves_dry_run_measurements_out_unless_asked() -> None:
    dry = [measured("Failed", dry_run=True)] * 2
    assert assess_check(dry, Limits())[0] == "Inconclusive"
    assert assess_check(dry, Limits(), include_dry_run=True)[0] == "Failed"
    assert all(is_dry_run(m) for m in dry) and not is_dry_run(measured("Failed"))


@pytest.mark.parametrize(
    ("own", "outcome"),
    [
        ({}, "Failed"),
        ({"failure_limit": 1}, "Successful"),
        ({"consecutive_error_limit": 1}, "Error"),
    ],
)
def test_a_check_is_judged_with_its_own_limits(own: dict[str, int], outcome: Outcome) -> None:
    policy = policy_of(
        {"prometheus": PROVIDER, "queries": [{"name": "errors", "query": TEMPLATE, "max": 1, **own}]}
    )
    if "consecutive_error_limit" in own:
        measurements = [OK, measured("Error", error="x"), measured("Error", error="x")]
    else:
        measurements = [OK, measured("Failed"), measured("Successful")]
    assert combine(measurements, policy.limits, per_check=policy.check_limits()).outcome == outcome


# --- from facts ------------------------------------------------------------------


def test_query_checks_that_were_not_measured_are_inconclusive_and_keep_their_dry_run_mark() -> None:
    policy = policy_of(
        {
            "prometheus": PROVIDER,
            "queries": [
                {"name": "a", "query": TEMPLATE, "max": 1},
                {"name": "b", "query": TEMPLATE, "max": 1, "dry_run": True},
            ],
        }
    )
    out = measure_queries(Facts(canary="2.0", stable="1.0"), policy)
    assert [(m.metric, m.outcome, m.detail["dry_run"]) for m in out] == [
        ("a", "Inconclusive", False),
        ("b", "Inconclusive", True),
    ]


def test_rounds_become_measurements_check_by_check() -> None:
    policy = policy_of(
        {
            "health": None,
            "prometheus": PROVIDER,
            "queries": [{"name": "errors", "query": TEMPLATE, "max": 0.1}],
        }
    )
    rounds = (run(result(0.05), result(0.01)), run(DOWN, result(0.01)))
    facts = Facts(canary="2.0", stable="1.0", status={"reachable": True}, queries=rounds)
    out = measure(facts, policy, "analysis")
    assert [(m.metric, m.outcome) for m in out] == [
        ("target", "Successful"),
        ("errors", "Successful"),
        ("errors", "Error"),
    ]


@pytest.mark.parametrize(
    ("kind", "stable", "wanted"),
    [
        ("analysis", None, True),
        ("set_weight", "1.0", True),
        ("set_weight", None, False),
        ("rolling", "1.0", False),
    ],
)
def test_query_checks_alone_want_metrics_as_the_built_in_ones_do(
    kind: str, stable: str | None, wanted: bool
) -> None:
    policy = policy_of({"prometheus": PROVIDER, "queries": [{"name": "errors", "query": TEMPLATE, "max": 1}]})
    assert wants_metrics(kind, policy, stable) is wanted


# --- verification's reading of the plan --------------------------------------------


def test_a_check_takes_the_analysis_settings_it_does_not_set() -> None:
    policy = policy_of(
        {
            "interval_s": 10,
            "count": 3,
            "initial_delay_s": 30,
            "failure_limit": 1,
            "prometheus": PROVIDER,
            "queries": [
                {"name": "a", "query": TEMPLATE, "max": 1},
                {
                    "name": "b",
                    "query": TEMPLATE,
                    "max": 1,
                    "interval_s": 60,
                    "count": 5,
                    "consecutive_error_limit": 0,
                },
            ],
        }
    )
    a, b = policy.queries
    assert policy.schedule(a) == Schedule(
        30, 10, 3, Limits(failure_limit=1, inconclusive_limit=1, consecutive_error_limit=4)
    )
    assert policy.schedule(b) == Schedule(
        30, 60, 5, Limits(failure_limit=1, inconclusive_limit=1, consecutive_error_limit=0)
    )
    assert a.window == "1m" and a.compare == "stable" and a.compared_track == "stable"
    assert check(compare="none", max=1).compared_track is None


@pytest.mark.parametrize(
    ("analysis", "words"),
    [
        ({"queries": [{"name": "a", "query": TEMPLATE, "max": 1}]}, "need a `prometheus` provider"),
        ({"prometheus": PROVIDER, "queries": [{"name": "a", "query": TEMPLATE}]}, "needs `max`, `min` or"),
        (
            {
                "prometheus": PROVIDER,
                "queries": [{"name": "a", "query": TEMPLATE, "max_increase_pct": 5, "compare": "none"}],
            },
            "needs a track to compare with",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "a", "query": 'up{x="{{pod}}"}', "max": 1}]},
            "unknown placeholder",
        ),
        (
            {
                "prometheus": PROVIDER,
                "queries": [{"name": "a", "query": "up{version={{version}}}", "max": 1}],
            },
            "inside a quoted",
        ),
        (
            {
                "prometheus": PROVIDER,
                "queries": [{"name": "a", "query": TEMPLATE, "max": 1, "window": "5 min"}],
            },
            "not a PromQL duration",
        ),
        (
            {
                "prometheus": PROVIDER,
                "metrics": [{"name": "error_rate", "max": 0.1}],
                "queries": [{"name": "error_rate", "query": TEMPLATE, "max": 1}],
            },
            "distinct across metrics and queries",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "health", "query": TEMPLATE, "max": 1}]},
            "target and health",
        ),
    ],
)
def test_verification_refuses_an_invalid_recorded_policy(analysis: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        policy_of(analysis)


# --- the pipeline model and what planning records ---------------------------------

YAML = """\
service: checkout
environments:
  - name: production
    target:
      type: local
    analysis:
      interval_s: 30
      count: 5
      prometheus:
        url: http://prometheus:9090
        timeout_s: 5
        headers:
          Authorization:
            secret:
              env: PROMETHEUS_TOKEN
      queries:
        - name: error-rate
          query: >-
            sum(rate(http_requests_total{service="{{service}}", version="{{version}}",
            track="{{track}}", code=~"5.."}[{{window}}]))
            / sum(rate(http_requests_total{service="{{service}}", version="{{version}}",
            track="{{track}}"}[{{window}}]))
          window: 5m
          compare: stable
          max: 0.05
          max_increase_pct: 50
        - name: p99
          query: >-
            histogram_quantile(0.99, sum by (le)
            (rate(http_request_duration_seconds_bucket{version="{{version}}"}[{{window}}])))
          compare: none
          max: 0.5
          dry_run: true
          initial_delay_s: 60
          consecutive_error_limit: 2
"""


def test_a_pipeline_with_queries_loads_and_planning_records_what_verification_reads() -> None:
    pipeline, errors = parse_pipeline(YAML, "checkout.yaml")
    assert errors == [] and pipeline is not None
    env = pipeline.environment("production")
    recorded = _analysis(env)
    assert recorded["prometheus"] == {
        "url": "http://prometheus:9090",
        "timeout_s": 5.0,
        "headers": {"Authorization": {"secret": {"env": "PROMETHEUS_TOKEN"}}},
    }
    policy = policy_of(recorded)
    error_rate, p99 = policy.queries
    assert (error_rate.window, error_rate.max, error_rate.max_increase_pct) == ("5m", 0.05, 50)
    assert policy.schedule(error_rate) == Schedule(0, 30, 5, Limits(0, 1, 4))
    assert p99.dry_run and policy.schedule(p99) == Schedule(60, 30, 5, Limits(0, 1, 2))
    assert policy.prometheus is not None
    assert policy.prometheus.headers["Authorization"].as_value() == {"secret": {"env": "PROMETHEUS_TOKEN"}}


def test_an_analysis_without_queries_is_recorded_as_before() -> None:
    env = Environment.model_validate({"name": "dev", "target": {"type": "local"}})
    assert set(_analysis(env)) == {
        "health",
        "metrics",
        "interval_s",
        "count",
        "failure_limit",
        "consecutive_error_limit",
        "inconclusive_limit",
    }


def _env(analysis: dict[str, Any]) -> dict[str, Any]:
    return {"name": "dev", "target": {"type": "local"}, "analysis": analysis}


@pytest.mark.parametrize(
    ("analysis", "words"),
    [
        ({"queries": [{"name": "a", "query": TEMPLATE, "max": 1}]}, "need a `prometheus` provider"),
        ({"prometheus": {"url": "prometheus:9090"}}, "should match pattern"),
        ({"prometheus": {**PROVIDER, "headers": {"Authorization": "Bearer abc"}}}, "valid dictionary"),
        (
            {"prometheus": {**PROVIDER, "headers": {"Bad Header": {"secret": {"env": "T"}}}}},
            "should match pattern",
        ),
        ({"prometheus": PROVIDER, "queries": [{"name": "a", "query": TEMPLATE}]}, "needs a limit"),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "a", "query": TEMPLATE, "min": 2, "max": 1}]},
            "is above `max`",
        ),
        (
            {
                "prometheus": PROVIDER,
                "queries": [{"name": "a", "query": TEMPLATE, "max_increase_pct": 5, "compare": "none"}],
            },
            "needs `compare` stable or baseline",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "a", "query": 'up{x="{{pod}}"}', "max": 1}]},
            "unknown placeholder",
        ),
        (
            {
                "prometheus": PROVIDER,
                "queries": [{"name": "a", "query": TEMPLATE, "max": 1, "window": "1 hour"}],
            },
            "PromQL duration",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "a", "query": TEMPLATE, "max": 1, "count": 0}]},
            "greater than or equal to 1",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "a", "query": TEMPLATE, "max": 1, "typo": 1}]},
            "Extra inputs",
        ),
        (
            {
                "prometheus": PROVIDER,
                "queries": [
                    {"name": "a", "query": TEMPLATE, "max": 1},
                    {"name": "a", "query": TEMPLATE, "max": 2},
                ],
            },
            "distinct across `metrics` and `queries`",
        ),
        (
            {"prometheus": PROVIDER, "queries": [{"name": "target", "query": TEMPLATE, "max": 1}]},
            "choose another name",
        ),
    ],
)
def test_the_pipeline_refuses_an_invalid_query_check(analysis: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Environment.model_validate(_env(analysis))


def test_a_bad_template_is_reported_at_its_line() -> None:
    bad = YAML.replace('{version="{{version}}"}[{{window}}])))', '{version="{{release}}"}[{{window}}])))')
    assert bad != YAML
    _, errors = parse_pipeline(bad, "checkout.yaml")
    [error] = errors
    lines = YAML.splitlines()
    assert error.line == lines.index("        - name: p99") + 2  # 1-based: the line of its `query:`
    assert "unknown placeholder {{release}}" in error.message
