"""The build publisher: what a CI job calls when a build is done.

``publish_build(...)`` from Python, ``shiplog build-completed ...`` from a shell.
Publishes one ``shiplog.build.completed.v1`` CloudEvent to ``shiplog.builds``,
keyed by service, and returns it once the broker acknowledged it.

A release of several services is one ``shiplog.release.manifest.v1`` (``publish_manifest``,
``shiplog release publish MANIFEST.yaml``), keyed by the release id.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from consumers.planning.loader import ConfigError, parse_document
from events.build import BuildCompleted
from events.envelope import CloudEvent
from events.errors import InvalidInput
from events.registry import new_event
from events.release import ReleaseManifest
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


class ManifestInvalid(InvalidInput):
    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def load_manifest(path: str | Path) -> ReleaseManifest:
    """A release manifest file (YAML: ``release_id``, ``services`` with ``service``,
    ``version``, ``artifact``, ``depends_on``...); raises ``ManifestInvalid`` with every
    error at its line and field."""
    manifest, errors = parse_document(Path(path).read_text(), str(path), ReleaseManifest)
    if manifest is None:
        raise ManifestInvalid(errors)
    return manifest


def manifest_event(manifest: ReleaseManifest, *, source: str | None = None) -> CloudEvent:
    return new_event(
        manifest,
        source=source or f"ci/shiplog-cli/{socket.gethostname()}",
        subject=f"release/{manifest.release_id}",
        correlationid=manifest.release_id,
    )


async def publish_manifest(
    bootstrap: str, manifest: ReleaseManifest, *, source: str | None = None, topic_prefix: str = ""
) -> CloudEvent:
    """Publish a multi-service release and wait for the broker's acknowledgement."""
    event = manifest_event(manifest, source=source)
    await publish_one(bootstrap, topic_name(BUILDS, topic_prefix), event)
    return event
