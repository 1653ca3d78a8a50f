"""The release coordinator: several services shipped as one saga (events/release.py).

Its stream is the release's, ``release-<id>``. It composes the release (from a
manifest, or from the last of the services' builds that name it), then walks the
environments in order: in each, a service is released to planning once every service
it depends on succeeded there; when the environment settles, the release concludes
there and — only if every service succeeded — goes on to the next.

When a service of the release is rolled back in an environment (its verification
failed, or a person rolled it back), exactly the services that depend on it, directly
or not, follow it there: a deployed dependant is asked to roll back
(``rollback.requested``, done by the rollback consumer), one that never started is
cancelled. Everything else is kept, and the conclusion says which is which:
``partially_rolled_back``.

The coordinator records only its own decisions; what became of each deployment it
released is read from that deployment's stream (``gather``), so a late rollback —
hours after the environment concluded — is seen as well as an early one.
"""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from consumers.contract import Consumer
from consumers.deployment import Status
from events.build import BuildCompleted
from events.deployment import (
    DeploymentDenied,
    DeploymentFailed,
    DeploymentRejected,
    DeploymentRolledBack,
    DeploymentSucceeded,
    Reason,
    deployment_id,
)
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.release import (
    RELEASE_ID,
    MemberCancelled,
    MemberRefused,
    MemberReleased,
    Outcome,
    ReleaseComposed,
    ReleaseConcluded,
    ReleaseManifest,
    ReleaseMemberBuilt,
    ReleaseRejected,
    ReleaseService,
    RollbackRequested,
)
from events.topics import APPROVALS, BUILDS, EXECUTIONS, PLANS, ROLLBACKS

NAME = "releases"
SOURCE = "shiplog/releases"

#: a deployment that ended without its version serving
_NOT_KEPT = frozenset({Status.ROLLED_BACK, Status.FAILED, Status.REJECTED, Status.DENIED})
_ENDED = frozenset({*_NOT_KEPT, Status.SUCCEEDED})
_TERMINAL_TYPES = (
    DeploymentSucceeded.TYPE,
    DeploymentRolledBack.TYPE,
    DeploymentFailed.TYPE,
    DeploymentRejected.TYPE,
    DeploymentDenied.TYPE,
)


def release_stream(release_id: str) -> str:
    return f"release-{release_id}"


def grouping(build: BuildCompleted) -> dict[str, Any] | None:
    """The multi-service release a build names in its data, if any:
    ``release: {id, services: [...], depends_on: [...]}``."""
    found = (build.model_extra or {}).get("release")
    return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class ReleaseState:
    composed: ReleaseComposed | None = None
    rejected: bool = False
    built: dict[str, ReleaseService] = field(default_factory=dict)
    #: the services the release's first build named (builds naming others are refused)
    expected: tuple[str, ...] = ()
    #: (service, environment) released to planning / cancelled / asked to roll back
    released: frozenset[tuple[str, str]] = frozenset()
    cancelled: frozenset[tuple[str, str]] = frozenset()
    rollback_requested: frozenset[tuple[str, str]] = frozenset()
    #: environment -> its last conclusion
    concluded: dict[str, ReleaseConcluded] = field(default_factory=dict)


def evolve(state: ReleaseState, event: CloudEvent) -> ReleaseState:
    name = event.type_name
    if name == ReleaseComposed.TYPE:
        return replace(state, composed=REGISTRY.payload(event, ReleaseComposed))
    if name == ReleaseRejected.TYPE:
        return replace(state, rejected=True)
    if name == ReleaseMemberBuilt.TYPE:
        built = REGISTRY.payload(event, ReleaseMemberBuilt)
        return replace(
            state,
            built={**state.built, built.member.service: built.member},
            expected=state.expected or tuple(sorted(built.services)),
        )
    if name == MemberReleased.TYPE:
        released = REGISTRY.payload(event, MemberReleased)
        return replace(state, released=state.released | {(released.service, released.environment)})
    if name == MemberCancelled.TYPE:
        cancelled = REGISTRY.payload(event, MemberCancelled)
        return replace(state, cancelled=state.cancelled | {(cancelled.service, cancelled.environment)})
    if name == RollbackRequested.TYPE:
        asked = REGISTRY.payload(event, RollbackRequested)
        return replace(
            state, rollback_requested=state.rollback_requested | {(asked.service, asked.environment)}
        )
    if name == ReleaseConcluded.TYPE:
        concluded = REGISTRY.payload(event, ReleaseConcluded)
        return replace(state, concluded={**state.concluded, concluded.environment: concluded})
    return state


