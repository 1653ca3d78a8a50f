"""The hash chain over the log's global order.

Row n's hash is ``sha256(hash(n-1) || header(n) || body(n))`` where the header
holds every other column of the row — global position, stream id, stream version,
event id, type, topic, partition key, correlation id, the recording time in integer
microseconds and the publish flag — and the body is the event's canonical JSON
exactly as stored. The relay, the dedupe and queries read those columns without
parsing the body, so a column that disagrees with the body must break the chain.
Changing, deleting or reordering any row breaks the chain at that row, and every
row after it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(ts: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    return (ts - _EPOCH) // _MICROSECOND


def chain_hash(
    previous: bytes,
    position: int,
    stream_id: str,
    stream_version: int,
    event_id: str,
    event_type: str,
    topic: str,
    key: str,
    correlation_id: str | None,
    recorded_at: datetime,
    publish: bool,
    body: str,
) -> bytes:
    header = (
        f"{position}\n{stream_id}\n{stream_version}\n{event_id}\n{event_type}\n{topic}\n"
        f"{key}\n{correlation_id or ''}\n{micros(recorded_at)}\n{int(publish)}\n"
    )
    h = hashlib.sha256(previous)
    h.update(header.encode())
    h.update(body.encode())
    return h.digest()
