"""What a consumer is, to the shell that runs it.

A consumer is data plus pure functions: its name (the Kafka consumer group and
the owner of its handled records), the topics it reads, which stream an incoming
event belongs to, and ``evolve`` / ``decide`` over that stream. The shell in
``consumers.shell`` does all the I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from events.envelope import CloudEvent

S = TypeVar("S")


@dataclass
class Ports:
    """The adapters a consumer's ``gather`` may use, built by the composition root.
    A consumer touches only the ones it needs; the rest stay None."""

    log: Any = None
    timers: Any = None
    #: called after a timer was stored, to wake the scheduler early
    wake: Callable[[], None] | None = None
    #: ``targets(type, settings) -> Target``
    targets: Any = None
    #: the loaded pipelines config (service -> pipeline)
    pipelines: Any = None
    #: one active deployment per (service, environment)
    lanes: Any = None
    #: the pipelines directory (relative secret files are read from it)
    config_dir: Any = None
    #: delivers notifications to the channels of notifications.yaml
    #: (``consumers.notification.Courier``)
    notifier: Any = None
    extra: dict[str, Any] | None = None


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
    #: type names (``shiplog.x.y``) it reacts to; others on its topics are acked and
    #: skipped without a handled record. Empty: every type.
    accepts: tuple[str, ...] = ()
    #: dead-letter messages of a type no one knows (the registry's), instead of
    #: skipping them with the others it does not accept: set on the one consumer
    #: that reads the outside topics for everyone (the recorder), so a bad build
    #: event is dead-lettered once, not by every consumer group nor by none
    guards_unknown: bool = False
    #: the imperative part, run by the shell between folding and deciding:
    #: ``gather(ports, state, event) -> facts`` does the I/O (apply a step through a
    #: target, query metrics, look at the config) and returns what happened as data;
    #: ``decide`` then receives it as ``facts=``. Must be idempotent: a redelivered
    #: event runs it again.
    gather: Callable[[Any, S, CloudEvent], Awaitable[Any]] | None = None
    #: for events whose stream cannot be told from the event alone (a rollback
    #: command names a service's environment, not a deployment):
    #: ``locate(ports, event) -> stream id``, used instead of ``stream_for``.
    locate: Callable[[Any, CloudEvent], Awaitable[str]] | None = None
    #: what to record instead of acting on a command whose signature does not verify
    #: (``refuse(command, reason, now=...) -> new events``, appended to the command's
    #: stream); None: nothing is recorded, the command is only skipped
    refuse: Callable[..., Sequence[CloudEvent]] | None = None

    def wants(self, event: CloudEvent) -> bool:
        return not self.accepts or event.type_name in self.accepts

    def fold(self, history: Sequence[CloudEvent]) -> S:
        state = self.initial()
        for event in history:
            state = self.evolve(state, event)
        return state

    def run_decide(self, state: S, event: CloudEvent, now: datetime, **policy: Any) -> list[CloudEvent]:
        return list(self.decide(state, event, now=now, **policy))

    async def run_gather(self, ports: Any, state: S, event: CloudEvent) -> dict[str, Any]:
        """``{"facts": ...}`` for decide, or nothing when there is no gather step."""
        if self.gather is None:
            return {}
        return {"facts": await self.gather(ports, state, event)}