@dataclass(frozen=True)
class PipelineFacts:
    """For composing: per service, its pipeline's name and environments in order
    (None: the service has no pipeline)."""

    pipelines: dict[str, tuple[str, list[str]] | None]


@dataclass(frozen=True)
class ProgressFacts:
    """For progressing: the status of every deployment the release has released."""

    statuses: dict[tuple[str, str], Status]


def _group_id(build_event: CloudEvent) -> str:
    """The release a build names, if its id is a valid one; else the build's own."""
    group = grouping(REGISTRY.payload(build_event, BuildCompleted)) or {}
    named = str(group.get("id") or "")
    return named if re.fullmatch(RELEASE_ID, named) else build_event.correlationid or build_event.id


def stream_for(event: CloudEvent) -> str:
    name = event.type_name
    if name == ReleaseManifest.TYPE:
        return release_stream(REGISTRY.payload(event, ReleaseManifest).release_id)
    if name == BuildCompleted.TYPE:
        return release_stream(_group_id(event))
    return release_stream(event.correlationid or event.subject)


def decide(
    state: ReleaseState,
    event: CloudEvent,
    *,
    now: datetime,
    facts: PipelineFacts | ProgressFacts | None = None,
) -> list[CloudEvent]:
    del now
    name = event.type_name
    if name == ReleaseManifest.TYPE:
        if state.composed is not None or state.rejected or not isinstance(facts, PipelineFacts):
            return []
        manifest = REGISTRY.payload(event, ReleaseManifest)
        return _compose(manifest.release_id, manifest.services, facts, event)
    if name == BuildCompleted.TYPE:
        return _member_built(state, event, facts)
    if state.composed is None or not isinstance(facts, ProgressFacts):
        return []
    return _progress(state, state.composed, facts, event)


# -- composing ------------------------------------------------------------------------


def member_of_build(build: BuildCompleted) -> ReleaseService:
    group = grouping(build) or {}
    return ReleaseService(
        service=build.service,
        version=build.version,
        artifact=build.artifact,
        digest=build.digest,
        pipeline=build.pipeline,
        depends_on=[str(d) for d in group.get("depends_on") or []],
        commit=build.commit,
        branch=build.branch,
        author=build.author,
        tests=build.tests.model_dump(mode="json") if build.tests else None,
        security=build.security.model_dump(mode="json") if build.security else None,
    )


def _member_built(state: ReleaseState, event: CloudEvent, facts: Any) -> list[CloudEvent]:
    build = REGISTRY.payload(event, BuildCompleted)
    raw = (build.model_extra or {}).get("release")
    if raw is None or state.composed is not None or state.rejected:
        return []
    group = grouping(build) or {}
    release_id = str(group.get("id") or "")
    services = [str(s) for s in group.get("services") or []]
    if not isinstance(raw, dict) or not re.fullmatch(RELEASE_ID, release_id) or build.service not in services:
        reason = Reason(
            code="bad_release",
            field="data.release",
            message="a build that names a release gives `release: {id, services, depends_on}`, "
            f"an id matching {RELEASE_ID} and its own service among the services (got {raw!r})",
        )
        rejected = ReleaseRejected(release_id=_group_id(event), reasons=[reason])
        return [new_event(rejected, **_envelope(rejected.release_id, event))]
    envelope = _envelope(release_id, event)
    if build.service in state.built:
        return []
    if state.expected and tuple(sorted(services)) != state.expected:
        refused = MemberRefused(
            release_id=release_id,
            service=build.service,
            reason=f"the build lists services {sorted(services)}; the release's first build listed "
            f"{list(state.expected)}",
        )
        return [new_event(refused, **envelope)]
    member = member_of_build(build)
    out = [new_event(ReleaseMemberBuilt(release_id=release_id, member=member, services=services), **envelope)]
    built = {**state.built, member.service: member}
    if set(services) <= set(built) and isinstance(facts, PipelineFacts):
        out += _compose(release_id, [built[s] for s in services], facts, event)
    return out


