"""The shell keeps the state it folded per stream and reads only what came after it —
and the state it decides on is always the whole stream's, whoever appended to it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from adapters.eventlog import PostgresEventLog
from consumers.contract import Consumer
from consumers.shell import ConsumerShell
from events import CloudEvent
from shiplog.runner import make_broker

BUILD = {"service": "checkout", "version": "1.0.0", "artifact": "reg/checkout:1.0.0"}


def build(version: str) -> CloudEvent:
    return CloudEvent(
        source="ci/test",
        type="shiplog.build.completed.v1",
        subject="checkout",
        data={**BUILD, "version": version},
    )


class Counting:
    """A consumer whose state is the versions in its stream, in order; each event it
    handles notes the state it decided on (and appends nothing)."""

    def __init__(self, stream: str):
        self.stream = stream
        self.decided_on: list[tuple[str, ...]] = []

    def consumer(self) -> Consumer[tuple[str, ...]]:
        def evolve(state: tuple[str, ...], event: CloudEvent) -> tuple[str, ...]:
            return (*state, str(event.data["version"]))  # type: ignore[index]

        def decide(state: tuple[str, ...], event: CloudEvent, now: datetime) -> Sequence[CloudEvent]:
            self.decided_on.append(state)
            return []

        return Consumer(
            name=f"folding-{uuid.uuid4().hex[:8]}",
            topics=("shiplog.builds",),
            stream_for=lambda event: self.stream,
            initial=tuple,
            evolve=evolve,
            decide=decide,
        )


class Reads:
    """The log, noting every read of a stream and where it started."""

    def __init__(self, log: PostgresEventLog):
        self.log = log
        self.calls: list[tuple[str, int]] = []

    async def read_stream(self, stream_id: str, after_version: int = 0) -> Any:
        self.calls.append((stream_id, after_version))
        return await self.log.read_stream(stream_id, after_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


async def test_a_known_stream_is_read_from_where_the_shell_left_it(eventlog: PostgresEventLog) -> None:
    stream = f"folding-{uuid.uuid4().hex}"
    counting = Counting(stream)
    reads = Reads(eventlog)
    shell = ConsumerShell(counting.consumer(), reads, make_broker("127.0.0.1:9"))  # type: ignore[arg-type]

    await eventlog.append(stream, [build("1.0.0"), build("1.0.1")], 0)
    await shell.handle(build("9.0.0"))
    # another writer appends meanwhile: the next decision sees it
    await eventlog.append(stream, [build("1.0.2")], 2)
    await shell.handle(build("9.0.1"))
    await shell.handle(build("9.0.2"))

    assert counting.decided_on == [
        ("1.0.0", "1.0.1"),
        ("1.0.0", "1.0.1", "1.0.2"),
        ("1.0.0", "1.0.1", "1.0.2"),
    ]
    assert reads.calls == [(stream, 0), (stream, 2), (stream, 3)]

    # a shell that never saw the stream (a restart) folds it whole, to the same state
    fresh = Counting(stream)
    other = ConsumerShell(fresh.consumer(), eventlog, make_broker("127.0.0.1:9"))
    await other.handle(build("9.0.3"))
    assert fresh.decided_on == [("1.0.0", "1.0.1", "1.0.2")]


async def test_the_shell_forgets_the_streams_handled_longest_ago(
    eventlog: PostgresEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("consumers.shell.FOLDED_STREAMS", 2)
    streams = [f"folding-{uuid.uuid4().hex}" for _ in range(3)]
    for stream in streams:
        await eventlog.append(stream, [build("1.0.0")], 0)
    reads = Reads(eventlog)
    counting = Counting(streams[0])
    consumer = counting.consumer()
    # one consumer whose events land on the stream the event's version names
    routed = replace(consumer, stream_for=lambda event: streams[int(str(event.data["version"])[0])])  # type: ignore[index]
    shell = ConsumerShell(routed, reads, make_broker("127.0.0.1:9"))  # type: ignore[arg-type]

    for first in ("0.1.0", "1.1.0", "2.1.0"):  # the third pushes the first out
        await shell.handle(build(first))
    await shell.handle(build("2.2.0"))  # still kept: read from where it was
    await shell.handle(build("0.2.0"))  # forgotten: read whole again
    assert reads.calls == [(s, 0) for s in streams] + [(streams[2], 1), (streams[0], 0)]
    assert counting.decided_on == [("1.0.0",)] * 5
    assert len(shell._folded) == 2
