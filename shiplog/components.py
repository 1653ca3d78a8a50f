"""Which components exist: the relay, the command API and every consumer, by the
name ``shiplog run NAME`` takes. Later consumers register here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consumers.approval import APPROVAL
from consumers.contract import Consumer
from consumers.execution import EXECUTION
from consumers.notification import NOTIFICATION
from consumers.planning.core import PLANNING
from consumers.planning.releases import RELEASES
from consumers.recorder import RECORDER
from consumers.rollback import ROLLBACK
from consumers.rollback.drill import DRILL
from consumers.timers import TIMERS
from consumers.verification import VERIFICATION

CONSUMERS: dict[str, Consumer[Any]] = {
    c.name: c
    for c in (
        RECORDER,
        TIMERS,
        PLANNING,
        RELEASES,
        APPROVAL,
        EXECUTION,
        VERIFICATION,
        ROLLBACK,
        DRILL,
        NOTIFICATION,
    )
}
RELAY = "relay"
API = "api"
ALL = (RELAY, API, *CONSUMERS)


def subscriptions() -> Mapping[str, tuple[Sequence[str], Sequence[str]]]:
    """consumer name -> (catalogue topics, accepted type names), for the relay's
    re-publishing on start."""
    return {name: (c.topics, c.accepts) for name, c in CONSUMERS.items()}
