"""Watches the pipelines directory: an edited pipeline is loaded (when it is valid)
and every deployment of that service still waiting for approval is asked to be
planned again (``deployment.replan_requested``). Planning then decides whether the
plan really changed; the approval consumer voids approvals given for the old one.

An invalid edit is reported with file, line and field and changes nothing: the
last valid pipelines stay in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.planning.loader import PipelineConfigInvalid, load_pipelines
from consumers.planning.pipeline import PipelineFile
from events.deployment import ReplanRequested, deployment_stream
from events.envelope import CloudEvent
from events.registry import new_event

log = logging.getLogger(__name__)

SOURCE = "shiplog/planning"
#: how often the directory is looked at
POLL_S = 1.0


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(p for p in directory.glob("*.y*ml") if p.is_file())
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)


@dataclass
class PipelineWatcher:
    directory: Path
    #: the pipelines planning reads (replaced in place, so planning sees the new ones)
    pipelines: dict[str, PipelineFile]
    log: Any
    #: service -> its deployments waiting for approval (each with deployment_id,
    #: release_id, service, environment)
    pending_approvals: Callable[[str], Awaitable[list[Any]]]
    #: the in-process fast path for what this appends
    on_appended: Callable[[list[CloudEvent]], None] | None = None
    poll_s: float = POLL_S
    _seen: tuple[tuple[str, int, int], ...] = field(default=(), repr=False)

    async def run(self) -> None:
        self._seen = fingerprint(self.directory)
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except Exception:  # a watcher must outlive any one bad look
                log.exception("pipelines: looking at %s failed", self.directory)

    async def check(self) -> list[CloudEvent]:
        """Reload if the directory changed; returns the re-plan requests appended."""
        now = fingerprint(self.directory)
        if now == self._seen:
            return []
        self._seen = now
        try:
            fresh = load_pipelines(self.directory)
        except PipelineConfigInvalid as exc:
            log.error("pipelines: the edit is refused, the last valid pipelines stay in force:\n%s", exc)
            return []
        changed = sorted(
            name
            for name in set(fresh) | set(self.pipelines)
            if (fresh.get(name) is None) != (self.pipelines.get(name) is None)
            or (fresh.get(name) is not None and fresh[name] != self.pipelines.get(name))
        )
        self.pipelines.clear()
        self.pipelines.update(fresh)
        if not changed:
            return []
        log.info("pipelines: reloaded; changed: %s", ", ".join(changed))
        return await self.request_replans(changed)

    async def request_replans(self, services: list[str]) -> list[CloudEvent]:
        requests: list[CloudEvent] = []
        for service in services:
            for waiting in await self.pending_approvals(service):
                event = new_event(
                    ReplanRequested(
                        deployment_id=waiting.deployment_id,
                        release_id=waiting.release_id,
                        service=waiting.service,
                        environment=waiting.environment,
                        reason=f"the pipeline of {service} changed",
                    ),
                    source=SOURCE,
                    subject=waiting.deployment_id,
                    correlationid=waiting.release_id,
                )
                await self.log.append(deployment_stream(waiting.deployment_id), [event], None)
                requests.append(event)
        if requests and self.on_appended is not None:
            self.on_appended(requests)
        return requests
