"""The pure analysis: single measurements and the verdict over them, table-driven."""

from __future__ import annotations

import math
from typing import Any

import pytest

from consumers.verification.analysis import (
    HEALTH,
    TARGET,
    assess_check,
    assess_health,
    assess_metric,
    combine,
    measure,
    measure_metrics,
)
from consumers.verification.facts import Facts, HealthObservation, Probe, ScrapeAttempt
from consumers.verification.policy import AnalysisPolicy, HealthPolicy, Limits, MetricCheck
from consumers.verification.prometheus import VersionCounters, Window
from events.verification import Measurement, Outcome

# --- health ----------------------------------------------------------------------


def probes(*answers: int | str) -> list[Probe]:
    return [Probe(status=a) if isinstance(a, int) else Probe(error=a) for a in answers]


@pytest.mark.parametrize(
    ("answers", "successes", "expected"),
    [
        ((200, 200, 200), 3, "Successful"),
        ((204, 200, 299), 3, "Successful"),
        ((503, 200, 200, 200), 3, "Successful"),
        ((200, 200, 500, 200, 200), 3, "Failed"),
        ((500, 500, 500), 1, "Failed"),
        (("no answer within 2s", "no answer within 2s"), 1, "Failed"),
        (("ClientConnectorError: refused",), 1, "Failed"),
        ((301, 302), 1, "Failed"),
        ((), 3, "Inconclusive"),
    ],
)
def test_health_needs_n_consecutive_healthy_answers(
    answers: tuple[int | str, ...], successes: int, expected: Outcome
) -> None:
    m = assess_health("http://x/healthz", probes(*answers), HealthPolicy(successes=successes))
    assert m.metric == HEALTH
    assert m.outcome == expected
    assert m.detail["url"] == "http://x/healthz"


def test_health_records_every_answer() -> None:
    m = assess_health("u", probes(500, "timeout", 200), HealthPolicy(successes=2))
    assert m.detail["answers"] == [500, "timeout", 200]
    assert m.value == 1 and m.threshold == 2


# --- metrics ---------------------------------------------------------------------

NAN = float("nan")


def traffic(requests: float, errors: float = 0.0, p99: float | None = 0.05) -> Window:
    return Window(requests=requests, errors=errors, latency_p99_s=p99)


@pytest.mark.parametrize(
    ("check", "canary", "stable", "expected"),
    [
        # error_rate against an absolute max
        (dict(name="error_rate", max=0.05), traffic(100, 0), None, "Successful"),
        (dict(name="error_rate", max=0.05), traffic(100, 5), None, "Successful"),
        (dict(name="error_rate", max=0.05), traffic(100, 6), None, "Failed"),
        (dict(name="error_rate", max=0.0), traffic(10, 10), traffic(10), "Failed"),
        # zero requests, no window, NaN: never a pass
        (dict(name="error_rate", max=0.05), traffic(0, 0), traffic(100), "Inconclusive"),
        (dict(name="error_rate", max=0.05), None, traffic(100), "Inconclusive"),
        (dict(name="error_rate", max=0.05), traffic(NAN, 0), None, "Inconclusive"),
        (dict(name="error_rate", max=0.05), traffic(10, NAN), None, "Inconclusive"),
        (dict(name="latency_p99", max=1.0), traffic(10, p99=None), None, "Inconclusive"),
        (dict(name="latency_p99", max=1.0), traffic(10, p99=NAN), None, "Inconclusive"),
        # latency against the stable version
        (
            dict(name="latency_p99", max_increase_pct=50),
            traffic(10, p99=0.12),
            traffic(10, p99=0.1),
            "Successful",
        ),
        (
            dict(name="latency_p99", max_increase_pct=50),
            traffic(10, p99=0.15),
            traffic(10, p99=0.1),
            "Successful",
        ),
        (
            dict(name="latency_p99", max_increase_pct=50),
            traffic(10, p99=0.16),
            traffic(10, p99=0.1),
            "Failed",
        ),
        (dict(name="latency_p99", max_increase_pct=50), traffic(10, p99=0.1), None, "Inconclusive"),
        (dict(name="latency_p99", max_increase_pct=50), traffic(10, p99=0.1), traffic(0), "Inconclusive"),
        (
            dict(name="latency_p99", max_increase_pct=50),
            traffic(10, p99=0.1),
            traffic(5, p99=None),
            "Inconclusive",
        ),
        # both limits: an absolute breach fails even without anything to compare with
        (dict(name="latency_p99", max=0.5, max_increase_pct=50), traffic(10, p99=0.9), None, "Failed"),
        (dict(name="latency_p99", max=0.5, max_increase_pct=900), traffic(10, p99=0.6), traffic(9), "Failed"),
        # a perfect stable and a perfect canary: 0 is within any increase of 0
        (dict(name="error_rate", max_increase_pct=10), traffic(10, 0), traffic(10, 0), "Successful"),
        (dict(name="error_rate", max_increase_pct=10), traffic(10, 1), traffic(10, 0), "Failed"),
    ],
)
def test_metric_measurement(
    check: dict[str, Any], canary: Window | None, stable: Window | None, expected: Outcome
) -> None:
    m = assess_metric(MetricCheck(**check), canary, stable)
    assert m.outcome == expected, m.detail
    assert m.metric == check["name"]
    if expected == "Inconclusive":
        assert m.detail["reason"]
    assert m.value is None or math.isfinite(m.value)


