"""Re-judging a deployment recorded through the real log: its verification measured
against a real Prometheus (``tests/prometheus.py``), appended to its stream in
PostgreSQL, read back with ``read_stream`` and judged again — with the policy it ran
with (every decision identical) and a stricter one (different, step by step)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from adapters.eventlog import PostgresEventLog
from events.deployment import deployment_stream
from shiplog.rejudge import load_events, read_policy, rejudge
from tests.integration.test_judge_prometheus import JUDGE
from tests.integration.test_verification_prometheus import analysis, beside_stable, error_rate, p99, verify
from tests.prometheus import ENVIRONMENT, HEALTHY_CANARY, SERVICE, PrometheusServer, prometheus_server
from tests.unit.sagafixtures import canary_plan

__all__ = ["prometheus_server"]  # the fixture, imported for pytest to find

pytestmark = pytest.mark.timeout(300)


async def record(eventlog: PostgresEventLog, spec: dict[str, Any], at: Any) -> str:
    deployment = f"{SERVICE}.{ENVIRONMENT}.{uuid4()}"
    plan = canary_plan(
        deployment_id=deployment,
        service=SERVICE,
        environment=ENVIRONMENT,
        version=HEALTHY_CANARY,
        analysis=spec,
    )
    history, verdict, _ = await verify(plan, beside_stable(HEALTHY_CANARY), at)
    await eventlog.append(deployment_stream(deployment), [*history, verdict], 0)
    return deployment


async def test_a_recorded_deployment_rejudged_with_its_policy_and_a_stricter_one(
    eventlog: PostgresEventLog, prometheus_server: PrometheusServer
) -> None:
    spec = analysis(prometheus_server.url, error_rate(max=0.05), p99(max=1.0), judge=JUDGE)
    deployment = await record(eventlog, spec, prometheus_server.at)
    events = await load_events(eventlog, deployment)

    *before, same = rejudge(events, read_policy({"analysis": spec}))
    assert [s.changed for s in before] == [False] * len(before)
    assert (same.recorded_outcome, same.outcome) == ("Successful", "Successful")
    assert not same.changed, (same.recorded_reason, same.reason)

    stricter = {
        **spec,
        "queries": [error_rate(max=0.005), p99(max=1.0)],
        "judge": {**JUDGE, "metrics": [{**m, "min_samples": 30} for m in JUDGE["metrics"]]},
    }
    *_, strict = rejudge(events, read_policy({"analysis": stricter}))
    assert (strict.recorded_outcome, strict.outcome) == ("Successful", "Failed")
    assert "error-rate Failed" in strict.reason and "above max 0.005" in strict.reason
    judge = next(m for m in strict.measurements if m.metric == "judge")
    assert judge.detail["verdict"] == "marginal"  # 21 samples recorded, 30 needed
