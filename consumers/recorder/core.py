"""The recorder's pure core.

Each build gets a stream of its own, named after the release it starts (the build
event's id is the release's correlation id). The decision is trivial — record the
event unless this stream already holds it — which is exactly what makes it a good
first proof of the shell: everything interesting is in the I/O around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from consumers.contract import Consumer
from events.envelope import CloudEvent
from events.topics import BUILDS

NAME = "recorder"


@dataclass(frozen=True, slots=True)
class Recorded:
    event_ids: frozenset[str] = frozenset()


def release_stream(event: CloudEvent) -> str:
    """The stream of the release a build starts: ``release-<build event id>``."""
    return f"release-{event.correlationid or event.id}"


def evolve(state: Recorded, event: CloudEvent) -> Recorded:
    return Recorded(state.event_ids | {event.id})


def decide(state: Recorded, event: CloudEvent, *, now: datetime) -> list[CloudEvent]:
    """Record an outside event as it came, unless it is already recorded."""
    del now  # recording needs no clock: the event carries its own time
    return [] if event.id in state.event_ids else [event]


RECORDER: Consumer[Recorded] = Consumer(
    name=NAME,
    topics=(BUILDS.name,),
    stream_for=release_stream,
    initial=Recorded,
    evolve=evolve,
    decide=decide,
    publish=False,
    description="records build.completed events from CI into the log",
)
