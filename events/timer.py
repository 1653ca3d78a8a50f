"""Durable timers: bake times, pauses, deploy windows, approval expiry.

Whoever needs to be woken later records ``timer.scheduled``; the timers consumer
keeps it in PostgreSQL and, when it is due, appends ``timer.fired`` to the same
stream — at start too, for timers that fell due while it was down.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from events.base import EventData


class TimerScheduled(EventData):
    TYPE: ClassVar[str] = "shiplog.timer.scheduled"
    VERSION: ClassVar[int] = 1

    timer_id: str = Field(min_length=1, description="unique; scheduling the same id twice is one timer")
    stream_id: str = Field(min_length=1, description="the stream timer.fired is appended to")
    due_at: datetime
    purpose: str = Field(description="pause | window | approval_expiry | approval_reminder | ...")
    payload: dict[str, Any] = Field(default_factory=dict)


class TimerCancelled(EventData):
    TYPE: ClassVar[str] = "shiplog.timer.cancelled"
    VERSION: ClassVar[int] = 1

    timer_id: str
    stream_id: str
    reason: str = ""


class TimerFired(EventData):
    TYPE: ClassVar[str] = "shiplog.timer.fired"
    VERSION: ClassVar[int] = 1

    timer_id: str
    stream_id: str
    due_at: datetime
    fired_at: datetime
    purpose: str
    payload: dict[str, Any] = Field(default_factory=dict)
