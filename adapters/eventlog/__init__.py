"""The event log: append-only streams, a global order, a hash chain, handled records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from adapters.eventlog.postgres import DEFAULT_SCHEMA, PostgresEventLog
from adapters.eventlog.records import AppendResult, Handled, RawRecord, RecordedEvent, VerifyReport
from events.envelope import CloudEvent


class EventLog(Protocol):
    """What a consumer needs of the log."""

    async def append(
        self,
        stream_id: str,
        events: Sequence[CloudEvent],
        expected_version: int | None,
        *,
        handled: Handled | None = None,
        publish: bool = True,
    ) -> AppendResult:
        """Append atomically with optimistic concurrency and an idempotency record."""
        ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """One stream in version order from ``after_version + 1``, upcast and validated."""
        ...

    async def is_handled(self, consumer: str, event_id: str) -> bool:
        """Whether ``consumer`` already handled ``event_id``."""
        ...


__all__ = [
    "DEFAULT_SCHEMA",
    "AppendResult",
    "EventLog",
    "Handled",
    "PostgresEventLog",
    "RawRecord",
    "RecordedEvent",
    "VerifyReport",
]
