"""Limits against previous releases, read from the real log: the verification
consumer's ``read_history`` finds the check's recorded values in the last successful
deployments of the same service and environment, and the pure analysis compares the
canary with their mean."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.eventlog.postgres import PostgresEventLog
from adapters.metrics import QueryResult, Sample
from consumers.verification.analysis import measure_queries, verdict_over
from consumers.verification.facts import Facts, QueryRound
from consumers.verification.gather import read_history
from consumers.verification.policy import AnalysisPolicy
from events.deployment import DeploymentPlanned, DeploymentSucceeded, deployment_id, deployment_stream
from events.envelope import CloudEvent
from events.registry import new_event
from events.verification import Measurement, VerificationFailed, VerificationPassed
from tests.unit.sagafixtures import ENVIRONMENT, SERVICE, canary_plan

AT = datetime(2025, 6, 10, 12, tzinfo=UTC)
CHECK = "p99-latency"
#: the recorded p99 of the three previous successful releases (two rounds each): mean 0.2
PREVIOUS = {"rel-1": (0.18, 0.20), "rel-2": (0.21, 0.21), "rel-3": (0.20, 0.20)}


def policy(**rule: Any) -> AnalysisPolicy:
    return AnalysisPolicy(
        health=None,
        prometheus={"url": "http://prometheus:9090"},
        queries=[
            {
                "name": CHECK,
                "query": 'p99{service="{{service}}",version="{{version}}"}',
                "compare": "none",
                "max_increase_pct_vs_previous": {"pct": 10, "releases": 3, **rule},
            }
        ],
    )


def plan_of(release: str, *, service: str = SERVICE) -> DeploymentPlanned:
    return canary_plan(
        deployment_id=deployment_id(service, ENVIRONMENT, release), release_id=release, service=service
    )


def on(p: DeploymentPlanned, data: Any) -> CloudEvent:
    return new_event(
        data, source="shiplog/test", subject=p.deployment_id, correlationid=p.release_id, time=AT
    )


def verified(p: DeploymentPlanned, values: tuple[float, ...], model: Any = VerificationPassed) -> CloudEvent:
    outcome = "Successful" if model is VerificationPassed else "Failed"
    measurements = [Measurement(metric=CHECK, outcome=outcome, value=v) for v in values]
    # a dry-run measurement of the same check never counts
    measurements.append(Measurement(metric=CHECK, outcome="Successful", value=99.0, detail={"dry_run": True}))
    return on(
        p, model(deployment_id=p.deployment_id, step_index=1, outcome=outcome, measurements=measurements)
    )


def succeeded(p: DeploymentPlanned) -> CloudEvent:
    return on(
        p,
        DeploymentSucceeded(
            deployment_id=p.deployment_id,
            release_id=p.release_id,
            service=p.service,
            environment=p.environment,
            version=p.version,
        ),
    )


async def record(log: PostgresEventLog, p: DeploymentPlanned, *events: CloudEvent) -> None:
    await log.append(deployment_stream(p.deployment_id), [on(p, p), *events], expected_version=0)


async def record_history(log: PostgresEventLog, releases: dict[str, tuple[float, ...]]) -> None:
    for release, values in releases.items():
        p = plan_of(release)
        await record(log, p, verified(p, values), succeeded(p))
    # neither a failed deployment nor another service's counts
    bad = plan_of("rel-9")
    await record(log, bad, verified(bad, (5.0,), VerificationFailed))
    other = plan_of("rel-1", service="webx")
    await record(log, other, verified(other, (5.0,)), succeeded(other))


def canary_round(value: float) -> QueryRound:
    result = QueryResult("p99", "ok", samples=(Sample({}, AT.timestamp(), value),))
    return QueryRound(check=CHECK, attempt=0, at=AT, canary_version="2.0", canary=result)


@pytest.mark.parametrize(("worse_by", "expected"), [(0.20, "Failed"), (0.05, "Successful")])
async def test_a_canary_is_judged_against_the_last_successful_releases(
    eventlog: PostgresEventLog, worse_by: float, expected: str
) -> None:
    await record_history(eventlog, PREVIOUS)
    current = plan_of("rel-10")
    rules = policy()
    history = await read_history(eventlog, current, rules.history_checks())

    found = history[CHECK]
    assert [p.deployment_id for p in found.previous] == [plan_of(r).deployment_id for r in PREVIOUS]
    assert [p.value for p in found.previous] == pytest.approx([0.19, 0.21, 0.20])

    facts = Facts(canary="2.0", queries=(canary_round(0.2 * (1 + worse_by)),), history=history)
    (m,) = measure_queries(facts, rules)
    assert m.outcome == expected, m.detail.get("reason")
    assert m.detail["vs_previous"]["mean"] == pytest.approx(0.2)
    assert [p["value"] for p in m.detail["vs_previous"]["previous"]] == pytest.approx([0.19, 0.21, 0.20])
    assert verdict_over([m], rules).outcome == expected


async def test_too_few_previous_releases_is_inconclusive(eventlog: PostgresEventLog) -> None:
    await record_history(eventlog, {"rel-1": (0.2,), "rel-2": (0.2,)})
    rules = policy()
    history = await read_history(eventlog, plan_of("rel-10"), rules.history_checks())
    (m,) = measure_queries(Facts(canary="2.0", queries=(canary_round(0.2),), history=history), rules)
    assert m.outcome == "Inconclusive"
    assert "2 previous successful release(s)" in m.detail["reason"]

    relaxed = policy(min_releases=2)
    (m,) = measure_queries(Facts(canary="2.0", queries=(canary_round(0.2),), history=history), relaxed)
    assert m.outcome == "Successful"


async def test_only_the_last_releases_count(eventlog: PostgresEventLog) -> None:
    # an old, much slower release falls out of the last three
    await record_history(eventlog, {"rel-0": (2.0,), **PREVIOUS})
    history = await read_history(eventlog, plan_of("rel-10"), policy().history_checks())
    assert [p.value for p in history[CHECK].previous] == pytest.approx([0.19, 0.21, 0.20])


async def test_a_log_that_cannot_be_read_is_an_error() -> None:
    class Broken:
        async def scan(self, **_: Any) -> Any:
            raise ConnectionError("the log is down")
            yield  # pragma: no cover

    history = await read_history(Broken(), plan_of("rel-10"), policy().history_checks())
    (m,) = measure_queries(Facts(canary="2.0", queries=(canary_round(0.2),), history=history), policy())
    assert m.outcome == "Error"
    assert "the log is down" in (m.error or "")
