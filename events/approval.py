"""Approvals: requests, and the people's answers (commands on shiplog.commands)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from events.base import EventData


class ApprovalRequested(EventData):
    TYPE: ClassVar[str] = "shiplog.approval.requested"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    service: str
    environment: str
    version: str
    level: str = "default"
    expires_at: datetime | None = None
    why: str = ""


class ApprovalGranted(EventData):
    """A person approved (the envelope's ``actor`` says who)."""

    TYPE: ClassVar[str] = "shiplog.approval.granted"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    comment: str = ""


class ApprovalDenied(EventData):
    TYPE: ClassVar[str] = "shiplog.approval.denied"
    VERSION: ClassVar[int] = 1

    deployment_id: str
    comment: str = ""
