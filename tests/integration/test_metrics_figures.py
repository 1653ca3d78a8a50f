"""The log-derived figures of shiplog's own /metrics, read from the real log."""

from __future__ import annotations

from adapters.eventlog import PostgresEventLog
from events.approval import ApprovalRequested
from events.deployment import (
    DeploymentApproved,
    DeploymentPlanned,
    DeploymentStarted,
    DeploymentSucceeded,
    PlannedStep,
    StrategyPlan,
    TargetRef,
    deployment_id,
    deployment_stream,
)
from events.registry import new_event
from shiplog.metrics import RunningCollector, read_log_figures


async def _append(log: PostgresEventLog, release: str, *, approved: bool) -> None:
    dep = deployment_id("shop", "production", release)
    env = {"source": "shiplog/test", "subject": dep, "correlationid": release}
    events = [
        new_event(
            DeploymentPlanned(
                deployment_id=dep,
                release_id=release,
                service="shop",
                version="1.0.0",
                artifact="reg/shop:1.0.0",
                environment="production",
                stage=0,
                strategy=StrategyPlan(type="rolling", reason="t", steps=[PlannedStep(kind="rolling")]),
                target=TargetRef(type="local"),
                plan_hash="h",
            ),
            **env,
        ),
        new_event(
            ApprovalRequested(deployment_id=dep, service="shop", environment="production", version="1.0.0"),
            **env,
        ),
    ]
    if approved:
        events += [
            new_event(DeploymentApproved(deployment_id=dep, automatic=False), **env),
            new_event(DeploymentStarted(deployment_id=dep), **env),
            new_event(
                DeploymentSucceeded(
                    deployment_id=dep,
                    release_id=release,
                    service="shop",
                    environment="production",
                    version="1.0.0",
                ),
                **env,
            ),
        ]
    await log.append(deployment_stream(dep), events, None)


async def test_outcomes_pending_approvals_and_stage_durations(eventlog: PostgresEventLog) -> None:
    await _append(eventlog, "r1", approved=True)
    await _append(eventlog, "r2", approved=False)

    figures = await read_log_figures(eventlog.pool)

    assert figures.outcomes == [("shop", "production", "succeeded", 1)]
    assert figures.pending_approvals == 1
    assert [len(figures.stages[s]) for s in ("approval", "queue", "rollout")] == [1, 1, 1]
    collector = RunningCollector(None, figures)  # type: ignore[arg-type]  # the log figures only
    text = {m.name: m for m in collector._from_log()}
    assert text["shiplog_pending_approvals"].samples[0].value == 1
    assert text["shiplog_deployments"].samples[0].labels == {
        "service": "shop",
        "environment": "production",
        "outcome": "succeeded",
    }
