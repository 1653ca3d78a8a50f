"""What a consumer is, to the shell that runs it.

A consumer is data plus pure functions: its name (the Kafka consumer group and
the owner of its handled records), the topics it reads, which stream an incoming
event belongs to, and ``evolve`` / ``decide`` over that stream. The shell in
``consumers.shell`` does all the I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from events.envelope import CloudEvent

S = TypeVar("S")


@dataclass(frozen=True)
class Consumer(Generic[S]):
    #: consumer group id and the ``consumer`` of its handled records.
    name: str
    #: catalogue topic names it subscribes to.
    topics: tuple[str, ...]
    #: the stream an incoming event is decided against (and appended to).
    stream_for: Callable[[CloudEvent], str]
    #: the state of an empty stream.
    initial: Callable[[], S]
    #: fold one recorded event into the state.
    evolve: Callable[[S, CloudEvent], S]
    #: ``decide(state, incoming, now=...) -> new events``; pure.
    decide: Callable[..., Sequence[CloudEvent]]
    #: False for a consumer that records events from outside, which the relay
    #: must not publish again.
    publish: bool = True
    description: str = ""

    def fold(self, history: Sequence[CloudEvent]) -> S:
        state = self.initial()
        for event in history:
            state = self.evolve(state, event)
        return state

    def run_decide(self, state: S, event: CloudEvent, now: datetime, **policy: Any) -> list[CloudEvent]:
        return list(self.decide(state, event, now=now, **policy))
