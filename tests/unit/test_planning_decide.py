"""The planning consumer's pure decisions, table-driven over facts gather would find."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.targets import Capabilities, TargetStatus
from adapters.targets.serverless import LambdaTarget
from consumers.planning.core import (
    EnvironmentFacts,
    PlanningFacts,
    PlanningState,
    decide,
    evolve,
    stream_for,
)
from consumers.planning.gather import gather
from consumers.planning.loader import parse_pipeline
from consumers.planning.pipeline import PipelineFile
from consumers.planning.strategy import select_strategy
from events import REGISTRY, new_event
from events.build import BuildCompleted
from events.deployment import (
    DeploymentPlanned,
    DeploymentRejected,
    DeploymentScheduled,
    DeploymentSucceeded,
    Reason,
    ReleasePlanned,
)
from events.envelope import CloudEvent
from events.timer import TimerScheduled

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # a Friday
PIPELINE_YAML = """
service: shop
environments:
  - name: dev
    target: {type: local, settings: {command: [x]}}
    strategy: {type: rolling}
  - name: production
    target: {type: local, settings: {command: [x]}}
    values: {MODE: prod, TOKEN: {secret: {env: SHOP_TOKEN}}}
    strategy: {type: canary, steps: [{set_weight: 25}, {analysis: {}}, {set_weight: 100}]}
    schedule:
      - {kind: allow, cron: "0 9 * * 1-5", duration: 8h, timezone: Europe/Berlin}
