"""Targets: where a deployment lands, behind one small protocol.

A step is declarative and idempotent — "canary at weight 25", never "add 5" — and
carries a ``step_id`` unique within the deployment; a target keeps its own record
of the step ids it applied, so a step re-driven after a crash is not applied twice
(``apply`` returns the recorded result instead).

Implementations are ``<Vendor>Target`` with a ``TYPE``; ``create_target`` maps a
type to its class and raises on an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from events.errors import InvalidInput

StepKind = Literal[
    "rolling",  # replace instances with `version`, `batch_size` at a time
    "preview",  # blue-green: start the new colour beside the active one, no traffic
    "switch",  # blue-green: send all traffic to the new colour
    "scale_down",  # blue-green / canary: stop the instances of everything but `version`
    "set_weight",  # canary: start the canary if needed; send `weight`% to it
    "promote",  # canary: the canary becomes stable at 100%, old stable stopped
]


class Release(BaseModel):
    """What to run: one version of one service, rendered for one environment."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    version: str
    artifact: str
    #: rendered configuration (environment values overlay); secrets already resolved
    #: by the caller and never logged.
    config: dict[str, str] = Field(default_factory=dict)
    #: target-specific settings from the pipeline (e.g. the local command template)
    settings: dict[str, Any] = Field(default_factory=dict)


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str = Field(min_length=1, description="unique within the deployment")
    deployment_id: str
    kind: StepKind
    release: Release
    weight: int | None = Field(default=None, ge=0, le=100)
    batch_size: int = Field(default=1, ge=1)
    replicas: int = Field(default=1, ge=1)


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str
    ok: bool
    #: True when the target had already applied this step id: nothing was done again.
    already_applied: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Snapshot(BaseModel):
    """Enough to restore what ran before: the target fills ``state`` with its own
    description (versions, commands, config, weights) and ``restore`` takes it back."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    version: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)


class Track(BaseModel):
    """One version serving: where to reach it and where its metrics are. A
    ``baseline`` runs the stable version fresh beside a canary (its own instances)."""

    model_config = ConfigDict(frozen=True)

    version: str
    role: Literal["stable", "canary", "preview", "active", "baseline"]
    weight: int = 0
    urls: list[str] = Field(default_factory=list)


class TargetStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    reachable: bool
    tracks: list[Track] = Field(default_factory=list)
    #: the URL users reach (through the traffic split, if any)
    endpoint: str | None = None
    #: Prometheus text-format endpoint with per-version request/error/latency metrics
    metrics_url: str | None = None


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    traffic_split: bool = False
    two_colours: bool = False


class Target(Protocol):
    """Where a service lives (namespace, function, hosts, database...) comes from the
    release's target settings. ``snapshot`` and ``status`` take them as ``settings``:
    callers pass the plan's ``target.settings`` — the same ``Release.settings`` that
    ``apply`` gets — so a new instance (after a process restart) looks where ``apply``
    acts, and invalid settings raise as ``apply`` would (``InvalidInput``). ``None``
    is for callers that have none: the target uses what the last ``apply`` of the
    service used, else its defaults. A target whose record does not depend on them
    (``local``: one record per service and environment) may ignore them. ``restore``
    gets no settings, so a snapshot names where it was taken (all but ``dbmigrate``,
    whose database URL is a secret never written to a snapshot)."""

    TYPE: str
    capabilities: Capabilities

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """What runs now, enough to restore it exactly; placed by ``settings``."""
        ...

    async def apply(self, step: Step) -> StepResult:
        """Bring the target to the state the step declares; idempotent by step_id."""
        ...

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """What serves now, where, with which weights; ``reachable`` is the ping;
        placed by ``settings``."""
        ...

    async def restore(self, snapshot: Snapshot, *, step_id: str) -> StepResult:
        """Put back exactly what the snapshot describes; idempotent by step_id."""
        ...


TargetFactory = Callable[[Mapping[str, Any]], Target]
_FACTORIES: dict[str, TargetFactory] = {}


def register_target(type_: str, factory: TargetFactory) -> None:
    _FACTORIES[type_] = factory


def create_target(type_: str, config: Mapping[str, Any]) -> Target:
    """The target of this type; raises on an unknown type (never a silent fallback)."""
    try:
        factory = _FACTORIES[type_]
    except KeyError:
        raise InvalidInput(
            f"unknown target type {type_!r}; known: {', '.join(sorted(_FACTORIES)) or 'none'}"
        ) from None
    return factory(config)
