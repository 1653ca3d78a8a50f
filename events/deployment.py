"""The release and deployment stream family: what planning, approval, execution,
verification and rollback decide about one release in one environment.

A deployment's id is ``<service>.<environment>.<release id>`` (the release id is the
build event's id); its stream is ``deployment-<deployment id>`` and its Kafka key
the deployment id. ``deployment.planned`` carries the whole resolved plan —
strategy steps, target, values (secret references only), gate and analysis — so
every later decision is made from the log, never from config that may have changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import EventData


def deployment_id(service: str, environment: str, release_id: str) -> str:
    return f"{service}.{environment}.{release_id}"


def deployment_stream(deployment: str) -> str:
    return f"deployment-{deployment}"


class PlannedStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["rolling", "preview", "switch", "scale_down", "set_weight", "promote", "pause", "analysis"]
    weight: int | None = Field(default=None, ge=0, le=100)
    #: for pause: seconds, or None to wait until promoted
    duration_s: float | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1)
    max_unavailable: int | None = Field(default=None, ge=0)
    replicas: int | None = Field(default=None, ge=1)


class StrategyPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["rolling", "blue_green", "canary"]
    reason: str
    steps: list[PlannedStep]


class TargetRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    settings: dict[str, Any] = Field(default_factory=dict)


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str
    field: str | None = None


class ReleasePlanned(EventData):
    TYPE: ClassVar[str] = "shiplog.release.planned"
    VERSION: ClassVar[int] = 1

    release_id: str
    service: str
    version: str
    artifact: str
    digest: str | None = None
    pipeline: str
    environments: list[str]
    author: str | None = None
    #: the build facts gates look at (tests, security, author, commit, branch)
    build: dict[str, Any] = Field(default_factory=dict)
    not_before: datetime | None = None


class DeploymentPlanned(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.planned"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    release_id: str
    service: str
    version: str
    artifact: str
    digest: str | None = None
    environment: str
    stage: int = Field(ge=0, description="index of the environment in the pipeline")
    previous_environment: str | None = None
    next_environment: str | None = None
    strategy: StrategyPlan
    target: TargetRef
    #: plain values, and secret references as {"secret": {"env"|"file": ...}}
    values: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)
    analysis: dict[str, Any] = Field(default_factory=dict)
    #: the build facts gates look at (tests, security, author)
    build: dict[str, Any] = Field(default_factory=dict)
    not_before: datetime | None = None
    plan_hash: str


class DeploymentRejected(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.rejected"
    VERSION: ClassVar[int] = 1

    deployment_id: str | None = None
    release_id: str
    service: str
    version: str
    environment: str | None = None
    reasons: list[Reason]


class DeploymentScheduled(EventData):
    """The deployment reached a closed window (or a not-before time) and waits for it."""

    TYPE: ClassVar[str] = "shiplog.deployment.scheduled"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    not_before: datetime
    reason: str


class DeploymentApproved(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.approved"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    automatic: bool
    #: the rule that approved automatically, or the approvers' names
    rule: str | None = None
    approvers: list[str] = Field(default_factory=list)


class DeploymentDenied(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.denied"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    by: str | None = None
    expired: bool = False
    reason: str = ""


class DeploymentQueued(EventData):
    """Another deployment is active in this service's environment; this one waits."""

    TYPE: ClassVar[str] = "shiplog.deployment.queued"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    behind: str


class DeploymentStarted(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.started"
    VERSION: ClassVar[int] = 1

    deployment_id: str


class DeploymentPaused(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.paused"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    step_index: int
    reason: str
    until: datetime | None = None
    by: str | None = None


class DeploymentResumed(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.resumed"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    step_index: int
    by: str | None = None


class DeploymentSucceeded(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.succeeded"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    release_id: str
    service: str
    environment: str
    version: str
    #: the pipeline's next environment, which planning plans next (None: the last)
    next_environment: str | None = None


class DeploymentFailed(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.failed"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    reason: str


class DeploymentRolledBack(EventData):
    TYPE: ClassVar[str] = "shiplog.deployment.rolled_back"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    service: str
    environment: str
    to_version: str | None = None
    reason: str
    healthy: bool


class ReplanRequested(EventData):
    """The pipeline of a deployment that has not started changed: planning renders
    its plan again, and a different plan replaces it (voiding approvals given for the
    old one)."""

    TYPE: ClassVar[str] = "shiplog.deployment.replan_requested"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    release_id: str
    service: str
    environment: str
    reason: str
