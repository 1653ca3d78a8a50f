"""The statistical judge against a real Prometheus loaded with known series
(``tests/prometheus.py``): gather fetches each judged query's samples as range
queries over the judge's lookback for the canary and the compared track, and the
judge's verdict decides the analysis step — a canary with a known regression (5x the
error rate, p99 0.875 s against 0.375 s) fails and is rolled back, one as good as
stable passes. The local-style fake target runs no baseline track: the judge says so
and compares with stable.
"""

from __future__ import annotations

from typing import Any

import pytest

from consumers.rollback.core import decide as rollback_decide
from events.verification import VerificationFailed, VerificationPassed
from tests.integration.test_verification_prometheus import (
    analysis,
    beside_stable,
    error_rate,
    of,
    p99,
    plan_for,
    verify,
)
from tests.prometheus import CANARY, HEALTHY_CANARY, STABLE, PrometheusServer, prometheus_server
from tests.unit.sagafixtures import decide_on, kinds, payload

__all__ = ["prometheus_server"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.timeout(300)  # the first test may install Prometheus

JUDGE: dict[str, Any] = {
    "baseline": "baseline",
    "lookback": "10m",
    "step_s": 30,
    "metrics": [
        {"query": "error-rate", "critical": True, "max_ratio_increase": 1.2, "group": "errors"},
        {"query": "p99", "max_ratio_increase": 1.25, "group": "latency"},
    ],
    "group_weights": {"errors": 2, "latency": 1},
}


def judged(url: str) -> dict[str, Any]:
    # generous query limits: the judge alone decides
    return analysis(url, error_rate(max=1.0), p99(max=10.0), judge=JUDGE)


async def test_a_canary_with_a_known_regression_fails_the_judge_and_is_rolled_back(
    prometheus_server: PrometheusServer,
) -> None:
    plan = plan_for(judged(prometheus_server.url), version=CANARY)

    history, verdict, facts = await verify(plan, beside_stable(CANARY), prometheus_server.at)

    data = payload(verdict, VerificationFailed)
    assert data.outcome == "Failed", data.reason
    [summary] = of(verdict, "judge")
    assert (summary.outcome, summary.value, summary.detail["verdict"]) == ("Failed", 0.0, "fail")
    [errors] = of(verdict, "judge:error-rate")
    assert errors.detail["judge"]["classification"] == "High"
    assert (errors.value, errors.baseline) == (pytest.approx(0.05), pytest.approx(0.01))
    ranges = errors.detail["ranges"]
    assert ranges["compared"]["version"] == STABLE and 'track="stable"' in ranges["compared"]["query"]
    assert len(ranges["canary"]["series"][0]["points"]) == 21  # 10m every 30s, both ends
    assert facts.judge_ranges is not None and len(facts.judge_ranges) == 2
    assert kinds(decide_on(rollback_decide, history, verdict)) == ["rollback.started"]


async def test_a_canary_as_good_as_stable_passes_the_judge(prometheus_server: PrometheusServer) -> None:
    plan = plan_for(judged(prometheus_server.url), version=HEALTHY_CANARY)

    _, verdict, _ = await verify(plan, beside_stable(HEALTHY_CANARY), prometheus_server.at)

    data = payload(verdict, VerificationPassed)
    assert data.outcome == "Successful", data.reason
    [summary] = of(verdict, "judge")
    assert (summary.value, summary.detail["verdict"]) == (100.0, "pass")
    comparison = summary.detail["comparison"]
    assert (comparison["requested"], comparison["track"]) == ("baseline", "stable")
    assert "baseline was not available" in comparison["fallback_reason"]
    assert [m.detail["judge"]["classification"] for m in of(verdict, "judge:p99")] == ["Pass"]


async def test_prometheus_down_makes_the_judge_marginal_never_a_pass(
    prometheus_server: PrometheusServer,
) -> None:
    from tests.prometheus import free_port

    spec = analysis(
        f"http://127.0.0.1:{free_port()}",
        error_rate(max=1.0),
        judge=JUDGE | {"metrics": JUDGE["metrics"][:1], "group_weights": {}},
    )
    plan = plan_for({**spec, "consecutive_error_limit": 0}, version=HEALTHY_CANARY)

    _, verdict, _ = await verify(plan, beside_stable(HEALTHY_CANARY), prometheus_server.at)

    assert verdict.data["outcome"] != "Successful"
    [summary] = of(verdict, "judge")
    assert summary.outcome == "Inconclusive" and summary.detail["verdict"] == "marginal"