def _compose(
    release_id: str, members: list[ReleaseService], facts: PipelineFacts, cause: CloudEvent
) -> list[CloudEvent]:
    envelope = _envelope(release_id, cause)
    names = {m.service for m in members}
    reasons: list[Reason] = []
    envs_of: dict[str, list[str]] = {}
    for m in members:
        for dep in m.depends_on:
            if dep not in names or dep == m.service:
                reasons.append(
                    Reason(
                        code="unknown_dependency",
                        field=f"services.{m.service}.depends_on",
                        message=f"{m.service} depends on {dep!r}, which is "
                        + ("itself" if dep == m.service else "not a service of this release"),
                    )
                )
        found = facts.pipelines.get(m.service)
        if found is None:
            reasons.append(
                Reason(
                    code="no_pipeline", field=f"services.{m.service}", message=f"no pipeline for {m.service}"
                )
            )
            continue
        pipeline, environments = found
        if pipeline != m.pipeline:
            reasons.append(
                Reason(
                    code="unknown_pipeline",
                    field=f"services.{m.service}.pipeline",
                    message=f"{m.service} has pipeline {pipeline!r}, the release asks for {m.pipeline!r}",
                )
            )
        envs_of[m.service] = environments
    waves = _waves(members, reasons)
    environments = _environment_order(members, envs_of, reasons)
    if reasons:
        return [new_event(ReleaseRejected(release_id=release_id, reasons=reasons), **envelope)]
    composed = ReleaseComposed(
        release_id=release_id,
        services=members,
        environments=environments,
        service_environments=envs_of,
        waves=waves,
    )
    out = [new_event(composed, **envelope)]
    state = ReleaseState(composed=composed)
    return out + _release_ready(state, composed, environments[0], {}, cause)


def _waves(members: list[ReleaseService], reasons: list[Reason]) -> list[list[str]]:
    names = {m.service for m in members}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for m in members:
        sorter.add(m.service, *(d for d in m.depends_on if d in names and d != m.service))
    waves: list[list[str]] = []
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        reasons.append(
            Reason(code="cycle", field="services.depends_on", message=f"dependency cycle: {cycle}")
        )
        return waves
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        waves.append(ready)
        sorter.done(*ready)
    return waves


