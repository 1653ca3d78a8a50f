"""Rollback: restoring the snapshot, and checking what was restored."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from events.base import EventData


class RollbackStarted(EventData):
    TYPE: ClassVar[str] = "shiplog.rollback.started"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    reason: str
    to_version: str | None = None
    step_id: str


class RollbackCompleted(EventData):
    TYPE: ClassVar[str] = "shiplog.rollback.completed"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    ok: bool
    healthy: bool
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
