"""The planning consumer's pure core.

- ``build.completed`` -> ``release.planned`` (into the release stream), or
  ``deployment.rejected`` with every reason (no pipeline for the service, another
  pipeline asked for).
- ``release.planned`` -> the first environment's ``deployment.planned``; and
  ``deployment.succeeded`` -> the next environment's (promotion).
- ``release.member_released`` -> that service's ``deployment.planned`` in that
  environment: a service of a multi-service release, which the release coordinator
  (``releases.py``) releases in dependency order and promotes itself. A build that
  names such a release is the coordinator's, not planned here as a release alone. Before anything
  changes, each plan is validated: the config renders, every secret resolves, the
  target answers, the strategy fits the target, no newer version already serves
  there, and the deploy window is open — a closed window schedules the deployment
  for its opening (``deployment.scheduled`` and a durable timer) instead of failing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from consumers.contract import Consumer
from consumers.planning.calendar import is_open, next_opening
from consumers.planning.pipeline import Environment, PipelineFile
from consumers.planning.strategy import StrategyPlan as ConfiguredPlan
from events.build import BuildCompleted
from events.deployment import (
    DeploymentPlanned,
    DeploymentRejected,
    DeploymentScheduled,
    DeploymentSucceeded,
    PlannedStep,
    Reason,
    ReleasePlanned,
    ReplanRequested,
    StrategyPlan,
    TargetRef,
    deployment_id,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.release import MemberReleased
from events.timer import TimerScheduled
from events.topics import BUILDS, EXECUTIONS, PLANS

NAME = "planning"
SOURCE = "shiplog/planning"
WINDOW = "window"


def release_stream(release_id: str) -> str:
    return f"release-{release_id}"


@dataclass(frozen=True)
class PlanningState:
    release: ReleasePlanned | None = None
    planned: bool = False
    rejected: bool = False
    #: the current plan's hash, and whether its approval was settled (a settled
    #: deployment is never re-planned)
    plan_hash: str | None = None
    settled: bool = False


#: after these a deployment's plan is final
_SETTLING = frozenset(
    {
        "shiplog.deployment.approved",
        "shiplog.deployment.denied",
        "shiplog.deployment.started",
        "shiplog.deployment.failed",
        "shiplog.deployment.succeeded",
        "shiplog.deployment.rolled_back",
    }
)


def evolve(state: PlanningState, event: CloudEvent) -> PlanningState:
    if event.type_name == ReleasePlanned.TYPE:
        return replace(state, release=REGISTRY.payload(event, ReleasePlanned))
    if event.type_name == DeploymentPlanned.TYPE:
        return replace(state, planned=True, plan_hash=REGISTRY.payload(event, DeploymentPlanned).plan_hash)
    if event.type_name == DeploymentRejected.TYPE:
        return replace(state, rejected=True)
    if event.type_name in _SETTLING:
        return replace(state, settled=True)
    return state


@dataclass(frozen=True)
class EnvironmentFacts:
    """What gather found out about one environment before planning it."""

    name: str
    strategy: ConfiguredPlan | None
    strategy_reason: str
    #: problems found (unresolved secrets, target not answering, strategy unfit, ...)
    problems: list[Reason] = field(default_factory=list)
    serving_version: str | None = None
    outdated: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    #: the target's ``Capabilities.instances``: False when versions have no instances to
    #: probe (serverless), so no health check is planned
    instances: bool = True


@dataclass(frozen=True)
class PlanningFacts:
    pipeline: PipelineFile | None
    release: ReleasePlanned | None = None
    env: EnvironmentFacts | None = None


def release_id_of(event: CloudEvent) -> str:
    return event.correlationid or event.id


def stream_for(event: CloudEvent) -> str:
    if event.type_name == BuildCompleted.TYPE:
        return release_stream(release_id_of(event))
    if event.type_name == ReleasePlanned.TYPE:
        release = REGISTRY.payload(event, ReleasePlanned)
        return deployment_stream(deployment_id(release.service, release.environments[0], release.release_id))
    if event.type_name == ReplanRequested.TYPE:
        return deployment_stream(REGISTRY.payload(event, ReplanRequested).deployment_id)
    if event.type_name == MemberReleased.TYPE:
        member = REGISTRY.payload(event, MemberReleased)
        return deployment_stream(deployment_id(member.service, member.environment, member.release_id))
    succeeded = REGISTRY.payload(event, DeploymentSucceeded)
    if succeeded.next_environment is None:
        return release_stream(succeeded.release_id)
    return deployment_stream(
        deployment_id(succeeded.service, succeeded.next_environment, succeeded.release_id)
    )


def decide(
    state: PlanningState, event: CloudEvent, *, now: datetime, facts: PlanningFacts
) -> list[CloudEvent]:
    if event.type_name == BuildCompleted.TYPE:
        if (
            state.release
            or state.rejected
            or "release" in (REGISTRY.payload(event, BuildCompleted).model_extra or {})
        ):
            return []
        return _plan_release(event, facts)
    if event.type_name == ReplanRequested.TYPE:
        if not state.planned or state.settled or state.rejected:
            return []
        fresh = _plan_deployment(event, facts, now)
        if not fresh or fresh[0].type_name != DeploymentPlanned.TYPE:
            return []  # the edited pipeline does not plan: the old plan stands
        if REGISTRY.payload(fresh[0], DeploymentPlanned).plan_hash == state.plan_hash:
            return []
        return fresh
    if state.planned or state.rejected:
        return []
    if event.type_name == DeploymentSucceeded.TYPE:
        if REGISTRY.payload(event, DeploymentSucceeded).next_environment is None:
            return []
    return _plan_deployment(event, facts, now)


def _plan_release(event: CloudEvent, facts: PlanningFacts) -> list[CloudEvent]:
    build = REGISTRY.payload(event, BuildCompleted)
    release_id = release_id_of(event)
    reasons = []
    pipeline = facts.pipeline
    if pipeline is None:
        reasons.append(
            Reason(
                code="no_pipeline",
                message=f"no pipeline is configured for {build.service}",
                field="data.service",
            )
        )
    elif pipeline.pipeline != build.pipeline:
        reasons.append(
            Reason(
                code="unknown_pipeline",
                field="data.pipeline",
                message=f"{build.service} has pipeline {pipeline.pipeline!r}, "
                f"the build asks for {build.pipeline!r}",
            )
        )
    envelope = {
        "source": SOURCE,
        "subject": build.service,
        "correlationid": release_id,
        "causationid": event.id,
    }
    if reasons:
        return [
            new_event(
                DeploymentRejected(
                    release_id=release_id, service=build.service, version=build.version, reasons=reasons
                ),
                **envelope,
            )
        ]
    assert pipeline is not None
    facts_of_build = build.model_dump(
        mode="json", include={"tests", "security", "author", "commit", "branch"}, exclude_none=True
    )
    not_before = (build.model_extra or {}).get("not_before")
    return [
        new_event(
            ReleasePlanned(
                release_id=release_id,
                service=build.service,
                version=build.version,
                artifact=build.artifact,
                digest=build.digest,
                pipeline=pipeline.pipeline,
                environments=[e.name for e in pipeline.environments],
                author=build.author,
                build=facts_of_build,
                not_before=not_before,
            ),
            **envelope,
        )
    ]


def _plan_deployment(event: CloudEvent, facts: PlanningFacts, now: datetime) -> list[CloudEvent]:
    release, env_facts, pipeline = facts.release, facts.env, facts.pipeline
    if release is None or env_facts is None or pipeline is None:
        return []
    env = pipeline.environment(env_facts.name)
    stage = release.environments.index(env.name) if env.name in release.environments else 0
    dep_id = deployment_id(release.service, env.name, release.release_id)
    envelope = {
        "source": SOURCE,
        "subject": dep_id,
        "correlationid": release.release_id,
        "causationid": event.id,
    }
    reasons = list(env_facts.problems)
    health_refused = _health_refused(env, env_facts)
    if health_refused is not None:
        reasons.append(health_refused)
    if env_facts.outdated:
        reasons.append(Reason(code="outdated", message=env_facts.outdated))
    open_now, why_closed = is_open(env.schedule, now)
    not_before = release.not_before if release.not_before and release.not_before > now else None
    if not open_now:
        opening = next_opening(env.schedule, now)
        if opening is None:
            reasons.append(
                Reason(
                    code="no_window", message=f"{why_closed}; no window opens within a year", field="schedule"
                )
            )
        else:
            not_before = max(opening, not_before) if not_before else opening
    if reasons or env_facts.strategy is None:
        return [
            new_event(
                DeploymentRejected(
                    deployment_id=dep_id,
                    release_id=release.release_id,
                    service=release.service,
                    version=release.version,
                    environment=env.name,
                    reasons=reasons or [Reason(code="strategy", message=env_facts.strategy_reason)],
                ),
                **envelope,
            )
        ]
    configured = env_facts.strategy
    steps = [
        PlannedStep(
            kind=s.kind,
            weight=s.weight,
            duration_s=s.duration_s,
            batch_size=s.batch_size,
            max_unavailable=s.max_unavailable,
            replicas=configured.replicas if s.applies_to_target else None,
        )
        for s in configured.steps
    ]
    next_env = pipeline.next_after(env.name)
    previous = release.environments[stage - 1] if stage > 0 else None
    note = _health_dropped(env, instances=env_facts.instances)
    reason = f"{env_facts.strategy_reason}; {note}" if note else env_facts.strategy_reason
    body: dict[str, Any] = {
        "strategy": StrategyPlan(type=configured.strategy, reason=reason, steps=steps),
        "target": TargetRef(type=env.target.type, settings=env.target.settings),
        "values": env_facts.values,
        "gate": env.gate.model_dump(mode="json", exclude_none=True),
        "analysis": _analysis(env, instances=env_facts.instances),
    }
    plan_hash = hashlib.sha256(
        json.dumps(
            {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in body.items()}
            | {"version": release.version, "digest": release.digest, "artifact": release.artifact},
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    planned = new_event(
        DeploymentPlanned(
            deployment_id=dep_id,
            release_id=release.release_id,
            service=release.service,
            version=release.version,
            artifact=release.artifact,
            digest=release.digest,
            environment=env.name,
            stage=stage,
            previous_environment=previous,
            next_environment=next_env.name if next_env else None,
            build=release.build,
            not_before=not_before,
            plan_hash=plan_hash,
            **body,
        ),
        **envelope,
    )
    if not_before is None:
        return [planned]
    why = why_closed if not open_now else "the build asked for a not-before time"
    return [
        planned,
        new_event(DeploymentScheduled(deployment_id=dep_id, not_before=not_before, reason=why), **envelope),
        new_event(
            TimerScheduled(
                timer_id=f"{dep_id}:{WINDOW}",
                stream_id=deployment_stream(dep_id),
                due_at=not_before,
                purpose=WINDOW,
            ),
            **envelope,
        ),
    ]


def _analysis(env: Environment, *, instances: bool = True) -> dict[str, Any]:
    """The analysis as the plan records it. ``exclude_none`` drops unset options, but
    ``health: null`` is a choice ("no health check"), not an unset option: without
    the key, verification would fall back to its default health check. A target
    without instances gets ``health: null`` too when the pipeline left health unset
    (``_health_dropped`` says so in the plan; an explicit one is ``_health_refused``)."""
    analysis = env.analysis.model_dump(mode="json", exclude_none=True)
    if env.analysis.health is None or _health_dropped(env, instances=instances):
        analysis["health"] = None
    return analysis


def _health_dropped(env: Environment, *, instances: bool) -> str | None:
    """Why the default health check is not planned, when it is not: the target runs
    no instances whose URLs it could probe."""
    if instances or env.analysis.health is None or _health_configured(env):
        return None
    return (
        f"no health check: target {env.target.type!r} runs no instances to probe "
        "(its platform keeps versions healthy)"
    )


def _health_configured(env: Environment) -> bool:
    """Whether the pipeline set ``analysis.health`` itself (not the default check)."""
    return "health" in env.analysis.model_fields_set


def _health_refused(env: Environment, facts: EnvironmentFacts) -> Reason | None:
    """A health check configured for a target whose versions have no instance URL
    could never pass: refused rather than silently dropped."""
    if facts.instances or env.analysis.health is None or not _health_configured(env):
        return None
    return Reason(
        code="health",
        field="analysis.health",
        message=(
            f"target {env.target.type!r} runs no instances to probe, so the health check "
            f"GET {env.analysis.health.path} cannot run; remove analysis.health (or set it "
            "to null) and check the service with metrics or alarms instead"
        ),
    )


def _consumer() -> Consumer[PlanningState]:
    from consumers.planning.gather import gather

    return Consumer(
        name=NAME,
        topics=(BUILDS.name, PLANS.name, EXECUTIONS.name),
        stream_for=stream_for,
        initial=PlanningState,
        evolve=evolve,
        decide=decide,
        accepts=(
            BuildCompleted.TYPE,
            ReleasePlanned.TYPE,
            DeploymentSucceeded.TYPE,
            ReplanRequested.TYPE,
            MemberReleased.TYPE,
        ),
        gather=gather,
        description="turns builds into releases and plans each environment's deployment",
    )


PLANNING = _consumer()
