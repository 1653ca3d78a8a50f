"""Execution: the snapshot before the first change, then each step's intent and result."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from events.base import EventData
from events.deployment import PlannedStep


class SnapshotTaken(EventData):
    TYPE: ClassVar[str] = "shiplog.snapshot.taken"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    version: str | None = Field(default=None, description="what served before; None if nothing")
    snapshot: dict[str, Any]


class StepStarted(EventData):
    """Intent, recorded before the target is touched."""

    TYPE: ClassVar[str] = "shiplog.step.started"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    index: int
    step_id: str
    step: PlannedStep


class StepApplied(EventData):
    """Result, recorded after the target answered."""

    TYPE: ClassVar[str] = "shiplog.step.applied"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    index: int
    step_id: str
    step: PlannedStep
    ok: bool
    already_applied: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
