"""Operators' commands on ``shiplog.commands`` (the actor is on the envelope).

Commands are named in the imperative; each targets one deployment, or — for
``rollback`` — a service's environment, optionally to a given version.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from events.base import EventData


class _DeploymentCommand(EventData):
    deployment_id: str
    comment: str = ""


class Promote(_DeploymentCommand):
    """Skip the current pause (an indefinite one waits for exactly this)."""

    TYPE: ClassVar[str] = "shiplog.command.promote"
    VERSION: ClassVar[int] = 1


class Pause(_DeploymentCommand):
    TYPE: ClassVar[str] = "shiplog.command.pause"
    VERSION: ClassVar[int] = 1


class Resume(_DeploymentCommand):
    TYPE: ClassVar[str] = "shiplog.command.resume"
    VERSION: ClassVar[int] = 1


class Abort(_DeploymentCommand):
    """Stop and roll back."""

    TYPE: ClassVar[str] = "shiplog.command.abort"
    VERSION: ClassVar[int] = 1


class Schedule(_DeploymentCommand):
    """Hold a deployment that has not started until ``not_before``."""

    TYPE: ClassVar[str] = "shiplog.command.schedule"
    VERSION: ClassVar[int] = 1

    not_before: datetime


class Rollback(EventData):
    TYPE: ClassVar[str] = "shiplog.command.rollback"
    VERSION: ClassVar[int] = 1

    service: str
    environment: str
    to_version: str | None = None
    comment: str = ""


class Drill(EventData):
    """Rehearse a rollback of a service's environment (events/drill.py), now or at
    ``not_before``."""

    TYPE: ClassVar[str] = "shiplog.command.drill"
    VERSION: ClassVar[int] = 1

    service: str
    environment: str
    not_before: datetime | None = None
    comment: str = ""


class CommandRefused(EventData):
    """A command that arrived on ``shiplog.commands`` without a valid signature of
    the command API (written straight to the topic, altered on the way, or signed
    with an unknown key): nothing acts on it, and this records that it came."""

    TYPE: ClassVar[str] = "shiplog.command.refused"
    VERSION: ClassVar[int] = 1

    command_id: str
    command_type: str
    #: the actor the command claimed (not an authenticated one)
    claimed_actor: str | None = None
    reason: str
    source: str | None = None
