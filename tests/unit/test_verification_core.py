"""The verification consumer's decisions: when it verifies, and what it records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumers.deployment.state import DeploymentState, fold
from consumers.deployment.state import evolve as fold_one
from consumers.verification import VERIFICATION, decide
from consumers.verification.facts import Facts, HealthObservation, Probe, ScrapeAttempt
from consumers.verification.prometheus import VersionCounters
from events.deployment import (
    DeploymentFailed,
    DeploymentPlanned,
    PlannedStep,
    StrategyPlan,
    TargetRef,
)
from events.envelope import CloudEvent
from events.execution import StepApplied, StepStarted
from events.registry import REGISTRY, new_event
from events.verification import VerificationFailed, VerificationInconclusive, VerificationPassed

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEPLOYMENT = "checkout.production.r-1"
STEPS = [
    PlannedStep(kind="set_weight", weight=25),
    PlannedStep(kind="analysis"),
    PlannedStep(kind="pause", duration_s=10),
    PlannedStep(kind="promote"),
]
HEALTHY = (HealthObservation("http://i/healthz", tuple(Probe(status=200) for _ in range(3))),)
STATUS = {"reachable": True, "tracks": [], "endpoint": "http://p", "metrics_url": "http://p/metrics"}


def event(data: Any) -> CloudEvent:
    return new_event(data, source="shiplog/execution", subject=DEPLOYMENT, correlationid="r-1")


def planned(analysis: dict[str, Any] | None = None) -> CloudEvent:
    return event(
        DeploymentPlanned(
            deployment_id=DEPLOYMENT,
            release_id="r-1",
            service="checkout",
            version="2.0",
            artifact="checkout:2.0",
            environment="production",
            stage=2,
            strategy=StrategyPlan(type="canary", reason="configured", steps=STEPS),
            target=TargetRef(type="local"),
            analysis=analysis if analysis is not None else {},
            plan_hash="h",
        )
    )


def started(index: int) -> CloudEvent:
    return event(StepStarted(deployment_id=DEPLOYMENT, index=index, step_id=f"s{index}", step=STEPS[index]))


def applied(index: int, ok: bool = True) -> CloudEvent:
    return event(
        StepApplied(deployment_id=DEPLOYMENT, index=index, step_id=f"s{index}", step=STEPS[index], ok=ok)
    )


def history(*events: CloudEvent, analysis: dict[str, Any] | None = None) -> DeploymentState:
    return fold([planned(analysis), *events])


def metrics(canary_errors: int = 0) -> tuple[ScrapeAttempt, ...]:
    def at(t: float, n: int, errors: int) -> ScrapeAttempt:
        by_code = {"200": float(n - errors), "500": float(errors)}
        return ScrapeAttempt(
            at_s=t,
            counters={"2.0": VersionCounters(by_code), "1.0": VersionCounters({"200": float(3 * n)})},
        )

    return (at(0, 0, 0), at(1, 10, canary_errors), at(2, 20, 2 * canary_errors), at(3, 30, 3 * canary_errors))


def only(events: list[CloudEvent]) -> CloudEvent:
    assert len(events) == 1, events
    return events[0]


def test_a_step_that_applied_ok_is_verified_with_its_measurements() -> None:
    trigger = applied(0)
    state = history(started(0), trigger)
    out = only(decide(state, trigger, now=NOW, facts=Facts(canary="2.0", status=STATUS, health=HEALTHY)))
    assert out.type == "shiplog.verification.passed.v1"
    assert (out.source, out.subject) == ("shiplog/verification", DEPLOYMENT)
    assert (out.correlationid, out.causationid) == ("r-1", trigger.id)
    data = REGISTRY.payload(out, VerificationPassed)
    assert (data.deployment_id, data.step_index, data.outcome) == (DEPLOYMENT, 0, "Successful")
    assert [m.metric for m in data.measurements] == ["target", "health"]
    assert data.measurements[1].detail["answers"] == [200, 200, 200]


def test_the_recorded_verification_marks_the_step_verified() -> None:
    trigger = applied(0)
    state = history(started(0), trigger)
    out = only(decide(state, trigger, now=NOW, facts=Facts(canary="2.0", status=STATUS, health=HEALTHY)))
    assert fold_one(state, out).steps[0].verified == "Successful"


def test_a_redelivered_step_is_not_verified_again() -> None:
    trigger = applied(0)
    state = history(started(0), trigger)
    [verdict] = decide(state, trigger, now=NOW, facts=Facts(canary="2.0", status=STATUS, health=HEALTHY))
    assert decide(fold_one(state, verdict), trigger, now=NOW, facts=None) == []


@pytest.mark.parametrize(
    ("events", "trigger"),
    [
        ((started(0),), applied(0, ok=False)),  # nothing changed: execution handles the failure
        ((started(2),), applied(2)),  # a pause changes nothing on the target
        ((), started(0)),  # intent, not yet applied
        ((), started(2)),
    ],
)
def test_steps_that_call_for_no_verification(events: tuple[CloudEvent, ...], trigger: CloudEvent) -> None:
    state = history(*events, trigger)
    assert decide(state, trigger, now=NOW, facts=Facts(canary="2.0", status=STATUS, health=HEALTHY)) == []


def test_nothing_is_verified_before_a_plan_or_after_the_end() -> None:
    trigger = applied(0)
    assert decide(fold([started(0), trigger]), trigger, now=NOW, facts=None) == []
    ended = history(started(0), trigger, event(DeploymentFailed(deployment_id=DEPLOYMENT, reason="x")))
    assert decide(ended, trigger, now=NOW, facts=None) == []


def test_an_analysis_step_runs_the_full_analysis_when_it_starts() -> None:
    analysis = {"metrics": [{"name": "error_rate", "max": 0.05}], "interval_s": 0.1}
    trigger = started(1)
    state = history(started(0), applied(0), trigger, analysis=analysis)
    facts = Facts(canary="2.0", stable="1.0", status=STATUS, health=HEALTHY, scrapes=metrics())
    data = REGISTRY.payload(only(decide(state, trigger, now=NOW, facts=facts)), VerificationPassed)
    assert data.step_index == 1
    # the user impact is recorded for every analysis that measured traffic
    assert [m.metric for m in data.measurements] == ["target", "health"] + ["error_rate"] * 3 + ["impact"]
    assert data.measurements[-2].detail["canary"]["requests"] == 30
    impact = data.measurements[-1]
    assert impact.outcome == "Successful" and impact.detail["gating"] is False
    assert impact.detail["weight_pct"] == 25  # the weight set by the step before


def test_a_bad_canary_fails_the_analysis() -> None:
    analysis = {"metrics": [{"name": "error_rate", "max": 0.05}]}
    trigger = started(1)
    state = history(trigger, analysis=analysis)
    facts = Facts(canary="2.0", stable="1.0", status=STATUS, health=HEALTHY, scrapes=metrics(canary_errors=2))
    out = only(decide(state, trigger, now=NOW, facts=facts))
    data = REGISTRY.payload(out, VerificationFailed)
    assert data.outcome == "Failed"
    assert "error_rate" in data.reason


def test_metrics_without_traffic_are_inconclusive() -> None:
    analysis = {"metrics": [{"name": "error_rate", "max": 0.05}]}
    trigger = started(1)
    state = history(trigger, analysis=analysis)
    quiet = tuple(ScrapeAttempt(at_s=t, counters={}) for t in range(4))
    facts = Facts(canary="2.0", stable="1.0", status=STATUS, health=HEALTHY, scrapes=quiet)
    data = REGISTRY.payload(only(decide(state, trigger, now=NOW, facts=facts)), VerificationInconclusive)
    assert data.outcome == "Inconclusive"


def test_an_unreachable_target_beyond_the_error_limit_is_an_error() -> None:
    trigger = applied(0)
    state = history(started(0), trigger)
    facts = Facts(canary="2.0", status_errors=tuple(f"target status: refused {i}" for i in range(5)))
    data = REGISTRY.payload(only(decide(state, trigger, now=NOW, facts=facts)), VerificationFailed)
    assert data.outcome == "Error"
    assert len(data.measurements) == 5
    assert all(m.outcome == "Error" for m in data.measurements)


def test_nothing_gathered_is_never_a_pass() -> None:
    trigger = applied(0)
    state = history(started(0), trigger)
    out = only(decide(state, trigger, now=NOW, facts=None))
    assert out.type_name == VerificationInconclusive.TYPE


def test_an_invalid_policy_is_an_error() -> None:
    trigger = applied(0)
    state = history(started(0), trigger, analysis={"metrics": [{"name": "throughput", "max": 1}]})
    data = REGISTRY.payload(only(decide(state, trigger, now=NOW, facts=None)), VerificationFailed)
    assert data.outcome == "Error"
    assert "analysis policy" in data.reason


def test_the_consumer_reads_executions_and_decides_on_the_deployment_stream() -> None:
    assert VERIFICATION.name == "verification"
    assert VERIFICATION.topics == ("shiplog.executions",)
    assert VERIFICATION.stream_for(applied(0)) == f"deployment-{DEPLOYMENT}"
    assert VERIFICATION.wants(applied(0)) and VERIFICATION.wants(started(1))
    assert not VERIFICATION.wants(planned())
    assert VERIFICATION.gather is not None
