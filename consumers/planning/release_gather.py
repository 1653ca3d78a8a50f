"""What the release coordinator must know before it decides: for composing, each
service's pipeline; for progressing, what became of every deployment it released
(read from their streams — the coordinator's own stream holds only its decisions)."""

from __future__ import annotations

from typing import Any

from consumers.deployment import fold
from consumers.planning.releases import (
    PipelineFacts,
    ProgressFacts,
    ReleaseState,
    grouping,
)
from events.build import BuildCompleted
from events.deployment import deployment_id, deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY
from events.release import ReleaseManifest


async def gather(ports: Any, state: ReleaseState, event: CloudEvent) -> PipelineFacts | ProgressFacts | None:
    if event.type_name == ReleaseManifest.TYPE:
        return _pipelines(ports, [m.service for m in REGISTRY.payload(event, ReleaseManifest).services])
    if event.type_name == BuildCompleted.TYPE:
        group = grouping(REGISTRY.payload(event, BuildCompleted)) or {}
        return _pipelines(ports, [str(s) for s in group.get("services") or []])
    composed = state.composed
    if composed is None:
        return None
    statuses = {}
    for service, environment in sorted(state.released):
        stream = deployment_stream(deployment_id(service, environment, composed.release_id))
        history = await ports.log.read_stream(stream)
        statuses[(service, environment)] = fold(r.event for r in history).status
    return ProgressFacts(statuses)


def _pipelines(ports: Any, services: list[str]) -> PipelineFacts:
    pipelines = ports.pipelines or {}
    found: dict[str, tuple[str, list[str]] | None] = {}
    for service in services:
        pipeline = pipelines.get(service)
        found[service] = (pipeline.pipeline, [e.name for e in pipeline.environments]) if pipeline else None
    return PipelineFacts(found)
