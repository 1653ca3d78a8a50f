"""What runs where, and what is in progress: a read model computed from the log.

``deployment_status(log, service)`` reads every deployment stream (of one service,
or all) in one query, folds each with the same ``consumers.deployment.fold`` the
saga consumers decide against, and reports per (service, environment):

- the version serving: that of the last ``deployment.succeeded``, or the version a
  later ``deployment.rolled_back`` restored (its ``to_version``) — whichever is last
  in the log's global order;
- the deployments in progress (not terminal): status, version, the current step
  of the plan's steps, and why one is paused.

``find_deployment(log, service, environment)`` turns ``SERVICE --env ENV`` into a
deployment id for the commands that act on one deployment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from adapters.eventlog.postgres import PostgresEventLog
from adapters.eventlog.records import RawRecord
from consumers.deployment import DeploymentState, Status, fold
from events.deployment import DeploymentPlanned, DeploymentRolledBack, DeploymentSucceeded, deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY

STREAM_PREFIX = deployment_stream("")
#: statuses of a deployment that is changing its target right now
EXECUTING = frozenset({Status.RUNNING, Status.PAUSED, Status.ROLLING_BACK})


@dataclass(frozen=True)
class Serving:
    """What serves in one environment, and which event says so."""

    #: None: a rollback restored "nothing ran before"
    version: str | None
    deployment_id: str
    via: Literal["succeeded", "rolled_back"]
    since: datetime
    #: for a rollback: whether the restored state passed its health checks
    healthy: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "deployment_id": self.deployment_id,
            "via": self.via,
            "since": self.since.isoformat(),
            "healthy": self.healthy,
        }


@dataclass(frozen=True)
class InProgress:
    """One deployment that has not reached a terminal event."""

    deployment_id: str
    release_id: str
    service: str
    environment: str
    version: str
    status: Status
    #: index (0-based, as in the events) of the step started last; None before the first
    step_index: int | None
    steps_total: int
    step_kind: str | None
    step_weight: int | None
    paused_reason: str | None
    not_before: datetime | None
    approvers: tuple[str, ...]
    planned_at: datetime
    updated_at: datetime
    #: the open approval request, when one waits: level, roles, quorum, counted so
    #: far, who may not approve, what it is bound to, when it expires
    approval: dict[str, Any] | None = None

    @property
    def step_label(self) -> str:
        """``3/5 set_weight 50%``, or ``0/5`` before the first step."""
        if self.step_index is None:
            return f"0/{self.steps_total}"
        label = f"{self.step_index + 1}/{self.steps_total} {self.step_kind}"
        return f"{label} {self.step_weight}%" if self.step_weight is not None else label

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "release_id": self.release_id,
            "service": self.service,
            "environment": self.environment,
            "version": self.version,
            "status": self.status.value,
            "step": {
                "index": self.step_index,
                "total": self.steps_total,
                "kind": self.step_kind,
                "weight": self.step_weight,
                "label": self.step_label,
            },
            "paused_reason": self.paused_reason,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "approvers": list(self.approvers),
            "approval": self.approval,
            "planned_at": self.planned_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class EnvironmentStatus:
    service: str
    environment: str
    #: the environment's index in its pipeline (from the last plan), for ordering
    stage: int | None
    serving: Serving | None
    in_progress: list[InProgress] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "stage": self.stage,
            "serving": self.serving.to_dict() if self.serving else None,
            "in_progress": [d.to_dict() for d in self.in_progress],
        }


@dataclass(frozen=True)
class StatusReport:
    """Per (service, environment), ordered by service, then pipeline stage."""

    environments: list[EnvironmentStatus]

    def get(self, service: str, environment: str) -> EnvironmentStatus | None:
        for env in self.environments:
            if (env.service, env.environment) == (service, environment):
                return env
        return None

    @property
    def in_progress(self) -> list[InProgress]:
        return [d for env in self.environments for d in env.in_progress]

    def pending_approvals(self) -> list[InProgress]:
        return [d for d in self.in_progress if d.status is Status.AWAITING_APPROVAL]

    def to_dict(self) -> dict[str, Any]:
        return {"environments": [env.to_dict() for env in self.environments]}


# -- reading ------------------------------------------------------------------------


@dataclass
class _Stream:
    stream_id: str
    first_position: int
    planned_at: datetime
    events: list[CloudEvent] = field(default_factory=list)
    last_position: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class _Folded:
    stream_id: str
    state: DeploymentState
    plan: DeploymentPlanned
    first_position: int
    last_position: int
    planned_at: datetime
    updated_at: datetime


@dataclass
class _Loaded:
    folded: list[_Folded]
    #: (service, environment) -> (position, Serving)
    serving: dict[tuple[str, str], tuple[int, Serving]]


async def _rows(log: PostgresEventLog, stream_prefix: str) -> list[RawRecord]:
    """Every event of the deployment streams whose id starts with ``stream_prefix``,
    in global order: one query."""
    return [row async for row in log.scan(stream_prefix=stream_prefix)]


def _serving_from(event: CloudEvent, recorded_at: datetime) -> tuple[tuple[str, str], Serving] | None:
    name = event.type_name
    if name == DeploymentSucceeded.TYPE:
        ok = REGISTRY.payload(event, DeploymentSucceeded)
        return (ok.service, ok.environment), Serving(ok.version, ok.deployment_id, "succeeded", recorded_at)
    if name == DeploymentRolledBack.TYPE:
        back = REGISTRY.payload(event, DeploymentRolledBack)
        return (back.service, back.environment), Serving(
            back.to_version, back.deployment_id, "rolled_back", recorded_at, healthy=back.healthy
        )
    return None


async def _load(log: PostgresEventLog, stream_prefix: str) -> _Loaded:
    streams: dict[str, _Stream] = {}
    serving: dict[tuple[str, str], tuple[int, Serving]] = {}
    for raw in await _rows(log, stream_prefix):
        event = log.decode(raw).event
        stream = streams.get(raw.stream_id)
        if stream is None:
            stream = streams[raw.stream_id] = _Stream(raw.stream_id, raw.position, raw.recorded_at)
        stream.events.append(event)
        stream.last_position = raw.position
        stream.updated_at = raw.recorded_at
        found = _serving_from(event, raw.recorded_at)
        if found is not None:
            serving[found[0]] = (raw.position, found[1])
    folded = []
    for stream in streams.values():
        state = fold(stream.events)
        if state.plan is None:
            continue  # not (yet) a deployment: nothing planned in it
        assert stream.updated_at is not None
        folded.append(
            _Folded(
                stream.stream_id,
                state,
                state.plan,
                stream.first_position,
                stream.last_position,
                stream.planned_at,
                stream.updated_at,
            )
        )
    return _Loaded(folded, serving)


def _in_progress(f: _Folded) -> InProgress:
    state, plan = f.state, f.plan
    record = state.step(state.current) if state.current is not None else None
    step = record.step if record is not None else None
    return InProgress(
        deployment_id=plan.deployment_id,
        release_id=plan.release_id,
        service=plan.service,
        environment=plan.environment,
        version=plan.version,
        status=state.status,
        step_index=state.current,
        steps_total=len(plan.strategy.steps),
        step_kind=step.kind if step is not None else None,
        step_weight=step.weight if step is not None else None,
        paused_reason=state.paused_reason if state.status is Status.PAUSED else None,
        not_before=state.not_before,
        approvers=state.approvers,
        planned_at=f.planned_at,
        updated_at=f.updated_at,
        approval=_open_request(state),
    )


def _open_request(state: DeploymentState) -> dict[str, Any] | None:
    progress = state.approval
    if state.status is not Status.AWAITING_APPROVAL or progress is None or not progress.open:
        return None
    request = progress.request
    return {
        "level": request.level,
        "level_index": request.level_index,
        "levels": request.levels,
        "roles": request.roles,
        "approvers": request.approvers,
        "quorum": request.quorum,
        "counted": list(progress.counted.get(request.level_index, ())),
        "excluded": request.excluded,
        "plan_hash": request.plan_hash,
        "digest": request.digest,
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
        "why": request.why,
    }


def _report(loaded: _Loaded, service: str | None) -> StatusReport:
    stages: dict[tuple[str, str], int] = {}
    active: dict[tuple[str, str], list[InProgress]] = {}
    for f in loaded.folded:
        if service is not None and f.plan.service != service:
            continue
        key = (f.plan.service, f.plan.environment)
        stages[key] = f.plan.stage  # the last plan's stage (the pipeline may have changed)
        if not f.state.terminal:
            active.setdefault(key, []).append(_in_progress(f))
    keys: set[tuple[str, str]] = set(stages) | {
        k for k in loaded.serving if service is None or k[0] == service
    }

    def order(key: tuple[str, str]) -> tuple[str, int, str]:
        stage = stages.get(key)
        return (key[0], stage if stage is not None else 1 << 30, key[1])

    return StatusReport(
        [
            EnvironmentStatus(
                service=key[0],
                environment=key[1],
                stage=stages.get(key),
                serving=loaded.serving[key][1] if key in loaded.serving else None,
                in_progress=active.get(key, []),
            )
            for key in sorted(keys, key=order)
        ]
    )


def _service_prefix(service: str | None) -> str:
    # Deployment ids are "<service>.<environment>.<release id>": a service's streams
    # share the prefix "deployment-<service>." whatever subject their events carry.
    return STREAM_PREFIX if service is None else deployment_stream(f"{service}.")


async def deployment_status(log: PostgresEventLog, service: str | None = None) -> StatusReport:
    """What serves in each environment and what is in progress, from the log."""
    return _report(await _load(log, _service_prefix(service)), service)


def _pick(candidates: Iterable[_Folded]) -> _Folded | None:
    """The deployment a command on ``SERVICE --env ENV`` means: the one changing the
    target now; else the latest one not yet ended; else the latest one."""
    ordered = sorted(candidates, key=lambda f: f.first_position)
    active = [f for f in ordered if not f.state.terminal]
    executing = [f for f in active if f.state.status in EXECUTING]
    for group in (executing, active, ordered):
        if group:
            return group[-1]
    return None


async def find_deployment(log: PostgresEventLog, service: str, environment: str) -> str | None:
    """The id of the active (non-terminal) deployment of ``service`` in
    ``environment`` — preferring one that is executing — or else the latest one;
    None if there never was one."""
    loaded = await _load(log, deployment_stream(f"{service}.{environment}."))
    picked = _pick(f for f in loaded.folded if (f.plan.service, f.plan.environment) == (service, environment))
    return picked.plan.deployment_id if picked else None


async def load_deployment(log: PostgresEventLog, deployment_id: str) -> DeploymentState | None:
    """One deployment's folded state, or None if nothing was planned under that id."""
    history = await log.read_stream(deployment_stream(deployment_id))
    state = fold(r.event for r in history)
    return state if state.plan is not None else None
