"""The execution consumer's I/O: claim the lane, snapshot the target, apply a step,
free the lane. Everything it learns goes to decide as data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.targets import Release, Step
from consumers.deployment import DeploymentState, Status
from consumers.execution.core import (
    TARGET_KINDS,
    TERMINAL_TYPES,
    Applied,
    Claimed,
    Facts,
    Released,
    wants_start,
)
from consumers.secrets import resolve_values
from events.deployment import DeploymentPlanned, DeploymentRolledBack, DeploymentSucceeded
from events.envelope import CloudEvent
from events.errors import ShiplogError
from events.execution import StepStarted
from events.registry import REGISTRY


def release_of(plan: DeploymentPlanned, config_dir: Path | None = None) -> Release:
    return Release(
        service=plan.service,
        environment=plan.environment,
        version=plan.version,
        artifact=plan.artifact,
        config=resolve_values(plan.values, config_dir),
        settings=plan.target.settings,
    )


async def gather(ports: Any, state: DeploymentState, event: CloudEvent) -> Facts:
    plan = state.plan
    if plan is None:
        return None
    if event.type_name in TERMINAL_TYPES:
        serving = None
        if event.type_name == DeploymentSucceeded.TYPE:
            serving = plan.version
        elif event.type_name == DeploymentRolledBack.TYPE:
            serving = REGISTRY.payload(event, DeploymentRolledBack).to_version
        woken = await ports.lanes.release(plan.service, plan.environment, plan.deployment_id, serving)
        return Released(tuple(woken))
    if wants_start(state, event, datetime.now(UTC)):
        claim = await ports.lanes.claim(plan.service, plan.environment, plan.deployment_id, plan.version)
        if not claim.claimed:
            return Claimed(False, behind=claim.behind, outdated=claim.outdated)
        target = ports.targets(plan.target.type, plan.target.settings)
        # the plan's settings place the service: a new process remembers no apply
        snapshot = await target.snapshot(plan.service, plan.environment, plan.target.settings)
        return Claimed(True, snapshot=snapshot.model_dump(mode="json"), snapshot_version=snapshot.version)
    if event.type_name == StepStarted.TYPE and state.status is Status.RUNNING:
        started = REGISTRY.payload(event, StepStarted)
        record = state.step(started.index)
        if started.step.kind not in TARGET_KINDS or record is None or record.applied:
            return None
        try:
            # a secret that stopped resolving since planning fails the step, not the consumer
            step = Step(
                step_id=started.step_id,
                deployment_id=plan.deployment_id,
                kind=started.step.kind,  # type: ignore[arg-type]
                release=release_of(plan, getattr(ports, "config_dir", None)),
                weight=started.step.weight,
                batch_size=started.step.batch_size or 1,
                replicas=started.step.replicas or 1,
            )
            target = ports.targets(plan.target.type, plan.target.settings)
            result = await target.apply(step)
        except ShiplogError as exc:
            if exc.retryable:
                raise
            return Applied(ok=False, error=f"{type(exc).__name__}: {exc}")
        return Applied(
            ok=result.ok, already_applied=result.already_applied, detail=result.detail, error=result.error
        )
    return None