def test_metric_measurement_records_value_baseline_and_threshold() -> None:
    m = assess_metric(
        MetricCheck(name="latency_p99", max_increase_pct=50), traffic(10, p99=0.12), traffic(10, p99=0.1)
    )
    assert m.value == pytest.approx(0.12)
    assert m.baseline == pytest.approx(0.1)
    assert m.threshold == pytest.approx(0.15)


# --- the verdict -----------------------------------------------------------------

S: Outcome = "Successful"
F: Outcome = "Failed"
I: Outcome = "Inconclusive"  # noqa: E741
E: Outcome = "Error"


def ms(metric: str, *outcomes: Outcome) -> list[Measurement]:
    return [
        Measurement(metric=metric, outcome=o, error="boom" if o == E else None, detail={"reason": "why"})
        for o in outcomes
    ]


@pytest.mark.parametrize(
    ("outcomes", "limits", "expected"),
    [
        ((S, S, S), Limits(), S),
        ((S, F, S), Limits(failure_limit=1), S),
        ((S, F, F), Limits(failure_limit=1), F),
        ((F,), Limits(failure_limit=0), F),
        ((S, I, S), Limits(inconclusive_limit=1), S),
        ((S, I, I), Limits(inconclusive_limit=1), I),
        # missing data alone is never a pass, however generous the limit
        ((I,), Limits(inconclusive_limit=5), I),
        ((I, I, I), Limits(inconclusive_limit=5), I),
        # errors: up to the limit in a row are retried, beyond it the check errs
        ((E, E, E, E, S, S, S), Limits(consecutive_error_limit=4), S),
        ((E, E, S, E, E, S), Limits(consecutive_error_limit=2), S),
        ((E, E, E, E, E), Limits(consecutive_error_limit=4), E),
        ((S, E, E, E, E, E), Limits(consecutive_error_limit=4), E),
        ((E, E, E, E), Limits(consecutive_error_limit=4), I),
        ((E,), Limits(consecutive_error_limit=0), E),
        # Argo's order: too many failures first
        ((F, E, E), Limits(failure_limit=0, consecutive_error_limit=1), F),
        ((), Limits(), I),
    ],
)
def test_one_check_tolerates_its_limits(
    outcomes: tuple[Outcome, ...], limits: Limits, expected: Outcome
) -> None:
    outcome, reason = assess_check(ms("error_rate", *outcomes), limits)
    assert outcome == expected
    assert reason


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ({TARGET: (S,), HEALTH: (S, S), "error_rate": (S, S, S)}, S),
        ({TARGET: (S,), HEALTH: (S,), "error_rate": (S, F, S)}, S),  # failure_limit 1 below
        ({TARGET: (S,), HEALTH: (S,), "error_rate": (F, F, S)}, F),
        ({TARGET: (S,), HEALTH: (S,), "error_rate": (I, I, I)}, I),
        ({TARGET: (E, E, E, E, E)}, E),
        ({TARGET: (E, S), HEALTH: (S,)}, S),
        # the worst check decides: Failed > Error > Inconclusive > Successful
        ({HEALTH: (S,), "error_rate": (I, I, I), "latency_p99": (E, E, E, E, E)}, E),
        ({HEALTH: (S,), "error_rate": (F, F), "latency_p99": (E, E, E, E, E)}, F),
        # health is strict: an unhealthy instance is never within the failure limit
        ({TARGET: (S,), HEALTH: (S, F), "error_rate": (S,)}, F),
        ({TARGET: (S,), HEALTH: (I,)}, I),
    ],
)
def test_the_verdict_is_the_worst_check(groups: dict[str, tuple[Outcome, ...]], expected: Outcome) -> None:
    measurements = [m for name, outcomes in groups.items() for m in ms(name, *outcomes)]
    verdict = combine(measurements, Limits(failure_limit=1, inconclusive_limit=1, consecutive_error_limit=4))
    assert verdict.outcome == expected
    if expected != S:
        assert expected in verdict.reason


