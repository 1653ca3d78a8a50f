"""The build publisher: what a CI job calls when a build is done.

``publish_build(...)`` from Python, ``shiplog build-completed ...`` from a shell.
Publishes one ``shiplog.build.completed.v1`` CloudEvent to ``shiplog.builds``,
keyed by service, and returns it once the broker acknowledged it.
"""

from __future__ import annotations

import socket
from typing import Any

from events.build import BuildCompleted
from events.envelope import CloudEvent
from events.registry import new_event
from events.topics import BUILDS, topic_name
from producers.kafka import publish_one


def build_event(data: BuildCompleted | dict[str, Any], *, source: str | None = None) -> CloudEvent:
    """The CloudEvent for a finished build (validated; raises InvalidEvent-style
    pydantic errors on bad fields)."""
    payload = data if isinstance(data, BuildCompleted) else BuildCompleted.model_validate(data)
    event = new_event(
        payload,
        source=source or f"ci/shiplog-cli/{socket.gethostname()}",
        subject=payload.service,
    )
    # The build starts a release; its id is the release's correlation id.
    return event.model_copy(update={"correlationid": event.id})


async def publish_build(
    bootstrap: str,
    data: BuildCompleted | dict[str, Any],
    *,
    source: str | None = None,
    topic_prefix: str = "",
) -> CloudEvent:
    """Publish a build.completed event and wait for the broker's acknowledgement."""
    event = build_event(data, source=source)
    await publish_one(bootstrap, topic_name(BUILDS, topic_prefix), event)
    return event
