"""The event contract: envelope, payload models, registry, upcasters, topics."""

from events.base import EventData
from events.build import BuildCompleted
from events.deadletter import MessageDeadLettered
from events.envelope import CONTENT_TYPE, CloudEvent, split_type
from events.registry import REGISTRY, EventRegistry, new_event

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "BuildCompleted",
    "CloudEvent",
    "EventData",
    "EventRegistry",
    "MessageDeadLettered",
    "new_event",
    "split_type",
]
