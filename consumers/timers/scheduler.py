"""Fires due timers: sleeps until the next due time or until a new timer arrives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.eventlog import PostgresEventLog
from adapters.eventlog.timers import PostgresTimerStore
from consumers.timers.core import fired
from events.envelope import CloudEvent
from events.errors import AdapterUnavailable

log = logging.getLogger(__name__)

#: Re-read the table at least this often (another replica may have added timers).
MAX_SLEEP_S = 5.0


@dataclass
class TimerScheduler:
    log: PostgresEventLog
    store: PostgresTimerStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    fired_count: int = 0
    #: called with each fired event once it is in the log: the in-process fast path
    #: (the relay publishes it to Kafka as well, the durable path)
    on_appended: Callable[[list[CloudEvent]], None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """A new timer was stored: look again now."""
        self._wake.set()

    async def fire_due(self) -> int:
        now = self.clock()
        count = 0
        for timer in await self.store.due(now):
            payload = dict(timer.payload)
            subject = str(payload.pop("_subject", timer.stream_id))
            correlationid = payload.pop("_correlationid", None)
            event = fired(
                timer.timer_id,
                timer.stream_id,
                timer.due_at,
                timer.purpose,
                payload,
                fired_at=now,
                subject=subject,
                correlationid=correlationid,
            )
            # The event id is derived from the timer id: a second firing (a crash
            # before mark_fired) is acknowledged as a duplicate.
            result = await self.log.append(timer.stream_id, [event], None)
            await self.store.mark_fired(timer.timer_id, now)
            if self.on_appended is not None and not result.duplicate:
                self.on_appended([event])
            count += 1
        self.fired_count += count
        return count

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                self._wake.clear()
                await self.fire_due()
                next_due = await self.store.next_due()
                delay = 0.1
            except AdapterUnavailable as exc:
                log.warning("timers: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            sleep = MAX_SLEEP_S
            if next_due is not None:
                sleep = max(0.0, min(sleep, (next_due - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)
