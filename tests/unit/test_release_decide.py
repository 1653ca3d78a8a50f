"""The release coordinator's decisions (consumers/planning/releases.py), pure: a
three-service release schema <- api <- web plus, where it matters, an independent
service."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers.deployment import Status
from consumers.planning.releases import (
    PipelineFacts,
    ProgressFacts,
    ReleaseState,
    decide,
    evolve,
    stream_for,
)
from events.build import BuildCompleted
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.release import (
    MemberCancelled,
    MemberReleased,
    ReleaseComposed,
    ReleaseConcluded,
    ReleaseManifest,
    ReleaseMemberBuilt,
    ReleaseRejected,
    ReleaseService,
    RollbackRequested,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
ENVS = ["dev", "staging", "production"]
PIPELINES = PipelineFacts({s: ("default", ENVS) for s in ("schema", "api", "web", "docs")})


def service(name: str, *depends_on: str) -> ReleaseService:
    return ReleaseService(
        service=name, version="2.0.0", artifact=f"registry/{name}:2.0.0", depends_on=list(depends_on)
    )


CHAIN = [service("schema"), service("api", "schema"), service("web", "api")]


def manifest(*services: ReleaseService, release_id: str = "r42") -> CloudEvent:
    return new_event(
        ReleaseManifest(release_id=release_id, services=list(services)),
        source="ci/test",
        subject=f"release/{release_id}",
    )


def terminal(service_: str, env: str) -> CloudEvent:
    """Any terminal deployment event: the coordinator reads the status from the
    deployment's stream (the facts), not from the event."""
    return new_event(
        REGISTRY.model_for("shiplog.deployment.failed.v1")(deployment_id=f"{service_}.{env}.r42", reason="x"),
        source="test",
        subject=f"{service_}.{env}.r42",
        correlationid="r42",
    )


def run(state: ReleaseState, event: CloudEvent, facts: object) -> tuple[ReleaseState, list[CloudEvent]]:
    out = decide(state, event, now=NOW, facts=facts)  # type: ignore[arg-type]
    for e in out:
        state = evolve(state, e)
    return state, out


def names(events: list[CloudEvent], kind: type) -> list[tuple[str, ...]]:
    found = []
    for e in events:
        if e.type_name != kind.TYPE:  # type: ignore[attr-defined]
            continue
        p = REGISTRY.payload(e, kind)
        if isinstance(p, MemberReleased | MemberCancelled):
            found.append((p.service, p.environment))
        elif isinstance(p, RollbackRequested):
            found.append((p.deployment_id,))
    return found


def conclusion(events: list[CloudEvent]) -> ReleaseConcluded | None:
    found = [REGISTRY.payload(e, ReleaseConcluded) for e in events if e.type_name == ReleaseConcluded.TYPE]
    return found[-1] if found else None


def composed_state(*services: ReleaseService) -> tuple[ReleaseState, list[CloudEvent]]:
    return run(ReleaseState(), manifest(*services), PIPELINES)


def through(
    state: ReleaseState, statuses: dict[tuple[str, str], Status], *, who: tuple[str, str]
) -> tuple[ReleaseState, list[CloudEvent]]:
    return run(state, terminal(*who), ProgressFacts(statuses))


def test_a_manifest_composes_the_release_in_dependency_waves_and_releases_the_first() -> None:
    state, out = composed_state(*CHAIN, service("docs"))
    composed = REGISTRY.payload(out[0], ReleaseComposed)
    assert composed.waves == [["docs", "schema"], ["api"], ["web"]]
    assert composed.environments == ENVS
    assert names(out, MemberReleased) == [("schema", "dev"), ("docs", "dev")]
    assert stream_for(out[0]) == "release-r42"
    # the same manifest again (a redelivery) changes nothing
    assert run(state, manifest(*CHAIN, service("docs")), PIPELINES)[1] == []


def test_a_cycle_an_unknown_dependency_and_a_service_without_pipeline_reject_the_release() -> None:
    facts = PipelineFacts({"schema": ("default", ENVS), "api": ("default", ENVS), "web": None})
    _, out = run(
        ReleaseState(),
        manifest(service("schema", "api"), service("api", "schema"), service("web", "nope")),
        facts,
    )
    assert [e.type_name for e in out] == [ReleaseRejected.TYPE]
    codes = {r.code for r in REGISTRY.payload(out[0], ReleaseRejected).reasons}
    assert codes == {"cycle", "unknown_dependency", "no_pipeline"}


