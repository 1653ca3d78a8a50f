"""Rollback drills: rehearsing a rollback on a service that runs fine.

``shiplog drill SERVICE --env ENV`` (the ``drill`` command) takes what runs now as
its snapshot, rolls back to the snapshot the last successful deployment took before
it changed anything (the version before), verifies that, rolls forward to what ran
and verifies again — each step recorded with its time, so "how long does a rollback
of this service take, and does it work" has an answer before an incident asks. A
drill that fails restores what ran and says which step broke. The stream is
``drill-<drill id>`` (the command's id); the drill holds the service's lane while it
runs, so no deployment starts under it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from events.base import EventData
from events.deployment import TargetRef

DrillStep = Literal["rollback", "verify_rollback", "roll_forward", "verify_forward", "restore"]
#: the steps of a drill, in order; ``restore`` runs only after one of them failed
DRILL_STEPS: tuple[DrillStep, ...] = ("rollback", "verify_rollback", "roll_forward", "verify_forward")


class DrillScheduled(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.scheduled"
    VERSION: ClassVar[int] = 1

    drill_id: str
    service: str
    environment: str
    not_before: datetime
    requested_by: str | None = None


class DrillStarted(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.started"
    VERSION: ClassVar[int] = 1

    drill_id: str
    service: str
    environment: str
    #: the last successful deployment there, whose snapshot the drill rolls back to
    deployment_id: str
    from_version: str | None
    to_version: str | None
    target: TargetRef
    #: the health path the deployment's analysis checks
    health_path: str = "/healthz"
    #: what runs now (restored by roll_forward, and by restore after a failure)
    current: dict[str, Any]
    #: what ran before the deployment (the rollback's destination)
    previous: dict[str, Any]
    requested_by: str | None = None


class DrillStepCompleted(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.step_completed"
    VERSION: ClassVar[int] = 1

    drill_id: str
    step: DrillStep
    ok: bool
    duration_s: float = Field(ge=0)
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class DrillCompleted(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.completed"
    VERSION: ClassVar[int] = 1

    drill_id: str
    service: str
    environment: str
    #: step -> seconds
    timings: dict[str, float]
    #: rollback + its verification: how long recovering from this release would take
    time_to_recover_s: float
    total_s: float


class DrillFailed(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.failed"
    VERSION: ClassVar[int] = 1

    drill_id: str
    service: str
    environment: str
    broken_step: DrillStep
    error: str
    #: whether the environment was put back as the drill found it
    restored: bool
    timings: dict[str, float] = Field(default_factory=dict)


class DrillRefused(EventData):
    TYPE: ClassVar[str] = "shiplog.drill.refused"
    VERSION: ClassVar[int] = 1

    drill_id: str
    service: str
    environment: str
    reason: str
