"""The recorder's pure core.

Each build gets a stream of its own, named after the release it starts (the build
event's id is the release's correlation id); each command from a person goes into
the stream of the deployment it names, so the log shows who asked for what beside
what happened. The decision is trivial — record the event unless this stream
already holds it — which is exactly what makes it a good first proof of the shell:
everything interesting is in the I/O around it.

A command without a valid signature of the command API is not recorded as given:
the shell refuses it, and the recorder records a ``shiplog.command.refused`` in its
place — who it claimed to come from and why it was refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from consumers.contract import Consumer
from events.build import BuildCompleted
from events.command import CommandRefused
from events.deployment import deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.release import ReleaseManifest
from events.signature import COMMAND_TYPES
from events.topics import BUILDS, COMMANDS

NAME = "recorder"


@dataclass(frozen=True, slots=True)
class Recorded:
    event_ids: frozenset[str] = frozenset()


def release_stream(event: CloudEvent) -> str:
    """The stream of the release a build starts: ``release-<build event id>``."""
    return f"release-{event.correlationid or event.id}"


def stream_for(event: CloudEvent) -> str:
    """A build's release stream; a command's deployment stream (a rollback command
    names a service's environment, and gets a stream of that name)."""
    if event.type_name == BuildCompleted.TYPE:
        return release_stream(event)
    if event.type_name == ReleaseManifest.TYPE:
        return f"release-{REGISTRY.payload(event, ReleaseManifest).release_id}"
    if event.type_name == "shiplog.command.rollback":
        return f"commands-{event.subject}"
    if event.type_name == "shiplog.command.drill":
        return f"drill-{event.id}"
    return deployment_stream(event.subject)


def evolve(state: Recorded, event: CloudEvent) -> Recorded:
    return Recorded(state.event_ids | {event.id})


def decide(state: Recorded, event: CloudEvent, *, now: datetime) -> list[CloudEvent]:
    """Record an outside event as it came, unless it is already recorded."""
    del now  # recording needs no clock: the event carries its own time
    return [] if event.id in state.event_ids else [event]


def refuse(event: CloudEvent, reason: str, *, now: datetime) -> list[CloudEvent]:
    """What is recorded of a command that failed verification, in its place."""
    del now
    return [
        new_event(
            CommandRefused(
                command_id=event.id,
                command_type=event.type,
                claimed_actor=event.actor,
                reason=reason,
                source=event.source,
            ),
            source=f"shiplog/{NAME}",
            subject=event.subject,
            correlationid=event.correlationid,
            causationid=event.id,
        )
    ]


RECORDER: Consumer[Recorded] = Consumer(
    name=NAME,
    topics=(BUILDS.name, COMMANDS.name),
    stream_for=stream_for,
    initial=Recorded,
    evolve=evolve,
    decide=decide,
    publish=False,
    # builds and people's commands: not what shiplog itself puts on shiplog.commands
    # (access refusals, command refusals), which the log holds already
    accepts=(BuildCompleted.TYPE, ReleaseManifest.TYPE, *COMMAND_TYPES),
    guards_unknown=True,
    refuse=refuse,
    description="records builds from CI and people's commands into the log",
)
