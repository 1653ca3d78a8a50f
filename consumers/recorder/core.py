"""The recorder's pure core.

Each build gets a stream of its own, named after the release it starts (the build
event's id is the release's correlation id); each command from a person goes into
the stream of the deployment it names, so the log shows who asked for what beside
what happened. The decision is trivial — record the event unless this stream
already holds it — which is exactly what makes it a good first proof of the shell:
everything interesting is in the I/O around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from consumers.contract import Consumer
from events.build import BuildCompleted
from events.deployment import deployment_stream
from events.envelope import CloudEvent
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
    if event.type_name == "shiplog.command.rollback":
        return f"commands-{event.subject}"
    return deployment_stream(event.subject)


def evolve(state: Recorded, event: CloudEvent) -> Recorded:
    return Recorded(state.event_ids | {event.id})


def decide(state: Recorded, event: CloudEvent, *, now: datetime) -> list[CloudEvent]:
    """Record an outside event as it came, unless it is already recorded."""
    del now  # recording needs no clock: the event carries its own time
    return [] if event.id in state.event_ids else [event]


RECORDER: Consumer[Recorded] = Consumer(
    name=NAME,
    topics=(BUILDS.name, COMMANDS.name),
    stream_for=stream_for,
    initial=Recorded,
    evolve=evolve,
    decide=decide,
    publish=False,
    description="records builds from CI and people's commands into the log",
)