def test_each_service_waits_for_its_dependencies_and_the_release_moves_on_when_all_succeeded() -> None:
    state, _ = composed_state(*CHAIN)
    statuses = {("schema", "dev"): Status.SUCCEEDED}
    state, out = through(state, statuses, who=("schema", "dev"))
    assert names(out, MemberReleased) == [("api", "dev")]
    statuses[("api", "dev")] = Status.RUNNING
    assert through(state, statuses, who=("schema", "dev"))[1] == []  # nothing new: idempotent
    statuses[("api", "dev")] = Status.SUCCEEDED
    state, out = through(state, statuses, who=("api", "dev"))
    assert names(out, MemberReleased) == [("web", "dev")]
    statuses[("web", "dev")] = Status.SUCCEEDED
    state, out = through(state, statuses, who=("web", "dev"))
    done = conclusion(out)
    assert done is not None and done.outcome == "succeeded" and done.continues
    assert names(out, MemberReleased) == [("schema", "staging")]


def test_the_middle_service_failing_cancels_its_dependant_and_keeps_the_rest() -> None:
    state, _ = composed_state(*CHAIN, service("docs"))
    statuses = {("schema", "dev"): Status.SUCCEEDED, ("docs", "dev"): Status.SUCCEEDED}
    state, _ = through(state, statuses, who=("schema", "dev"))
    statuses[("api", "dev")] = Status.ROLLED_BACK
    state, out = through(state, statuses, who=("api", "dev"))
    assert names(out, MemberCancelled) == [("web", "dev")]
    assert names(out, MemberReleased) == []
    done = conclusion(out)
    assert done is not None
    assert (done.outcome, done.kept, done.rolled_back, done.cancelled) == (
        "partially_rolled_back",
        ["docs", "schema"],
        ["api"],
        ["web"],
    )
    assert not done.continues
    # the release does not go on to staging; a redelivery adds nothing
    assert through(state, statuses, who=("api", "dev"))[1] == []


def test_a_late_rollback_rolls_back_the_deployed_dependants_and_concludes_again() -> None:
    state, _ = composed_state(*CHAIN)
    statuses: dict[tuple[str, str], Status] = {}
    for s in ("schema", "api", "web"):
        statuses[(s, "dev")] = Status.SUCCEEDED
        state, out = through(state, statuses, who=(s, "dev"))
    assert conclusion(out) is not None
    # a person rolls api back in dev after the release moved on
    statuses[("api", "dev")] = Status.ROLLED_BACK
    state, out = through(state, statuses, who=("api", "dev"))
    assert names(out, RollbackRequested) == [("web.dev.r42",)]
    assert conclusion(out) is None  # web has not rolled back yet
    statuses[("web", "dev")] = Status.ROLLED_BACK
    state, out = through(state, statuses, who=("web", "dev"))
    done = conclusion(out)
    assert done is not None
    assert (done.outcome, done.kept, done.rolled_back) == (
        "partially_rolled_back",
        ["schema"],
        ["api", "web"],
    )
    assert names(out, RollbackRequested) == []  # asked once


def test_services_with_fewer_environments_skip_them_and_dependencies_outside_an_environment_hold() -> None:
    facts = PipelineFacts(
        {"schema": ("default", ["staging", "production"]), "api": ("default", ENVS), "web": ("default", ENVS)}
    )
    _, out = run(ReleaseState(), manifest(*CHAIN), facts)
    composed = REGISTRY.payload(out[0], ReleaseComposed)
    assert composed.environments == ENVS
    # in dev, api's dependency (schema) does not deploy there: api goes first
    assert names(out, MemberReleased) == [("api", "dev")]


def test_builds_naming_a_release_compose_it_when_the_last_one_arrives() -> None:
    def build(name: str, *deps: str) -> CloudEvent:
        data = {"release": {"id": "r42", "services": ["schema", "api"], "depends_on": list(deps)}}
        return new_event(
            BuildCompleted(service=name, version="2.0.0", artifact=f"a/{name}", **data),  # type: ignore[arg-type]
            source="ci",
            subject=name,
        )

    first = build("schema")
    assert stream_for(first) == "release-r42"
    state, out = run(ReleaseState(), first, PIPELINES)
    assert [e.type_name for e in out] == [ReleaseMemberBuilt.TYPE]
    state, out = run(state, build("api", "schema"), PIPELINES)
    assert [e.type_name for e in out][:2] == [ReleaseMemberBuilt.TYPE, ReleaseComposed.TYPE]
    assert names(out, MemberReleased) == [("schema", "dev")]


