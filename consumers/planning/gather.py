"""What planning must know before it decides: the pipeline, and for the environment
to plan, whether its config renders, its secrets resolve, its target answers and
what already serves there."""

from __future__ import annotations

import os
from typing import Any

from adapters.eventlog.lanes import older
from consumers.planning.core import (
    EnvironmentFacts,
    PlanningFacts,
    PlanningState,
    release_id_of,
    release_stream,
)
from consumers.planning.pipeline import Environment
from consumers.planning.strategy import StrategyNotSupported, select_strategy
from consumers.planning.values import render_values, secret_resolver
from events.build import BuildCompleted
from events.deployment import DeploymentSucceeded, Reason, ReleasePlanned, ReplanRequested
from events.envelope import CloudEvent
from events.errors import ShiplogError
from events.registry import REGISTRY
from events.release import MemberReleased, ReleaseComposed, ReleaseService


async def gather(ports: Any, state: PlanningState, event: CloudEvent) -> PlanningFacts:
    pipelines = ports.pipelines or {}
    if event.type_name == BuildCompleted.TYPE:
        return PlanningFacts(pipelines.get(REGISTRY.payload(event, BuildCompleted).service))
    if event.type_name == ReleasePlanned.TYPE:
        release = REGISTRY.payload(event, ReleasePlanned)
        env_name = release.environments[0]
    elif event.type_name == MemberReleased.TYPE:
        member = REGISTRY.payload(event, MemberReleased)
        release = member_release(member.release_id, member.member, member.environments)
        env_name = member.environment
    elif event.type_name == ReplanRequested.TYPE:
        replan = REGISTRY.payload(event, ReplanRequested)
        history = await ports.log.read_stream(release_stream(replan.release_id))
        found_release = _release_in([r.event for r in history], replan.service)
        if found_release is None:
            return PlanningFacts(None)
        release = found_release
        env_name = replan.environment
    else:
        # a service of a multi-service release is promoted by the release coordinator:
        # its release stream holds release.composed, not release.planned
        succeeded = REGISTRY.payload(event, DeploymentSucceeded)
        if succeeded.next_environment is None:
            return PlanningFacts(None)
        history = await ports.log.read_stream(release_stream(succeeded.release_id))
        found = [r.event for r in history if r.event.type_name == ReleasePlanned.TYPE]
        if not found:
            return PlanningFacts(None)
        release = REGISTRY.payload(found[0], ReleasePlanned)
        env_name = succeeded.next_environment
    pipeline = pipelines.get(release.service)
    if pipeline is None:
        return PlanningFacts(None, release)
    try:
        env = pipeline.environment(env_name)
    except KeyError:
        return PlanningFacts(
            pipeline,
            release,
            EnvironmentFacts(
                env_name,
                None,
                "",
                [Reason(code="no_environment", message=f"the pipeline no longer has {env_name}")],
            ),
        )
    return PlanningFacts(pipeline, release, await _environment(ports, env, release))


def member_release(release_id: str, member: ReleaseService, environments: list[str]) -> ReleasePlanned:
    """A service of a multi-service release, as planning plans a release alone."""
    return ReleasePlanned(
        release_id=release_id,
        service=member.service,
        version=member.version,
        artifact=member.artifact,
        digest=member.digest,
        pipeline=member.pipeline,
        environments=environments,
        author=member.author,
        build=member.build_facts(),
    )


def _release_in(history: list[CloudEvent], service: str) -> ReleasePlanned | None:
    for event in history:
        if event.type_name == ReleasePlanned.TYPE:
            return REGISTRY.payload(event, ReleasePlanned)
        if event.type_name == ReleaseComposed.TYPE:
            composed = REGISTRY.payload(event, ReleaseComposed)
            if service in composed.service_environments:
                return member_release(
                    composed.release_id, composed.member(service), composed.service_environments[service]
                )
    return None


async def _environment(ports: Any, env: Environment, release: ReleasePlanned) -> EnvironmentFacts:
    problems: list[Reason] = []
    values = render_values(env, secret_resolver(os.environ, getattr(ports, "config_dir", None)))
    problems += [Reason(code="secret", message=str(u), field=f"values.{u.key}") for u in values.unresolved]
    strategy, why, instances = None, "", True
    try:
        target = ports.targets(env.target.type, env.target.settings)
        await target.status(release.service, env.name, env.target.settings)
        instances = target.capabilities.instances
        try:
            strategy, why = select_strategy(env, target.capabilities)
        except StrategyNotSupported as exc:
            problems.append(Reason(code="strategy", message=str(exc), field="strategy"))
            why = str(exc)
    except ShiplogError as exc:
        if exc.retryable:
            raise
        problems.append(
            Reason(code="target", message=f"target {env.target.type} does not answer: {exc}", field="target")
        )
    serving = await ports.lanes.serving(release.service, env.name) if ports.lanes else None
    outdated = None
    if serving is not None and older(release.version, serving):
        outdated = f"{release.version} is older than {serving}, which already serves {env.name}"
    return EnvironmentFacts(
        env.name, strategy, why, problems, serving, outdated, values.references(), instances
    )


__all__ = ["gather", "release_id_of"]