"""
PIPELINE, _errors = parse_pipeline(PIPELINE_YAML, "shop.yaml")
assert PIPELINE is not None, _errors
BOTH = Capabilities(traffic_split=True, two_colours=True)


def build(**data: object) -> CloudEvent:
    payload = {
        "service": "shop",
        "version": "2.0.0",
        "artifact": "reg/shop:2.0.0",
        "tests": {"passed": 3, "failed": 0},
    } | data
    event = new_event(BuildCompleted.model_validate(payload), source="ci/test", subject="shop")
    return event.model_copy(update={"correlationid": event.id})


def release_planned(release_id: str = "r1", not_before: datetime | None = None) -> ReleasePlanned:
    return ReleasePlanned(
        release_id=release_id,
        service="shop",
        version="2.0.0",
        artifact="reg/shop:2.0.0",
        pipeline="default",
        environments=["dev", "production"],
        build={"tests": {"failed": 0}},
        not_before=not_before,
    )


def env_facts(
    name: str, problems: list[Reason] | None = None, outdated: str | None = None
) -> EnvironmentFacts:
    assert PIPELINE is not None
    plan, why = select_strategy(PIPELINE.environment(name), BOTH)
    return EnvironmentFacts(name, plan, why, problems or [], None, outdated, {"MODE": "x"})


def as_event(data: ReleasePlanned | DeploymentSucceeded) -> CloudEvent:
    return new_event(data, source="shiplog/test", subject="shop", correlationid="r1")


def kinds(events: list[CloudEvent]) -> list[str]:
    return [e.type_name.removeprefix("shiplog.") for e in events]


def test_a_build_with_a_pipeline_becomes_a_release_with_its_facts() -> None:
    event = build(not_before="2026-12-01T08:00:00Z")
    [planned] = decide(PlanningState(), event, now=NOW, facts=PlanningFacts(PIPELINE))
    release = REGISTRY.payload(planned, ReleasePlanned)
    assert release.environments == ["dev", "production"]
    assert release.build["tests"] == {"passed": 3, "failed": 0}
    assert release.not_before == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert planned.correlationid == event.id and planned.causationid == event.id
    assert stream_for(event) == f"release-{event.id}"


@pytest.mark.parametrize(
    ("pipeline", "data", "code", "field"),
    [
        (None, {}, "no_pipeline", "data.service"),
        (PIPELINE, {"pipeline": "hotfix"}, "unknown_pipeline", "data.pipeline"),
    ],
)
def test_a_build_without_its_pipeline_is_rejected_with_the_reason(pipeline, data, code, field) -> None:
    [rejected] = decide(PlanningState(), build(**data), now=NOW, facts=PlanningFacts(pipeline))
    [reason] = REGISTRY.payload(rejected, DeploymentRejected).reasons
    assert (reason.code, reason.field) == (code, field)


def test_a_build_is_planned_once() -> None:
    state = evolve(PlanningState(), as_event(release_planned()))
    assert decide(state, build(), now=NOW, facts=PlanningFacts(PIPELINE)) == []


def test_the_first_environment_is_planned_with_the_resolved_plan() -> None:
    event = as_event(release_planned())
    [planned] = decide(
        PlanningState(), event, now=NOW, facts=PlanningFacts(PIPELINE, release_planned(), env_facts("dev"))
    )
    plan = REGISTRY.payload(planned, DeploymentPlanned)
    assert plan.deployment_id == "shop.dev.r1" and plan.stage == 0
    assert plan.next_environment == "production" and plan.previous_environment is None
    assert [s.kind for s in plan.strategy.steps] == ["rolling", "analysis"]
    assert "rolling, as configured" in plan.strategy.reason
    assert plan.values == {"MODE": "x"} and len(plan.plan_hash) == 64
    assert stream_for(event) == "deployment-shop.dev.r1"


@pytest.mark.parametrize(
    ("problems", "outdated", "codes"),
    [
        ([Reason(code="secret", message="TOKEN unresolved", field="values.TOKEN")], None, ["secret"]),
        ([], "2.0.0 is older than 3.0.0", ["outdated"]),
        ([Reason(code="target", message="down")], "older", ["target", "outdated"]),
    ],
)
def test_a_deployment_that_fails_validation_is_rejected_with_every_reason(problems, outdated, codes) -> None:
    facts = PlanningFacts(PIPELINE, release_planned(), env_facts("dev", problems, outdated))
    [rejected] = decide(PlanningState(), as_event(release_planned()), now=NOW, facts=facts)
    assert [r.code for r in REGISTRY.payload(rejected, DeploymentRejected).reasons] == codes


@pytest.mark.parametrize(
    ("now", "expected_not_before"),
    [
        (datetime(2026, 11, 27, 10, 0, tzinfo=UTC), None),  # Friday 11:00 Berlin: open
        (datetime(2026, 11, 27, 18, 0, tzinfo=UTC), datetime(2026, 11, 30, 8, 0, tzinfo=UTC)),  # Monday 09:00
    ],
)
def test_a_closed_window_schedules_the_deployment_for_its_opening(now, expected_not_before) -> None:
    succeeded = as_event(
        DeploymentSucceeded(
            deployment_id="shop.dev.r1",
            release_id="r1",
            service="shop",
            environment="dev",
            version="2.0.0",
            next_environment="production",
        )
    )
    facts = PlanningFacts(PIPELINE, release_planned(), env_facts("production"))
    out = decide(PlanningState(), succeeded, now=now, facts=facts)
    plan = REGISTRY.payload(out[0], DeploymentPlanned)
    assert plan.environment == "production" and plan.previous_environment == "dev"
    assert plan.not_before == expected_not_before
    if expected_not_before is None:
        assert kinds(out) == ["deployment.planned"]
    else:
        assert kinds(out) == ["deployment.planned", "deployment.scheduled", "timer.scheduled"]
        assert REGISTRY.payload(out[1], DeploymentScheduled).not_before == expected_not_before
        timer = REGISTRY.payload(out[2], TimerScheduled)
        assert (timer.due_at, timer.purpose, timer.stream_id) == (
            expected_not_before,
            "window",
            "deployment-shop.production.r1",
        )
    assert stream_for(succeeded) == "deployment-shop.production.r1"


def test_a_not_before_time_from_the_build_is_kept() -> None:
    later = NOW + timedelta(hours=3)
    facts = PlanningFacts(PIPELINE, release_planned(not_before=later), env_facts("dev"))
    out = decide(PlanningState(), as_event(release_planned(not_before=later)), now=NOW, facts=facts)
    assert kinds(out) == ["deployment.planned", "deployment.scheduled", "timer.scheduled"]
    assert REGISTRY.payload(out[0], DeploymentPlanned).not_before == later


def test_the_last_environment_succeeding_plans_nothing() -> None:
    last = as_event(
        DeploymentSucceeded(
            deployment_id="shop.production.r1",
            release_id="r1",
            service="shop",
            environment="production",
            version="2.0.0",
        )
    )
    assert decide(PlanningState(), last, now=NOW, facts=PlanningFacts(None)) == []
    assert stream_for(last) == "release-r1"


def test_an_environment_is_planned_once() -> None:
    facts = PlanningFacts(PIPELINE, release_planned(), env_facts("dev"))
    [planned] = decide(PlanningState(), as_event(release_planned()), now=NOW, facts=facts)
    state = evolve(PlanningState(), planned)
    assert decide(state, as_event(release_planned()), now=NOW, facts=facts) == []


# -- targets without instances (serverless) --------------------------------------------

NO_INSTANCES = Capabilities(traffic_split=True, two_colours=True, instances=False)


def single_env(target: str, analysis: str = "") -> PipelineFile:
    text = f"""
