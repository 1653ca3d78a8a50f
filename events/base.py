"""Base class of every event payload (the CloudEvent's ``data``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """The payload of one event type at its current version.

    Subclasses set ``TYPE`` (``shiplog.<noun>.<verb>``) and ``VERSION``; only the
    current shape of a type exists as a class — older versions live on as dict
    upcasters in ``events.upcasters``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    @classmethod
    def event_type(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}"
