"""The in-memory hub between the dashboard's Kafka subscription and the browsers.

It holds the board (``core.Board``), starts it from the log once, folds every event
the subscription hands it (each event once: the log and the topics overlap at
start, and Kafka delivers at least once), and wakes every server-sent-event stream
waiting for a change. Streams read the newest board when they wake, so a burst of
events costs a browser one update, not one per event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable

from consumers.dashboard.core import Board, deployment_of, evolve
from events.build import BuildCompleted
from events.deployment import deployment_stream
from events.envelope import CloudEvent

log = logging.getLogger(__name__)

#: event ids remembered to drop a second delivery
SEEN = 50_000
#: how many recent changes a stream can catch up on by deployment id
RECENT = 2_000


class Hub:
    def __init__(self) -> None:
        self.board = Board()
        #: bumped on every change; a stream remembers the last it rendered
        self.seq = 0
        self.closed = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._recent: deque[tuple[int, str | None]] = deque(maxlen=RECENT)
        self._changed = asyncio.Condition()
        #: counters for tests and /metrics
        self.stats = {"fed": 0, "duplicates": 0, "loaded": 0}

    def _fold(self, event: CloudEvent) -> bool:
        if event.id in self._seen:
            self.stats["duplicates"] += 1
            return False
        self._seen[event.id] = None
        if len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        try:
            self.board = evolve(self.board, event)
        except Exception:  # one event the board cannot fold must not stop the dashboard
            log.exception("the dashboard could not fold %s %s", event.type, event.id)
            return False
        self.seq += 1
        self._recent.append((self.seq, deployment_of(event)))
        return True

    async def load(self, log: object) -> None:
        """The board as the log has it now (the page's first state); later events come
        from the subscription. ``log``: a ``PostgresEventLog``."""
        from adapters.eventlog import PostgresEventLog

        assert isinstance(log, PostgresEventLog)
        builds = [f"{BuildCompleted.TYPE}.v{v}" for v in range(1, BuildCompleted.VERSION + 1)]
        rows = [row async for row in log.scan(stream_prefix=deployment_stream(""))]
        rows += [row async for row in log.scan(types=builds)]
        for raw in sorted(rows, key=lambda r: r.position):
            try:
                event = log.decode(raw).event
            except Exception:  # a row no registry knows: the audit shows it, the board cannot
                continue
            if self._fold(event):
                self.stats["loaded"] += 1
        await self._notify()

    async def feed(self, events: Iterable[CloudEvent]) -> None:
        changed = False
        for event in events:
            if self._fold(event):
                self.stats["fed"] += 1
                changed = True
        if changed:
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, after: int, within: float | None = None) -> int | None:
        """The sequence number once it passes ``after``; None once closed (or, with
        ``within`` seconds, the same ``after`` when nothing changed in time)."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.closed or self.seq > after), within
                )
            except TimeoutError:
                return after
        return None if self.closed else self.seq

    def touched(self, after: int) -> set[str] | None:
        """The deployments changed since ``after``; None when that is too long ago to
        tell (every deployment may have changed)."""
        if self._recent and self._recent[0][0] > after + 1:
            return None
        return {dep for seq, dep in self._recent if seq > after and dep is not None}

    async def close(self) -> None:
        """End every stream (before the HTTP server stops: an open stream would hold it)."""
        self.closed = True
        await self._notify()
