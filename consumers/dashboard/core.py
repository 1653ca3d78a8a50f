"""The dashboard's board: what runs where and what is deploying, folded from the
deployment topics as a plain subscriber sees them.

Pure: ``evolve(board, event) -> Board`` folds one event; ``overview(board)`` shapes
it as services x environments for the page. No I/O and no clock.

A subscriber of several topics sees one deployment's events in each topic's order,
not in the order they were appended (``deployment.planned`` travels on
``shiplog.plans``, ``approval.requested`` on ``shiplog.approvals``...). So the board
keeps each active deployment's events, ordered by their ``time`` (ties keep arrival
order), and folds them again with the saga's own ``consumers.deployment.evolve`` when
one arrives: an event that overtook an earlier one lands in its place.

A deployment that ended is remembered by id, and only a rollback still reaches it:
``shiplog rollback`` of one that succeeded ends it a second time. A build and
planning's refusal of it travel on different topics, so the refusal is kept until
its build arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from consumers.deployment import DeploymentState, Status, fold
from events.build import BuildCompleted
from events.deployment import DeploymentRejected, DeploymentRolledBack, DeploymentSucceeded
from events.envelope import CloudEvent
from events.registry import REGISTRY

#: deployments that ended are remembered (by id) this many at most, so a late event
#: of one does not start a deployment the board would never see end
ENDED_REMEMBERED = 5000


@dataclass(frozen=True)
class BuildSeen:
    """The latest build of a service, and what planning said of it, if it refused."""

    version: str
    event_id: str
    at: datetime
    author: str | None = None
    rejected: str | None = None


@dataclass(frozen=True)
class BuildRejection:
    """What planning said of a service's build when it refused it, and when."""

    version: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Ended:
    """How the last deployment of a cell ended."""

    deployment_id: str
    version: str
    status: Status


@dataclass(frozen=True)
class Board:
    #: deployment id -> its events so far (time order), while it has not ended
    active: Mapping[str, tuple[CloudEvent, ...]] = field(default_factory=dict)
    #: (service, environment) -> (version serving, "succeeded" | "rolled_back")
    serving: Mapping[tuple[str, str], tuple[str | None, str]] = field(default_factory=dict)
    #: (service, environment) -> index of the environment in its pipeline
    stages: Mapping[tuple[str, str], int] = field(default_factory=dict)
    ended: Mapping[tuple[str, str], Ended] = field(default_factory=dict)
    ended_ids: tuple[str, ...] = ()
    builds: Mapping[str, BuildSeen] = field(default_factory=dict)
    #: service -> the latest refusal of one of its builds (its build may not have come yet)
    rejections: Mapping[str, BuildRejection] = field(default_factory=dict)


def deployment_of(event: CloudEvent) -> str | None:
    value = event.data.get("deployment_id")
    return value if isinstance(value, str) and value else None


def evolve(board: Board, event: CloudEvent) -> Board:
    """Fold one event (any type; those the board does not show change nothing)."""
    name = event.type_name
    if name == BuildCompleted.TYPE:
        return _build(board, event)
    if name == DeploymentRejected.TYPE and deployment_of(event) is None:
        return _rejected_build(board, event)
    dep = deployment_of(event)
    if dep is None:
        return board
    if dep in board.ended_ids:
        if name == DeploymentRolledBack.TYPE:
            return _rolled_back_after_end(board, dep, REGISTRY.payload(event, DeploymentRolledBack))
        return board
    before = board.active.get(dep, ())
    if any(e.id == event.id for e in before):
        # A redelivery: folded again it would land after the events of its instant
        # and could undo them (a step started again after it was applied).
        return board
    history = _insert(before, event)
    if name in _SERVES:
        board = _serving(board, history, event)
    state = fold(history)
    if state.plan is None and state.status is Status.REJECTED:
        # Planning refused the deployment at its environment: no plan ever comes.
        return _rejected_deployment(board, dep, history)
    if state.plan is None or not state.terminal:
        stages = board.stages
        if state.plan is not None:
            stages = {**stages, (state.plan.service, state.plan.environment): state.plan.stage}
        return replace(board, active={**board.active, dep: history}, stages=stages)
    plan = state.plan
    cell = (plan.service, plan.environment)
    return _end(board, dep, cell, Ended(dep, plan.version, state.status), stage=plan.stage)


def evolve_all(board: Board, events: Iterable[CloudEvent]) -> Board:
    for event in events:
        board = evolve(board, event)
    return board


def _insert(history: tuple[CloudEvent, ...], event: CloudEvent) -> tuple[CloudEvent, ...]:
    index = len(history)
    while index > 0 and history[index - 1].time > event.time:
        index -= 1
    return (*history[:index], event, *history[index:])


#: the events that say which version serves a cell
_SERVES = (DeploymentSucceeded.TYPE, DeploymentRolledBack.TYPE)


def _serving(board: Board, history: tuple[CloudEvent, ...], event: CloudEvent) -> Board:
    """What serves after ``event``, if it is the deployment's latest word on it: an end
    that overtook a later one (a rollback of the version that succeeded) stays."""
    latest = next(e for e in reversed(history) if e.type_name in _SERVES)
    if latest.id != event.id:
        return board
    serves: tuple[str | None, str]
    if event.type_name == DeploymentSucceeded.TYPE:
        ok = REGISTRY.payload(event, DeploymentSucceeded)
        cell, serves = (ok.service, ok.environment), (ok.version, "succeeded")
    else:
        back = REGISTRY.payload(event, DeploymentRolledBack)
        cell, serves = (back.service, back.environment), (back.to_version, "rolled_back")
    return replace(board, serving={**board.serving, cell: serves})


