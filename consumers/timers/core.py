"""The timers consumer's pure side.

Storing a timer is its whole reaction to ``timer.scheduled`` (done in ``gather``);
it appends nothing then. What it appends, ``timer.fired``, comes from the
scheduler, with an id derived from the timer's, so firing twice (a crash between
appending and marking) is one event.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from consumers.contract import Consumer
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.timer import TimerCancelled, TimerFired, TimerScheduled
from events.topics import TIMERS as TIMERS_TOPIC

NAME = "timers"
SOURCE = "shiplog/timers"
_FIRED_NS = uuid.UUID("5a1c7f0e-3d2b-4c8a-9e6f-0b1d2c3e4f50")
#: Timer bookkeeping has no stream of its own to decide against.
BOOKKEEPING_STREAM = "timers"


def fired_event_id(timer_id: str) -> str:
    return str(uuid.uuid5(_FIRED_NS, timer_id))


def fired(
    timer_id: str,
    stream_id: str,
    due_at: datetime,
    purpose: str,
    payload: dict[str, Any],
    *,
    fired_at: datetime,
    subject: str,
    correlationid: str | None,
) -> CloudEvent:
    event = new_event(
        TimerFired(
            timer_id=timer_id,
            stream_id=stream_id,
            due_at=due_at,
            fired_at=fired_at,
            purpose=purpose,
            payload=payload,
        ),
        source=SOURCE,
        subject=subject,
        correlationid=correlationid,
        causationid=None,
    )
    return event.model_copy(update={"id": fired_event_id(timer_id), "time": fired_at})


def evolve(state: None, event: CloudEvent) -> None:
    return None


def decide(state: None, event: CloudEvent, *, now: datetime, facts: Any = None) -> list[CloudEvent]:
    return []


async def gather(ports: Any, state: None, event: CloudEvent) -> None:
    """Store or cancel the timer (idempotent: the same timer id is one timer)."""
    store = ports.timers
    if event.type_name == TimerScheduled.TYPE:
        t = REGISTRY.payload(event, TimerScheduled)
        # timer.fired goes to t.stream_id, whose subject may differ from the stream
        # that scheduled it (a lane waking the next deployment): payload may say so.
        subject = t.payload.get("subject", event.subject)
        payload = {**t.payload, "_subject": subject, "_correlationid": event.correlationid}
        await store.schedule(t.timer_id, t.stream_id, t.due_at, t.purpose, payload)
        if ports.wake is not None:
            ports.wake()
    else:
        c = REGISTRY.payload(event, TimerCancelled)
        await store.cancel(c.timer_id)


TIMERS: Consumer[None] = Consumer(
    name=NAME,
    topics=(TIMERS_TOPIC.name,),
    stream_for=lambda event: BOOKKEEPING_STREAM,
    initial=lambda: None,
    evolve=evolve,
    decide=decide,
    accepts=(TimerScheduled.TYPE, TimerCancelled.TYPE),
    gather=gather,
    description="keeps durable timers and fires timer.fired when due",
)
