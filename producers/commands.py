"""Commands: what a person's approve, deny, promote, pause, resume, abort, schedule
and rollback put on the bus.

``command_event(...)`` builds one command CloudEvent (``shiplog.approval.granted|
denied``, ``shiplog.command.*``), keyed by its subject — the deployment id, or
``<service>.<environment>`` for a rollback — with the person on the envelope's
``actor``. Only the command API (``producers.api``) publishes them: it sets the
actor to the authenticated principal and signs each (``events.signature``), and the
consumers refuse a command without that signature. The consumers decide what the
command does; publishing it only says it was given.
"""

from __future__ import annotations

from events.base import EventData
from events.command import Rollback
from events.envelope import CloudEvent
from events.errors import InvalidInput
from events.registry import new_event
from events.topics import COMMANDS, topic_for

SOURCE = "shiplog/api"


def command_subject(data: EventData) -> str:
    """What a command is about: its deployment id, or ``<service>.<environment>``
    for a rollback (which names an environment, not one deployment)."""
    if isinstance(data, Rollback):
        return f"{data.service}.{data.environment}"
    deployment_id = getattr(data, "deployment_id", None)
    if not isinstance(deployment_id, str) or not deployment_id:
        raise InvalidInput(f"{data.event_type()} names no deployment")
    return deployment_id


def command_event(
    data: EventData,
    *,
    actor: str,
    subject: str | None = None,
    correlationid: str | None = None,
    source: str = SOURCE,
) -> CloudEvent:
    """The CloudEvent for a command (refuses event types that are not commands)."""
    if topic_for(data.event_type()) is not COMMANDS:
        raise InvalidInput(f"{data.event_type()} is not a command (it does not go to {COMMANDS.name})")
    if not actor:
        raise InvalidInput("a command needs an actor: who gives it")
    return new_event(
        data,
        source=source,
        subject=subject or command_subject(data),
        correlationid=correlationid,
        actor=actor,
    )
