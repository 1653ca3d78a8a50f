"""Which components exist: the relay and every consumer, by the name
``shiplog run NAME`` takes. Later consumers register here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consumers.contract import Consumer
from consumers.recorder import RECORDER
from consumers.timers import TIMERS

CONSUMERS: dict[str, Consumer[Any]] = {c.name: c for c in (RECORDER, TIMERS)}
RELAY = "relay"
ALL = (RELAY, *CONSUMERS)


def subscriptions() -> Mapping[str, tuple[Sequence[str], Sequence[str]]]:
    """consumer name -> (catalogue topics, accepted type names), for the relay's
    re-publishing on start."""
    return {name: (c.topics, c.accepts) for name, c in CONSUMERS.items()}
