"""DORA keys read from the real PostgreSQL log (the figures' arithmetic is checked
against hand-computed values in tests/unit/test_dora.py)."""

from __future__ import annotations

from adapters.eventlog import PostgresEventLog
from events.build import BuildCompleted
from events.deployment import (
    DeploymentPlanned,
    DeploymentRolledBack,
    DeploymentStarted,
    DeploymentSucceeded,
    PlannedStep,
    StrategyPlan,
    TargetRef,
    deployment_id,
    deployment_stream,
)
from events.registry import new_event
from shiplog.dora import dora


async def _deploy(log: PostgresEventLog, release: str, version: str, outcome: str) -> None:
    build = new_event(
        BuildCompleted(service="shop", version=version, artifact=f"reg/shop:{version}"),
        source="ci/test",
        subject="shop",
        correlationid=release,
    )
    await log.append(f"release-{release}", [build], None, publish=False)
    dep = deployment_id("shop", "production", release)
    envelope = {"source": "shiplog/test", "subject": dep, "correlationid": release}
    events = [
        new_event(
            DeploymentPlanned(
                deployment_id=dep,
                release_id=release,
                service="shop",
                version=version,
                artifact=f"reg/shop:{version}",
                environment="production",
                stage=0,
                strategy=StrategyPlan(type="rolling", reason="test", steps=[PlannedStep(kind="rolling")]),
                target=TargetRef(type="local"),
                plan_hash="h",
            ),
            **envelope,
        ),
        new_event(DeploymentStarted(deployment_id=dep), **envelope),
    ]
    if outcome == "succeeded":
        events.append(
            new_event(
                DeploymentSucceeded(
                    deployment_id=dep,
                    release_id=release,
                    service="shop",
                    environment="production",
                    version=version,
                ),
                **envelope,
            )
        )
    else:
        events.append(
            new_event(
                DeploymentRolledBack(
                    deployment_id=dep, service="shop", environment="production", reason="bad", healthy=True
                ),
                **envelope,
            )
        )
    await log.append(deployment_stream(dep), events, None)


async def test_dora_from_the_log(eventlog: PostgresEventLog) -> None:
    await _deploy(eventlog, "r1", "1.0.0", "succeeded")
    await _deploy(eventlog, "r2", "1.1.0", "rolled_back")
    await _deploy(eventlog, "r3", "1.1.1", "succeeded")

    (row,) = await dora(eventlog)
    assert (row.service, row.environment, row.successes, row.failures, row.ended) == (
        "shop",
        "production",
        2,
        1,
        3,
    )
    assert row.change_failure_rate == 1 / 3
    assert len(row.lead_times) == 2 and all(t >= 0 for t in row.lead_times)
    assert len(row.restore_times) == 1
    assert await dora(eventlog, service="nobody") == []
