"""Verification with query checks against a real Prometheus loaded with known series
(``tests/prometheus.py``): the verification consumer's ``gather`` renders and runs the
PromQL for the canary and the compared track, ``decide`` judges what came back, and
the rollback and execution cores act on the verdict. Only the target is a fake (it
answers ``status()``); Prometheus is real, and "Prometheus down" is a closed port.

Queries are evaluated at a frozen instant inside the backfilled data
(``ports.extra["clock"]``), where every ``rate(...[5m])`` is exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pytest

from adapters.targets import Capabilities, TargetStatus, Track
from consumers.contract import Ports
from consumers.execution.core import decide as execution_decide
from consumers.rollback.core import decide as rollback_decide
from consumers.verification import VERIFICATION, Facts
from consumers.verification import decide as verification_decide
from consumers.verification.analysis import assess_query, round_from_measurement
from consumers.verification.policy import QueryCheck
from events.deployment import DeploymentPlanned
from events.envelope import CloudEvent
from events.rollback import RollbackStarted
from events.verification import (
    Measurement,
    VerificationFailed,
    VerificationInconclusive,
    VerificationPassed,
)
from tests.prometheus import (
    CANARY,
    ENVIRONMENT,
    ERROR_RATE,
    IDLE_SERVICE,
    LATENCY_P99,
    SERVICE,
    STABLE,
    PrometheusServer,
    free_port,
    prometheus_server,
)
from tests.unit.sagafixtures import (
    ANALYSIS,
    SET_20,
    canary_plan,
    decide_on,
    kinds,
    payload,
    running,
    step_applied,
)

__all__ = ["prometheus_server"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.timeout(300)  # the first test may install Prometheus

#: quick rounds; no health check (there are no instances to probe, only series)
FAST: dict[str, Any] = {"health": None, "interval_s": 0.05, "count": 2}


def error_rate(**limits: Any) -> dict[str, Any]:
    return {"name": "error-rate", "query": ERROR_RATE, "window": "5m", **limits}


def p99(**limits: Any) -> dict[str, Any]:
    return {"name": "p99", "query": LATENCY_P99, "window": "5m", **limits}


def analysis(url: str, *queries: dict[str, Any], **settings: Any) -> dict[str, Any]:
    provider = {"url": url, "timeout_s": 5, **settings.pop("provider", {})}
    return {**FAST, "prometheus": provider, "queries": list(queries), **settings}


@dataclass
class FakeTarget:
    """Only ``status()`` is used by verification."""

    tracks: list[Track]
    TYPE: str = "local"
    capabilities: Capabilities = field(default_factory=Capabilities)

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=self.tracks)


def beside_stable(canary: str = CANARY, stable: str | None = STABLE) -> FakeTarget:
    tracks = [Track(version=canary, role="canary", weight=20)]
    if stable is not None:
        tracks.append(Track(version=stable, role="stable", weight=80))
    return FakeTarget(tracks)


def plan_for(
    analysis_: dict[str, Any], *, service: str = SERVICE, version: str = CANARY
) -> DeploymentPlanned:
    return canary_plan(service=service, version=version, environment=ENVIRONMENT, analysis=analysis_)


async def verify(
    plan: DeploymentPlanned,
    target: FakeTarget,
    at: datetime | None,
    *,
    history: list[CloudEvent] | None = None,
    ports: Ports | None = None,
) -> tuple[list[CloudEvent], CloudEvent, Facts]:
    """Gather and decide for the analysis step (or the last event of ``history``), as
    the shell does: the history, the verdict, and what was gathered."""
    history = history or running(plan, at=ANALYSIS)
    trigger = history[-1]
    ports = ports or Ports(targets=lambda type_, settings: target)
    if at is not None:
        ports.extra = {"clock": lambda: at}
    gathered = await VERIFICATION.run_gather(ports, VERIFICATION.fold(history), trigger)
    [verdict] = decide_on(verification_decide, history, trigger, **gathered)
    return history, verdict, gathered["facts"]


def of(verdict: CloudEvent, metric: str) -> list[Measurement]:
    """The measurements of one check, from any of the three verdicts."""
    measurements = [Measurement.model_validate(m) for m in verdict.data["measurements"]]
    return [m for m in measurements if m.metric == metric]


# --- verdicts from known series --------------------------------------------------


async def test_a_healthy_canary_passes_and_every_result_is_recorded(
    prometheus_server: PrometheusServer,
) -> None:
    at = prometheus_server.at
    plan = plan_for(analysis(prometheus_server.url, error_rate(max=0.1), p99(max=1.0)))

    _, verdict, facts = await verify(plan, beside_stable(), at)

    data = payload(verdict, VerificationPassed)
    assert data.outcome == "Successful", data.reason
    assert [(m.metric, m.outcome) for m in data.measurements] == [("target", "Successful")] + [
        ("error-rate", "Successful")
    ] * 2 + [("p99", "Successful")] * 2
    m = of(verdict, "error-rate")[0]
    assert (m.value, m.baseline, m.threshold) == (pytest.approx(0.05), pytest.approx(0.01), 0.1)
    canary, stable = m.detail["canary"], m.detail["stable"]
    assert (canary["track"], canary["version"], stable["track"], stable["version"]) == (
        "canary",
        CANARY,
        "stable",
        STABLE,
    )
    assert f'version="{CANARY}",track="canary"' in canary["query"]
    assert f'version="{STABLE}",track="stable"' in stable["query"]
    assert canary["time"] == stable["time"] == pytest.approx(at.timestamp())
    assert canary["samples"][0]["v"] == pytest.approx(0.05)
    assert (m.detail["template"], m.detail["window"], m.detail["at"]) == (ERROR_RATE, "5m", at.isoformat())
    assert m.detail["dry_run"] is False and m.detail["limits"] == {"max": 0.1}
    assert facts.queries is not None and len(facts.queries) == 4


async def test_a_canary_whose_error_rate_is_too_high_fails_and_is_rolled_back(
    prometheus_server: PrometheusServer,
) -> None:
    plan = plan_for(analysis(prometheus_server.url, error_rate(max=0.02)))

    history, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)

    data = payload(verdict, VerificationFailed)
    assert data.outcome == "Failed"
    assert [m.outcome for m in of(verdict, "error-rate")] == ["Failed", "Failed"]
    assert "error-rate Failed" in data.reason and "0.05 above max 0.02" in data.reason
    assert kinds(decide_on(rollback_decide, history, verdict)) == ["rollback.started"]


@pytest.mark.parametrize(
    ("compare", "pct", "outcome", "baseline", "threshold"),
    [
        # canary 5% against stable's 1%: +100% allows 2%, +500% allows 6%
        ("stable", 100, "Failed", 0.01, 0.02),
        ("stable", 500, "Successful", 0.01, 0.06),
        # against the fresh baseline's 2%: +200% allows 6%
        ("baseline", 200, "Successful", 0.02, 0.06),
        ("baseline", 100, "Failed", 0.02, 0.04),
    ],
)
async def test_max_increase_pct_compares_with_the_compared_tracks_value(
    prometheus_server: PrometheusServer,
    compare: str,
    pct: float,
    outcome: str,
    baseline: float,
    threshold: float,
) -> None:
    check = error_rate(max_increase_pct=pct, compare=compare)
    plan = plan_for(analysis(prometheus_server.url, check))

    _, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)

    [first, _] = of(verdict, "error-rate")
    assert first.outcome == outcome
    assert first.value == pytest.approx(0.05)
    assert first.baseline == pytest.approx(baseline)
    assert first.threshold == pytest.approx(threshold)
    compared = first.detail[compare]
    assert (compared["track"], compared["version"]) == (compare, STABLE)
    assert f'track="{compare}"' in compared["query"]


async def test_a_failing_dry_run_check_is_recorded_but_does_not_fail_the_analysis(
    prometheus_server: PrometheusServer,
) -> None:
    checks = (error_rate(max=0.02, dry_run=True), p99(max=1.0))
    plan = plan_for(analysis(prometheus_server.url, *checks))

    _, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)

    data = payload(verdict, VerificationPassed)
    assert data.outcome == "Successful", data.reason
    dry = of(verdict, "error-rate")
    assert [m.outcome for m in dry] == ["Failed", "Failed"]
    assert all(m.detail["dry_run"] is True for m in dry)
    assert "error-rate (dry run, not gating) Failed" in data.reason


@pytest.mark.parametrize(
    ("service", "query", "status"),
    [
        (IDLE_SERVICE, ERROR_RATE, "nan"),  # 0/0: no traffic at all
        (SERVICE, 'sum(no_such_metric{service="{{service}}",version="{{version}}"})', "empty"),
    ],
    ids=["NaN", "empty"],
)
async def test_nan_and_empty_results_are_inconclusive_never_a_pass(
    prometheus_server: PrometheusServer, service: str, query: str, status: str
) -> None:
    check = {"name": "q", "query": query, "max": 1.0, "compare": "none"}
    plan = plan_for(analysis(prometheus_server.url, check), service=service)

    history, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)

    data = payload(verdict, VerificationInconclusive)
    assert [m.outcome for m in of(verdict, "q")] == ["Inconclusive", "Inconclusive"]
    assert {m.detail["canary"]["status"] for m in of(verdict, "q")} == {status}
    assert "q Inconclusive" in data.reason
    assert kinds(decide_on(execution_decide, history, verdict)) == ["deployment.paused"]


async def test_a_query_prometheus_refuses_ends_as_error(prometheus_server: PrometheusServer) -> None:
    check = {"name": "broken", "query": 'sum(rate(x{version="{{version}}"}[{{window}}])', "max": 1}
    plan = plan_for(analysis(prometheus_server.url, check, consecutive_error_limit=1))

    _, verdict, facts = await verify(plan, beside_stable(), prometheus_server.at)

    data = payload(verdict, VerificationFailed)
    assert data.outcome == "Error"
    broken = of(verdict, "broken")
    assert [m.outcome for m in broken] == ["Error", "Error"]  # the limit is 1: the second ends it
    assert broken[0].detail["canary"]["error_type"] == "bad_data"
    assert facts.queries is not None and len(facts.queries) == 2


async def test_a_weight_change_beside_a_stable_version_runs_the_queries(
    prometheus_server: PrometheusServer,
) -> None:
    plan = plan_for(analysis(prometheus_server.url, error_rate(max=0.1)))
    history = [*running(plan, at=SET_20), step_applied(plan, SET_20)]

    _, verdict, facts = await verify(plan, beside_stable(), prometheus_server.at, history=history)

    assert payload(verdict, VerificationPassed).step_index == SET_20
    assert facts.queries is not None and len(facts.queries) == 2


async def test_without_a_compared_version_an_increase_limit_is_inconclusive(
    prometheus_server: PrometheusServer,
) -> None:
    checks = (error_rate(max_increase_pct=500), p99(max=1.0))
    plan = plan_for(analysis(prometheus_server.url, *checks))

    _, verdict, _ = await verify(plan, beside_stable(stable=None), prometheus_server.at)

    assert payload(verdict, VerificationInconclusive).outcome == "Inconclusive"
    increase = of(verdict, "error-rate")
    assert [m.outcome for m in increase] == ["Inconclusive"] * 2
    assert (
        increase[0].detail["compared_missing"] == f"no stable version serves beside {CANARY} to compare with"
    )
    assert [m.outcome for m in of(verdict, "p99")] == ["Successful"] * 2


# --- Prometheus down -------------------------------------------------------------


async def test_prometheus_down_errs_after_the_consecutive_error_limit_and_rolls_back() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    plan = plan_for(analysis(closed, error_rate(max=0.1), provider={"timeout_s": 0.2}))

    history, verdict, facts = await verify(plan, beside_stable(), None)

    data = payload(verdict, VerificationFailed)
    assert data.outcome == "Error"
    errors = of(verdict, "error-rate")
    # Argo's default limit 4: the fifth error in a row ends the check
    assert [m.outcome for m in errors] == ["Error"] * 5
    assert facts.queries is not None and len(facts.queries) == 5
    assert all("cannot reach Prometheus" in (m.error or "") for m in errors)
    assert "error-rate Error: 5 errors in a row (limit 4)" in data.reason

    rollback = decide_on(rollback_decide, history, verdict)
    assert kinds(rollback) == ["rollback.started"]
    reason = payload(rollback[0], RollbackStarted).reason
    assert reason.startswith(f"verification error at step {ANALYSIS}")
    promoted = kinds(decide_on(execution_decide, history, verdict))
    assert "deployment.succeeded" not in promoted and "step.started" not in promoted


# --- secrets and re-judging ------------------------------------------------------


async def test_header_secrets_are_resolved_when_querying_and_never_recorded(
    prometheus_server: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLOG_TEST_PROM_TOKEN", "Bearer s3cr3t-t0ken")
    headers = {"Authorization": {"secret": {"env": "SHIPLOG_TEST_PROM_TOKEN"}}}
    plan = plan_for(analysis(prometheus_server.url, error_rate(max=0.1), provider={"headers": headers}))

    _, verdict, facts = await verify(plan, beside_stable(), prometheus_server.at)

    assert payload(verdict, VerificationPassed).outcome == "Successful"
    assert "s3cr3t" not in json.dumps(verdict.data) + repr(asdict(facts))
    assert plan.analysis["prometheus"]["headers"] == headers


async def test_an_unresolved_header_secret_errs_naming_the_header(
    prometheus_server: PrometheusServer,
) -> None:
    headers = {"X-Scope-OrgID": {"secret": {"env": "SHIPLOG_TEST_UNSET_VARIABLE"}}}
    check = error_rate(max=0.1)
    plan = plan_for(
        analysis(prometheus_server.url, check, consecutive_error_limit=0, provider={"headers": headers})
    )

    _, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)

    data = payload(verdict, VerificationFailed)
    assert data.outcome == "Error"
    [m] = of(verdict, "error-rate")
    assert "X-Scope-OrgID" in (m.error or "") and "SHIPLOG_TEST_UNSET_VARIABLE is not set" in (m.error or "")


async def test_recorded_measurements_can_be_judged_again_without_prometheus(
    prometheus_server: PrometheusServer,
) -> None:
    ran_with = error_rate(max_increase_pct=500)
    plan = plan_for(analysis(prometheus_server.url, ran_with, p99(max=1.0, compare="none")))
    _, verdict, _ = await verify(plan, beside_stable(), prometheus_server.at)
    recorded = [
        m for m in payload(verdict, VerificationPassed).measurements if m.detail.get("source") == "prometheus"
    ]

    def rejudge(check: dict[str, Any], m: Measurement) -> Measurement:
        return assess_query(QueryCheck.model_validate(check), round_from_measurement(m))

    checks = {"error-rate": ran_with, "p99": p99(max=1.0, compare="none")}
    assert [rejudge(checks[m.metric], m) for m in recorded] == recorded
    stricter = [rejudge(error_rate(max_increase_pct=100), m) for m in recorded if m.metric == "error-rate"]
    assert [m.outcome for m in stricter] == ["Failed", "Failed"]
    assert stricter[0].threshold == pytest.approx(0.02)
