"""The statistical judge wired into verification: the judge's verdict over the
gathered ranges becomes the ``judge`` measurement that gates the analysis step, one
``judge:<query>`` measurement per judged query is recorded, and a baseline the
target does not run falls back to stable with the reason recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.metrics import QueryResult, Sample, Series, classify
from consumers.planning.pipeline import Analysis
from consumers.verification import Facts
from consumers.verification import decide as verification_decide
from consumers.verification.comparison import compared_track, samples_of
from consumers.verification.facts import JudgeRange, QueryRound
from consumers.verification.policy import policy_of
from events.verification import Measurement
from tests.unit.sagafixtures import ANALYSIS, PREVIOUS_VERSION, VERSION, canary_plan, decide_on, running

AT = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
TRACKS = [
    {"version": VERSION, "role": "canary", "weight": 20, "urls": []},
    {"version": PREVIOUS_VERSION, "role": "stable", "weight": 80, "urls": []},
]
#: a healthy service's error rate: noisy around 1%
NOISE = [0.010, 0.012, 0.009, 0.011, 0.010, 0.013, 0.008, 0.011, 0.010, 0.012, 0.009, 0.011]


def analysis(**judge: Any) -> dict[str, Any]:
    queries = [
        {"name": name, "query": f'{name}{{version="{{{{version}}}}"}}', "max": 100}
        for name in ("errors", "latency")
    ]
    spec = {
        "baseline": "stable",
        "metrics": [{"query": "errors", "critical": True}, {"query": "latency"}],
        **judge,
    }
    return {
        "health": None,
        "count": 1,
        "prometheus": {"url": "http://prometheus:9090"},
        "queries": queries,
        "judge": spec,
    }


def series(values: list[float]) -> QueryResult:
    points = tuple((AT.timestamp() - 30 * (len(values) - i), v) for i, v in enumerate(values))
    return classify("q", series=(Series({}, points),))


def judged(check: str, canary: list[float], stable: list[float] | None, track: str = "stable") -> JudgeRange:
    return JudgeRange(
        check=check,
        start=AT - timedelta(minutes=10),
        end=AT,
        step_s=30,
        canary_version=VERSION,
        canary=series(canary),
        compared_track=track,
        compared_version=PREVIOUS_VERSION if stable is not None else None,
        compared=series(stable) if stable is not None else None,
        compared_missing=None if stable is not None else "none beside",
    )


def one_round(check: str) -> QueryRound:
    value = classify("q", samples=(Sample({}, AT.timestamp(), 0.01),))
    return QueryRound(check, 0, AT, VERSION, value, PREVIOUS_VERSION, value)


def facts(*ranges: JudgeRange, tracks: list[dict[str, Any]] = TRACKS) -> Facts:
    return Facts(
        canary=VERSION,
        stable=PREVIOUS_VERSION,
        status={"reachable": True, "tracks": tracks},
        queries=(one_round("errors"), one_round("latency")),
        judge_ranges=ranges or None,
    )


def verify(spec: dict[str, Any], f: Facts) -> tuple[str, str, list[Measurement]]:
    plan = canary_plan(analysis=spec)
    history = running(plan, at=ANALYSIS)
    [verdict] = decide_on(verification_decide, history, history[-1], facts=f)
    data = verdict.data
    return data["outcome"], data["reason"], [Measurement.model_validate(m) for m in data["measurements"]]


def named(measurements: list[Measurement], name: str) -> Measurement:
    return next(m for m in measurements if m.metric == name)


def test_a_canary_like_its_stable_passes_and_the_judge_is_recorded() -> None:
    outcome, reason, ms = verify(
        analysis(), facts(judged("errors", NOISE, NOISE[::-1]), judged("latency", NOISE, NOISE))
    )

    assert outcome == "Successful", reason
    assert [m.metric for m in ms][-3:] == ["judge:errors", "judge:latency", "judge"]
    summary = named(ms, "judge")
    assert (summary.outcome, summary.value, summary.detail["verdict"]) == ("Successful", 100.0, "pass")
    assert summary.detail["comparison"] == {"requested": "stable", "track": "stable"}
    errors = named(ms, "judge:errors")
    assert errors.detail["judge"]["classification"] == "Pass"
    ranges = errors.detail["ranges"]
    assert (
        ranges["compared"]["version"] == PREVIOUS_VERSION
        and len(ranges["canary"]["series"][0]["points"]) == 12
    )


def test_a_doubled_error_rate_on_a_critical_metric_fails_the_step() -> None:
    doubled = [2 * v for v in NOISE]
    outcome, reason, ms = verify(
        analysis(), facts(judged("errors", doubled, NOISE), judged("latency", NOISE, NOISE))
    )

    assert outcome == "Failed"
    assert "judge Failed" in reason and "critical metric failed: errors High" in reason
    assert named(ms, "judge:errors").outcome == "Failed"


def test_a_failing_metric_that_is_not_critical_only_lowers_the_score() -> None:
    spec = analysis(
        metrics=[{"query": "errors"}, {"query": "latency"}], pass_threshold=50, marginal_threshold=25
    )
    doubled = [2 * v for v in NOISE]
    outcome, reason, ms = verify(
        spec, facts(judged("errors", doubled, NOISE), judged("latency", NOISE, NOISE))
    )

    # the per-query measurement is recorded as Failed, but only the score gates
    assert named(ms, "judge:errors").outcome == "Failed"
    assert (outcome, named(ms, "judge").value) == ("Successful", 50.0), reason


def test_too_few_samples_is_marginal_and_pauses_for_a_person() -> None:
    outcome, reason, ms = verify(
        analysis(), facts(judged("errors", NOISE[:4], NOISE[:4]), judged("latency", NOISE, NOISE))
    )

    assert outcome == "Inconclusive"
    assert "judge Inconclusive" in reason
    assert named(ms, "judge").detail["verdict"] == "marginal"
    assert named(ms, "judge:errors").detail["judge"]["classification"] == "NoData"


def test_a_judge_whose_ranges_were_not_fetched_is_inconclusive() -> None:
    outcome, _, ms = verify(analysis(), facts())

    assert outcome == "Inconclusive"
    assert named(ms, "judge").detail["reason"] == "the judge's samples were not measured"


def test_without_a_baseline_track_the_judge_compares_with_stable_and_says_why() -> None:
    outcome, _, ms = verify(
        analysis(baseline="baseline"),
        facts(judged("errors", NOISE, NOISE), judged("latency", NOISE, NOISE)),
    )

    comparison = named(ms, "judge").detail["comparison"]
    assert comparison["requested"] == "baseline" and comparison["track"] == "stable"
    assert "baseline was not available" in comparison["fallback_reason"]
    assert named(ms, "judge:errors").detail["comparison"] == comparison
    assert outcome == "Successful"


@pytest.mark.parametrize(
    ("requested", "tracks", "expected"),
    [
        ("stable", TRACKS, ("stable", PREVIOUS_VERSION, None)),
        ("baseline", TRACKS, ("stable", PREVIOUS_VERSION, "fallback")),
        (
            "baseline",
            [*TRACKS, {"version": "1.0.0-b", "role": "baseline", "weight": 0}],
            ("baseline", "1.0.0-b", None),
        ),
        ("baseline", TRACKS[:1], ("stable", None, "fallback")),
    ],
)
def test_the_compared_track(requested: str, tracks: list[dict[str, Any]], expected: tuple[Any, ...]) -> None:
    track, version, why = compared_track(
        requested, tracks, VERSION, PREVIOUS_VERSION if len(tracks) > 1 else None
    )
    assert (track, version, "fallback" if why else None) == expected


def test_the_judge_is_not_run_after_a_weight_change() -> None:
    plan = canary_plan(analysis=analysis())
    history = running(plan, at=0, stage="applied")
    [verdict] = decide_on(verification_decide, history, history[-1], facts=facts())
    assert "judge" not in {m["metric"] for m in verdict.data["measurements"]}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (series([1.0, 2.0]), [1.0, 2.0]),
        (QueryResult("q", "empty"), []),
        (QueryResult("q", "error", message="down"), "down"),
        (
            classify("q", series=(Series({"a": "1"}, ((1.0, 1.0),)), Series({"a": "2"}, ((1.0, 1.0),)))),
            "2 series",
        ),
    ],
)
def test_samples_of_a_range_result(result: QueryResult, expected: Any) -> None:
    got = samples_of(result)
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


@pytest.mark.parametrize(
    "judge",
    [
        {"metrics": [{"query": "unknown"}]},
        {"metrics": [{"query": "errors"}], "pass_threshold": 50, "marginal_threshold": 60},
        {"metrics": [{"query": "errors", "group": "g"}], "group_weights": {"h": 1}},
        {"metrics": []},
    ],
)
def test_an_invalid_judge_is_refused_by_planning_and_verification(judge: dict[str, Any]) -> None:
    spec = {**analysis(), "judge": judge}
    with pytest.raises(ValidationError):
        Analysis.model_validate(spec)
    with pytest.raises(ValidationError):
        policy_of(spec)


def test_the_pipelines_judge_reads_as_verifications() -> None:
    recorded = Analysis.model_validate(analysis(group_weights={"default": 2})).model_dump(
        mode="json", exclude_none=True
    )
    policy = policy_of(recorded)
    assert policy.judge is not None
    config = policy.judge.config()
    assert [m.name for m in config.metrics] == ["errors", "latency"] and config.metrics[0].critical
    assert (policy.judge.baseline, policy.judge.lookback_s, config.group_weights) == (
        "stable",
        600,
        {"default": 2},
    )