def test_a_dependant_not_yet_planned_is_asked_to_roll_back_once_it_has_a_deployment() -> None:
    state, _ = composed_state(*CHAIN)
    statuses: dict[tuple[str, str], Status] = {("schema", "dev"): Status.SUCCEEDED}
    state, _ = through(state, statuses, who=("schema", "dev"))
    statuses[("api", "dev")] = Status.SUCCEEDED
    state, _ = through(state, statuses, who=("api", "dev"))  # web released, not planned yet
    statuses[("api", "dev")] = Status.ROLLED_BACK  # a person rolls api back at once
    state, out = through(state, statuses, who=("api", "dev"))
    assert names(out, RollbackRequested) == []  # nothing to roll back yet: asking now would be lost
    statuses[("web", "dev")] = Status.SUCCEEDED
    state, out = through(state, statuses, who=("web", "dev"))
    assert names(out, RollbackRequested) == [("web.dev.r42",)]


def test_a_late_rollback_in_an_earlier_environment_stops_the_release_going_further() -> None:
    state, _ = composed_state(*CHAIN)
    statuses: dict[tuple[str, str], Status] = {}
    for s in ("schema", "api", "web"):
        statuses[(s, "dev")] = Status.SUCCEEDED
        state, out = through(state, statuses, who=(s, "dev"))
    assert names(out, MemberReleased) == [("schema", "staging")]
    statuses[("schema", "staging")] = Status.RUNNING
    # schema is rolled back in dev while it deploys to staging: api and web follow in dev,
    # and the release releases nothing more in staging
    statuses[("schema", "dev")] = Status.ROLLED_BACK
    state, out = through(state, statuses, who=("schema", "dev"))
    assert sorted(names(out, RollbackRequested)) == [("api.dev.r42",), ("web.dev.r42",)]
    statuses[("api", "dev")] = statuses[("web", "dev")] = Status.ROLLED_BACK
    statuses[("schema", "staging")] = Status.SUCCEEDED
    state, out = through(state, statuses, who=("web", "dev"))
    assert names(out, MemberReleased) == []
    assert sorted(names(out, MemberCancelled)) == [("api", "staging"), ("web", "staging")]


def test_a_build_listing_other_services_is_refused_alone_and_a_malformed_release_is_rejected() -> None:
    from events.release import MemberRefused

    def build(name: str, release: object) -> CloudEvent:
        return new_event(
            BuildCompleted(service=name, version="2.0.0", artifact=f"a/{name}", release=release),  # type: ignore[call-arg]
            source="ci",
            subject=name,
        )

    state, _ = run(ReleaseState(), build("schema", {"id": "r42", "services": ["schema", "api"]}), PIPELINES)
    stray = build("web", {"id": "r42", "services": ["schema", "web"]})
    state, out = run(state, stray, PIPELINES)
    assert [e.type_name for e in out] == [MemberRefused.TYPE]
    assert not state.rejected
    _, out = run(ReleaseState(), build("api", "r42"), PIPELINES)
    assert [e.type_name for e in out] == [ReleaseRejected.TYPE]
    _, out = run(ReleaseState(), build("api", {"id": "../r42", "services": ["api"]}), PIPELINES)
    assert [e.type_name for e in out] == [ReleaseRejected.TYPE]


def test_a_dependant_stopped_before_it_ran_is_listed_as_cancelled() -> None:
    state, _ = composed_state(*CHAIN)
    statuses: dict[tuple[str, str], Status] = {("schema", "dev"): Status.SUCCEEDED}
    state, _ = through(state, statuses, who=("schema", "dev"))
    statuses[("api", "dev")] = Status.SUCCEEDED
    state, _ = through(state, statuses, who=("api", "dev"))
    statuses[("web", "dev")] = Status.AWAITING_APPROVAL
    statuses[("api", "dev")] = Status.ROLLED_BACK
    state, out = through(state, statuses, who=("api", "dev"))
    assert names(out, RollbackRequested) == [("web.dev.r42",)]
    statuses[("web", "dev")] = Status.FAILED  # the rollback consumer: nothing to restore
    _, out = through(state, statuses, who=("web", "dev"))
    done = conclusion(out)
    assert done is not None
    assert (done.kept, done.rolled_back, done.cancelled, done.failed) == (["schema"], ["api"], ["web"], [])
