"""What goes to ``shiplog.deadletter``: a message that could not be processed, and why."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events.base import EventData


class MessageDeadLettered(EventData):
    """A consumer gave up on a message. The original bytes are kept, base64-encoded,
    with its headers and coordinates, so it can be inspected and re-driven."""

    TYPE: ClassVar[str] = "shiplog.message.dead_lettered"
    VERSION: ClassVar[int] = 1

    consumer: str
    reason: str = Field(description="not_json | not_cloudevent | unknown_type | validation | handler_error")
    error: str
    topic: str
    partition: int
    offset: int
    key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    original: str = Field(description="the message value, base64")