service: shop
environments:
  - name: dev
    target: {{type: {target}, settings: {{function: shop-fn}}}}
    strategy: {{type: blue_green}}
{analysis}
"""
    pipeline, errors = parse_pipeline(text, "shop.yaml")
    assert pipeline is not None, errors
    return pipeline


def plan_of(pipeline: PipelineFile, capabilities: Capabilities) -> CloudEvent:
    plan, why = select_strategy(pipeline.environment("dev"), capabilities)
    facts = EnvironmentFacts("dev", plan, why, [], instances=capabilities.instances)
    release = release_planned().model_copy(update={"environments": ["dev"]})
    [event] = decide(
        PlanningState(), as_event(release), now=NOW, facts=PlanningFacts(pipeline, release, facts)
    )
    return event


@pytest.mark.parametrize(
    ("target", "capabilities", "analysis", "health", "note"),
    [
        # health left unset: none planned for a target without instances, and the plan says why
        ("lambda", NO_INSTANCES, "", None, True),
        ("lambda", NO_INSTANCES, "    analysis: {count: 2}", None, True),
        # health: null chosen by the pipeline: nothing to explain
        ("lambda", NO_INSTANCES, "    analysis: {health: null}", None, False),
        # a target with instances keeps the default health check
        ("local", BOTH, "", {"path": "/healthz"}, False),
    ],
)
def test_a_target_without_instances_is_planned_without_a_health_check(
    target: str, capabilities: Capabilities, analysis: str, health: dict[str, str] | None, note: bool
) -> None:
    plan = REGISTRY.payload(plan_of(single_env(target, analysis), capabilities), DeploymentPlanned)
    assert "health" in plan.analysis  # explicit: a missing key means the default check
    if health is None:
        assert plan.analysis["health"] is None
    else:
        assert plan.analysis["health"] is not None
        assert health.items() <= plan.analysis["health"].items()
    assert ("no health check" in plan.strategy.reason) is note
    if note:
        assert "'lambda' runs no instances" in plan.strategy.reason


@pytest.mark.parametrize("health", ["{}", "{path: /ping}"])
def test_a_health_check_configured_for_a_target_without_instances_is_rejected(health: str) -> None:
    pipeline = single_env("lambda", f"    analysis: {{health: {health}}}")
    [reason] = REGISTRY.payload(plan_of(pipeline, NO_INSTANCES), DeploymentRejected).reasons
    assert (reason.code, reason.field) == ("health", "analysis.health")
    assert "'lambda' runs no instances" in reason.message and "health check" in reason.message


async def test_gather_reads_whether_the_target_has_instances() -> None:
    """The lambda target declares no instances; gather hands that to the core."""
    assert LambdaTarget.capabilities.instances is False
    pipeline = single_env("lambda")

    class Lambda:
        capabilities = LambdaTarget.capabilities

        async def status(
            self, service: str, environment: str, settings: Mapping[str, Any] | None = None
        ) -> TargetStatus:
            return TargetStatus(service=service, environment=environment, reachable=True)

    ports = SimpleNamespace(
        pipelines={"shop": pipeline}, targets=lambda *_: Lambda(), lanes=None, config_dir=None
    )
    release = release_planned().model_copy(update={"environments": ["dev"]})
    facts = await gather(ports, PlanningState(), as_event(release))
    assert facts.env is not None and facts.env.instances is False and not facts.env.problems
