"""What the log hands back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from events.envelope import CloudEvent


@dataclass(frozen=True, slots=True)
class Handled:
    """The idempotency record a consumer writes with its output: ``consumer`` has
    handled ``event_id``. A redelivery of ``event_id`` then appends nothing."""

    consumer: str
    event_id: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    #: the stream's version after the append (or as found, for a duplicate).
    stream_version: int
    #: global position of the last event appended (0 when nothing was appended).
    position: int
    #: True when nothing was written because all of it was there already.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: int
    stream_id: str
    stream_version: int
    recorded_at: datetime
    topic: str
    key: str
    publish: bool
    event: CloudEvent


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A row as stored, undecoded: what the relay, replay and verification read."""

    position: int
    stream_id: str
    stream_version: int
    event_id: str
    event_type: str
    topic: str
    key: str
    correlation_id: str | None
    publish: bool
    recorded_at: datetime
    body: str
    hash: bytes


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: int
    #: the first global position where the log is not what was written, else None.
    first_bad_position: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_position is None and self.problem is None