def _environment_order(
    members: list[ReleaseService], envs_of: dict[str, list[str]], reasons: list[Reason]
) -> list[str]:
    """Every member's environments in one order that keeps each pipeline's own."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    first_seen: dict[str, int] = {}
    for m in members:
        envs = envs_of.get(m.service, [])
        for i, env in enumerate(envs):
            first_seen.setdefault(env, len(first_seen))
            sorter.add(env, *envs[:i])
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        reasons.append(
            Reason(
                code="environment_order",
                field="services",
                message="the services' pipelines order environments differently: " + " -> ".join(exc.args[1]),
            )
        )
        return []
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=first_seen.__getitem__)
        order += ready
        sorter.done(*ready)
    return order


# -- progressing ----------------------------------------------------------------------


def _progress(
    state: ReleaseState, composed: ReleaseComposed, facts: ProgressFacts, cause: CloudEvent
) -> list[CloudEvent]:
    out: list[CloudEvent] = []
    for env in composed.environments:
        started = any(e == env for _, e in state.released | state.cancelled)
        if not started:
            continue
        new = _settle(state, composed, env, facts.statuses, cause)
        out += new
        state = _fold(state, new)
    return out


def _members_in(composed: ReleaseComposed, env: str) -> list[ReleaseService]:
    return [m for m in composed.services if env in composed.service_environments.get(m.service, [])]


def _dependants(composed: ReleaseComposed, env: str, failed: set[str]) -> set[str]:
    """Every service in ``env`` that depends, directly or not, on one in ``failed``."""
    members = _members_in(composed, env)
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for m in members:
            if m.service not in out and m.service not in failed and set(m.depends_on) & (failed | out):
                out.add(m.service)
                grew = True
    return out


def _settle(
    state: ReleaseState,
    composed: ReleaseComposed,
    env: str,
    statuses: dict[tuple[str, str], Status],
    cause: CloudEvent,
) -> list[CloudEvent]:
    release_id = composed.release_id
    envelope = _envelope(release_id, cause)
    members = _members_in(composed, env)
    status = {m.service: statuses.get((m.service, env)) for m in members}
    failed = {s for s, st in status.items() if st in _NOT_KEPT}
    following = _dependants(composed, env, failed)
    blocked = _not_succeeded_before(state, composed, env)
    out: list[CloudEvent] = []
    for m in members:
        key = (m.service, env)
        if key in state.released or key in state.cancelled:
            continue
        if blocked is not None or m.service in following:
            causes = sorted(set(m.depends_on) & (failed | following))
            reason = (
                f"the release did not succeed in {blocked}"
                if blocked is not None
                else f"{causes[0] if causes else 'a dependency'} did not succeed in {env}"
            )
            out.append(
                new_event(
                    MemberCancelled(release_id=release_id, service=m.service, environment=env, reason=reason),
                    **envelope,
                )
            )
    for dependant in sorted(following):
        key = (dependant, env)
        current = status.get(dependant)
        # not planned yet (None): its own terminal event brings it back here
        if key not in state.released or key in state.rollback_requested or current is None:
            continue
        if current in _NOT_KEPT:
            continue
        causes = sorted(set(composed.member(dependant).depends_on) & (failed | following))
        because = causes[0] if causes else ""
        out.append(
            new_event(
                RollbackRequested(
                    deployment_id=deployment_id(dependant, env, release_id),
                    release_id=release_id,
                    service=dependant,
                    environment=env,
                    reason=f"{because}, which it depends on, was not kept in {env}",
                    because_of=because,
                ),
                source=SOURCE,
                subject=deployment_id(dependant, env, release_id),
                correlationid=release_id,
                causationid=cause.id,
            )
        )
    state = _fold(state, out)
    ready = [] if blocked is not None else _release_ready(state, composed, env, status, cause)
    state = _fold(state, ready)
    return out + ready + _conclude(state, composed, env, status, cause)


def _not_succeeded_before(state: ReleaseState, composed: ReleaseComposed, env: str) -> str | None:
    """An earlier environment where the release, as last concluded, did not succeed
    (a late rollback there): the release goes no further."""
    for earlier in composed.environments[: composed.environments.index(env)]:
        concluded = state.concluded.get(earlier)
        if concluded is not None and concluded.outcome != "succeeded":
            return earlier
    return None


def _fold(state: ReleaseState, events: list[CloudEvent]) -> ReleaseState:
    for e in events:
        state = evolve(state, e)
    return state


def _release_ready(
    state: ReleaseState,
    composed: ReleaseComposed,
    env: str,
    status: dict[str, Status | None],
    cause: CloudEvent,
) -> list[CloudEvent]:
    """Release to planning every service of ``env`` whose dependencies there succeeded."""
    in_env = {m.service for m in _members_in(composed, env)}
    out = []
    for m in _members_in(composed, env):
        key = (m.service, env)
        if key in state.released or key in state.cancelled:
            continue
        deps = [d for d in m.depends_on if d in in_env]
        if all(status.get(d) is Status.SUCCEEDED for d in deps):
            out.append(
                new_event(
                    MemberReleased(
                        release_id=composed.release_id,
                        service=m.service,
                        environment=env,
                        member=m,
                        environments=composed.service_environments[m.service],
                        after=deps,
                    ),
                    **_envelope(composed.release_id, cause),
                )
            )
    return out


def _conclude(
    state: ReleaseState,
    composed: ReleaseComposed,
    env: str,
    status: dict[str, Status | None],
    cause: CloudEvent,
) -> list[CloudEvent]:
    members = [m.service for m in _members_in(composed, env)]
    cancelled = sorted(s for s in members if (s, env) in state.cancelled)
    ended = {s: status.get(s) for s in members if (s, env) in state.released}
    if len(ended) + len(cancelled) < len(members) or any(st not in _ENDED for st in ended.values()):
        return []
    # a rollback asked of a dependant must have happened before the release concludes
    if any(ended.get(s) is Status.SUCCEEDED for s, e in state.rollback_requested if e == env):
        return []
    # a dependant asked to roll back before it changed anything (awaiting approval,
    # say) ends failed without having run: to people, it was cancelled
    stopped = {s for s, st in ended.items() if st is Status.FAILED and (s, env) in state.rollback_requested}
    cancelled = sorted({*cancelled, *stopped})
    kept = sorted(s for s, st in ended.items() if st is Status.SUCCEEDED)
    rolled_back = sorted(s for s, st in ended.items() if st is Status.ROLLED_BACK)
    failed = sorted(
        s
        for s, st in ended.items()
        if st in (Status.FAILED, Status.REJECTED, Status.DENIED) and s not in stopped
    )
    outcome: Outcome
    if len(kept) == len(members):
        outcome = "succeeded"
    elif kept:
        outcome = "partially_rolled_back"
    elif rolled_back:
        outcome = "rolled_back"
    else:
        outcome = "failed"
    index = composed.environments.index(env)
    is_last = index == len(composed.environments) - 1
    conclusion = ReleaseConcluded(
        release_id=composed.release_id,
        environment=env,
        outcome=outcome,
        kept=kept,
        rolled_back=rolled_back,
        cancelled=cancelled,
        failed=failed,
        continues=outcome == "succeeded" and not is_last,
    )
    previous = state.concluded.get(env)
    if previous is not None and previous.model_dump(exclude={"continues"}) == conclusion.model_dump(
        exclude={"continues"}
    ):
        return []
    out = [new_event(conclusion, **_envelope(composed.release_id, cause))]
    next_started = not is_last and any(
        e == composed.environments[index + 1] for _, e in state.released | state.cancelled
    )
    if conclusion.continues and previous is None and not next_started:
        out += _release_ready(state, composed, composed.environments[index + 1], {}, cause)
    return out


def _envelope(release_id: str, cause: CloudEvent) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "subject": f"release/{release_id}",
        "correlationid": release_id,
        "causationid": cause.id,
    }


def _consumer() -> Consumer[ReleaseState]:
    from consumers.planning.release_gather import gather

    return Consumer(
        name=NAME,
        topics=(BUILDS.name, PLANS.name, APPROVALS.name, EXECUTIONS.name, ROLLBACKS.name),
        stream_for=stream_for,
        initial=ReleaseState,
        evolve=evolve,
        decide=decide,
        accepts=(ReleaseManifest.TYPE, BuildCompleted.TYPE, *_TERMINAL_TYPES),
        gather=gather,
        description="deploys the services of a multi-service release in dependency order; "
        "rolls back a failed service's dependants and keeps the rest",
    )


RELEASES = _consumer()