def test_nothing_measured_is_inconclusive() -> None:
    assert combine([], Limits()).outcome == "Inconclusive"


# --- from facts to measurements --------------------------------------------------

STATUS: dict[str, Any] = {"reachable": True, "tracks": [], "endpoint": None, "metrics_url": "m"}


def counters(requests: dict[str, float], le_counts: dict[float, float] | None = None) -> VersionCounters:
    return VersionCounters(requests=requests, buckets=le_counts or {})


def scrape(at: float, by_version: dict[str, VersionCounters]) -> ScrapeAttempt:
    return ScrapeAttempt(at_s=at, counters=by_version)


def test_metric_windows_run_from_the_first_good_scrape() -> None:
    facts = Facts(
        canary="2.0",
        stable="1.0",
        status=STATUS,
        scrapes=(
            ScrapeAttempt(at_s=0.0, error="refused"),
            scrape(1.0, {"2.0": counters({"200": 10}), "1.0": counters({"200": 100})}),
            scrape(2.0, {"2.0": counters({"200": 18, "500": 2}), "1.0": counters({"200": 150})}),
            ScrapeAttempt(at_s=3.0, error="HTTP 502"),
            scrape(4.0, {"2.0": counters({"200": 30, "500": 2}), "1.0": counters({"200": 200})}),
        ),
    )
    policy = AnalysisPolicy(metrics=[MetricCheck(name="error_rate", max=0.5)])
    out = measure_metrics(facts, policy)
    assert [m.outcome for m in out] == ["Error", "Successful", "Error", "Successful"]
    assert out[1].value == pytest.approx(2 / 10)
    assert out[3].value == pytest.approx(2 / 22)
    assert out[3].detail["window_s"] == pytest.approx(3.0)
    assert out[3].detail["stable"]["requests"] == 100


def test_a_baseline_alone_leaves_every_check_inconclusive() -> None:
    facts = Facts(canary="2", status=STATUS, scrapes=(ScrapeAttempt(at_s=0, counters={}),))
    policy = AnalysisPolicy(metrics=[MetricCheck(name="error_rate", max=0.1)])
    assert [m.outcome for m in measure_metrics(facts, policy)] == ["Inconclusive"]


def test_no_metrics_endpoint_leaves_every_check_inconclusive() -> None:
    facts = Facts(canary="2", stable="1", status=STATUS, metrics_unavailable="no endpoint")
    policy = AnalysisPolicy(
        metrics=[MetricCheck(name="error_rate", max=0.1), MetricCheck(name="latency_p99", max=1)]
    )
    out = measure(facts, policy, "analysis")
    assert [(m.metric, m.outcome) for m in out] == [
        (TARGET, "Successful"),
        (HEALTH, "Inconclusive"),
        ("error_rate", "Inconclusive"),
        ("latency_p99", "Inconclusive"),
    ]


def test_no_instance_of_the_new_version_fails_health() -> None:
    out = measure(Facts(canary="2", status=STATUS, health=()), AnalysisPolicy(), "rolling")
    assert [(m.metric, m.outcome) for m in out] == [(TARGET, "Successful"), (HEALTH, "Failed")]


def test_a_target_that_never_answered_yields_only_its_errors() -> None:
    facts = Facts(canary="2", status_errors=("a", "b"))
    out = measure(facts, AnalysisPolicy(metrics=[MetricCheck(name="error_rate", max=0.1)]), "analysis")
    assert [(m.metric, m.outcome, m.error) for m in out] == [(TARGET, "Error", "a"), (TARGET, "Error", "b")]


@pytest.mark.parametrize(
    ("kind", "stable", "measured"),
    [
        ("analysis", "1", True),
        ("analysis", None, True),
        ("set_weight", "1", True),
        ("set_weight", None, False),
        ("rolling", "1", False),
        ("switch", "1", False),
    ],
)
def test_which_steps_measure_metrics(kind: str, stable: str | None, measured: bool) -> None:
    facts = Facts(
        canary="2",
        stable=stable,
        status=STATUS,
        health=(HealthObservation("u", tuple(probes(200, 200, 200))),),
        metrics_unavailable="none",
    )
    out = measure(facts, AnalysisPolicy(metrics=[MetricCheck(name="error_rate", max=0.1)]), kind)
    assert any(m.metric == "error_rate" for m in out) is measured