def _end(board: Board, dep: str, cell: tuple[str, str] | None, ended: Ended, *, stage: int | None) -> Board:
    active = {key: value for key, value in board.active.items() if key != dep}
    ids = (*board.ended_ids, dep)[-ENDED_REMEMBERED:]
    board = replace(board, active=active, ended_ids=ids)
    if cell is None:
        return board
    stages = board.stages if stage is None else {**board.stages, cell: stage}
    return replace(board, ended={**board.ended, cell: ended}, stages=stages)


def _rejected_deployment(board: Board, dep: str, history: tuple[CloudEvent, ...]) -> Board:
    last = next(e for e in reversed(history) if e.type_name == DeploymentRejected.TYPE)
    rejected = REGISTRY.payload(last, DeploymentRejected)
    cell = (rejected.service, rejected.environment) if rejected.environment else None
    return _end(board, dep, cell, Ended(dep, rejected.version, Status.REJECTED), stage=None)


def _rolled_back_after_end(board: Board, dep: str, back: DeploymentRolledBack) -> Board:
    """``shiplog rollback`` of a deployment that succeeded: the version it restored
    serves. Only once (it marks the deployment rolled back), and only while that
    deployment is the cell's last one, so a rollback delivered again cannot undo a
    later deployment."""
    cell = (back.service, back.environment)
    last = board.ended.get(cell)
    if last is None or last.deployment_id != dep or last.status is not Status.SUCCEEDED:
        return board
    return replace(
        board,
        serving={**board.serving, cell: (back.to_version, "rolled_back")},
        ended={**board.ended, cell: replace(last, status=Status.ROLLED_BACK)},
    )


def _build(board: Board, event: CloudEvent) -> Board:
    build = REGISTRY.payload(event, BuildCompleted)
    seen = BuildSeen(build.version, event.id, event.time, build.author)
    return _mark_rejected(replace(board, builds={**board.builds, build.service: seen}), build.service)


def _rejected_build(board: Board, event: CloudEvent) -> Board:
    rejected = REGISTRY.payload(event, DeploymentRejected)
    kept = board.rejections.get(rejected.service)
    if kept is not None and kept.at > event.time:
        return board  # an older refusal, delivered again
    why = "; ".join(r.message for r in rejected.reasons) or "rejected"
    rejection = BuildRejection(rejected.version, why, event.time)
    board = replace(board, rejections={**board.rejections, rejected.service: rejection})
    return _mark_rejected(board, rejected.service)


def _mark_rejected(board: Board, service: str) -> Board:
    seen, rejection = board.builds.get(service), board.rejections.get(service)
    if seen is None or rejection is None or seen.version != rejection.version:
        return board
    return replace(board, builds={**board.builds, service: replace(seen, rejected=rejection.reason)})


# -- the overview ------------------------------------------------------------------


@dataclass(frozen=True)
class Deploying:
    """A deployment in progress, as a cell shows it."""

    deployment_id: str
    version: str
    status: str
    strategy: str
    step: str
    #: the share of traffic the new version has (the last applied weight), if any
    weight: int | None
    paused_reason: str | None


@dataclass(frozen=True)
class Cell:
    environment: str
    serving: str | None = None
    via: str | None = None
    deploying: tuple[Deploying, ...] = ()
    last: Ended | None = None

    @property
    def empty(self) -> bool:
        return self.serving is None and not self.deploying and self.last is None


@dataclass(frozen=True)
class Row:
    service: str
    build: BuildSeen | None
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Overview:
    environments: tuple[str, ...]
    rows: tuple[Row, ...]


def deploying(state: DeploymentState) -> Deploying:
    assert state.plan is not None
    plan = state.plan
    steps = plan.strategy.steps
    current = state.current
    if current is None:
        label = f"0/{len(steps)}"
    else:
        step = steps[current] if current < len(steps) else None
        label = f"{current + 1}/{len(steps)} {step.kind if step else '?'}"
    weight = None
    for index in sorted(state.steps):
        record = state.steps[index]
        if record.applied and record.ok and record.step.weight is not None:
            weight = record.step.weight
    return Deploying(
        deployment_id=plan.deployment_id,
        version=plan.version,
        status=state.status.value,
        strategy=plan.strategy.type,
        step=label,
        weight=weight,
        paused_reason=state.paused_reason if state.status is Status.PAUSED else None,
    )


def overview(board: Board) -> Overview:
    """Services (rows) x environments (columns, in pipeline order)."""
    active: dict[tuple[str, str], list[Deploying]] = {}
    for history in board.active.values():
        state = fold(history)
        if state.plan is not None:
            active.setdefault((state.plan.service, state.plan.environment), []).append(deploying(state))
    cells = set(board.serving) | set(board.stages) | set(board.ended) | set(active)
    services = sorted({s for s, _ in cells} | set(board.builds))
    first_stage: dict[str, int] = {}
    for (_, env), stage in board.stages.items():
        first_stage[env] = min(stage, first_stage.get(env, stage))
    environments = tuple(sorted({e for _, e in cells}, key=lambda e: (first_stage.get(e, 1 << 30), e)))
    rows = []
    for service in services:
        row = []
        for env in environments:
            key = (service, env)
            version, via = board.serving.get(key, (None, None))
            row.append(
                Cell(
                    environment=env,
                    serving=version,
                    via=via,
                    deploying=tuple(active.get(key, ())),
                    last=board.ended.get(key),
                )
            )
        rows.append(Row(service, board.builds.get(service), tuple(row)))
    return Overview(environments, tuple(rows))
