"""Re-judging a recorded deployment: the policy it ran with reproduces every recorded
decision exactly; another policy decides from the same measurements, step by step."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.verification import decide as verification_decide
from consumers.verification.facts import Facts, HealthObservation, Probe, ScrapeAttempt
from consumers.verification.policy import policy_of
from consumers.verification.prometheus import VersionCounters
from events.envelope import CloudEvent
from events.errors import InvalidInput
from shiplog.rejudge import read_policy, rejudge
from tests.unit.sagafixtures import (
    ANALYSIS,
    PREVIOUS_VERSION,
    SET_20,
    VERSION,
    canary_plan,
    decide_on,
    running,
)
from tests.unit.test_verification_judge_wiring import NOISE, analysis, facts, judged

INF = float("inf")


def counters(ok: float, errors: float) -> dict[str, VersionCounters]:
    buckets = {0.1: ok * 0.9, 0.5: ok + errors, INF: ok + errors}
    return {
        VERSION: VersionCounters({"200": ok, "500": errors}, buckets),
        PREVIOUS_VERSION: VersionCounters({"200": ok, "500": errors / 2}, buckets),
    }


def full_facts(errors_range: list[float]) -> Facts:
    base = facts(judged("errors", errors_range, NOISE), judged("latency", NOISE, NOISE))
    return Facts(
        **{
            **base.__dict__,
            "health": (HealthObservation("http://i1/healthz", (Probe(500), Probe(200), Probe(200))),),
            "scrapes": (
                ScrapeAttempt(0.0, counters(0, 0)),
                ScrapeAttempt(1.0, error="metrics endpoint answered HTTP 503"),
                ScrapeAttempt(2.0, counters(100, 2)),
                ScrapeAttempt(3.0, counters(200, 3)),
            ),
        }
    )


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        **analysis(),
        "health": {"successes": 2},
        "count": 2,
        "metrics": [{"name": "error_rate", "max": 0.05}, {"name": "latency_p99", "max": 1.0}],
        **overrides,
    }


def recorded_stream(analysis_: dict[str, Any], errors_range: list[float]) -> list[CloudEvent]:
    """A deployment verified after its first weight change and at its analysis."""
    plan = canary_plan(analysis=analysis_)
    history = running(plan, at=SET_20, stage="applied")
    history += decide_on(verification_decide, history, history[-1], facts=full_facts(errors_range))
    walked = running(plan, at=ANALYSIS)
    history += walked[len(history) :]
    history += decide_on(verification_decide, history, history[-1], facts=full_facts(errors_range))
    return history


@pytest.mark.parametrize("errors_range", [NOISE, [2 * v for v in NOISE], NOISE[:4]])
def test_the_policy_it_ran_with_reproduces_every_decision(errors_range: list[float]) -> None:
    stream = recorded_stream(spec(), errors_range)

    steps = rejudge(stream, policy_of(canary_plan(analysis=spec())))

    assert [s.step_index for s in steps] == [SET_20, ANALYSIS]
    for step in steps:
        assert not step.changed, (step.recorded_reason, step.reason)
    assert {s.recorded_outcome for s in steps} != {"Error"}


def test_a_stricter_policy_decides_differently_step_by_step() -> None:
    stream = recorded_stream(spec(), NOISE)
    stricter = {
        **spec(),
        "metrics": [{"name": "error_rate", "max": 0.01}],
        "judge": {"baseline": "stable", "metrics": [{"query": "errors", "min_samples": 20}]},
    }

    weight, analysis_step = rejudge(stream, read_policy({"analysis": stricter}))

    assert (weight.recorded_outcome, weight.outcome) == ("Successful", "Failed")
    assert "error_rate Failed" in weight.reason
    assert (analysis_step.recorded_outcome, analysis_step.outcome) == ("Successful", "Failed")
    judge = next(m for m in analysis_step.measurements if m.metric == "judge")
    assert judge.detail["verdict"] == "marginal"  # 12 samples, 20 needed: no data


def test_a_looser_judge_lets_the_regression_through() -> None:
    stream = recorded_stream(spec(), [2 * v for v in NOISE])
    looser = spec(judge={"baseline": "stable", "metrics": [{"query": "errors", "max_ratio_increase": 2.5}]})

    _, analysis_step = rejudge(stream, read_policy(looser))

    assert (analysis_step.recorded_outcome, analysis_step.outcome) == ("Failed", "Successful")


def test_a_check_that_was_not_recorded_is_inconclusive() -> None:
    stream = recorded_stream(spec(), NOISE)
    more = spec(queries=[*spec()["queries"], {"name": "new", "query": "x", "max": 1}])

    _, analysis_step = rejudge(stream, read_policy(more))

    assert analysis_step.outcome == "Inconclusive"
    [new] = [m for m in analysis_step.measurements if m.metric == "new"]
    assert (new.outcome, new.detail["reason"]) == ("Inconclusive", "the query was not recorded")


@pytest.mark.parametrize(
    "raw", [["a"], {"analysis": {"count": 0}}, {"judge": {"metrics": [{"query": "nope"}]}}]
)
def test_an_invalid_policy_file_is_refused(raw: Any) -> None:
    with pytest.raises(InvalidInput):
        read_policy(raw)


def test_a_bare_analysis_mapping_and_a_section_read_the_same() -> None:
    assert read_policy(spec()) == read_policy({"analysis": spec()})


@pytest.mark.parametrize("errors_range", [NOISE, [2 * v for v in NOISE]])
def test_burn_rate_and_impact_decisions_are_reproduced(errors_range: list[float]) -> None:
    with_slo = spec(slo={"target": 0.999}, impact={"max_affected_requests": 1})
    stream = recorded_stream(with_slo, errors_range)

    steps = rejudge(stream, policy_of(canary_plan(analysis=with_slo)))

    for step in steps:
        assert not step.changed, (step.recorded_reason, step.reason)
    kept = {m.metric for s in steps for m in s.measurements}
    assert {"impact", "slo_burn_rate"} <= kept
