"""Notifications: what the notification consumer delivered to people's channels,
or finally failed to deliver. Each is recorded in the log of the deployment it is
about (never with a secret: channel names and addresses without credentials)."""

from __future__ import annotations

from typing import ClassVar

from events.base import EventData


class NotificationSent(EventData):
    TYPE: ClassVar[str] = "shiplog.notification.sent"
    VERSION: ClassVar[int] = 1

    #: the event this notification is about (its id) and its type
    about: str
    about_type: str
    deployment_id: str | None = None
    channel: str
    kind: str  # webhook | slack | email
    attempts: int
    #: e.g. the HTTP status or the SMTP reply
    response: str = ""


class NotificationFailed(EventData):
    TYPE: ClassVar[str] = "shiplog.notification.failed"
    VERSION: ClassVar[int] = 1

    about: str
    about_type: str
    deployment_id: str | None = None
    channel: str
    kind: str
    attempts: int
    error: str
