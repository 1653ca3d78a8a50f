"""The registry: ``(type, version)`` -> the current pydantic model, and decoding.

``decode`` is the one read path for events from anywhere (a topic, the log, a
file): parse, upcast to the current version, validate the envelope and the data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from events import (
    access,
    approval,
    command,
    deployment,
    drill,
    execution,
    notification,
    release,
    rollback,
    verification,
)
from events.base import EventData
from events.build import BuildCompleted
from events.deadletter import MessageDeadLettered
from events.envelope import (
    CloudEvent,
    check_envelope,
    join_type,
    parse_envelope,
    split_type,
    validation_errors,
)
from events.errors import InvalidEvent
from events.timer import TimerCancelled, TimerFired, TimerScheduled
from events.upcasters import UPCASTERS, Envelope, Upcaster

D = TypeVar("D", bound=EventData)

MAX_UPCAST_STEPS = 100


class EventRegistry:
    def __init__(
        self,
        models: Iterable[type[EventData]],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ):
        self._models: dict[str, type[EventData]] = {}
        for model in models:
            if model.TYPE in self._models:
                raise ValueError(f"two models registered for {model.TYPE}")
            self._models[model.TYPE] = model
        self._upcasters = dict(upcasters or {})

    def knows(self, name: str) -> bool:
        """Whether ``shiplog.x.y`` (without version) is a type this registry has."""
        return name in self._models

    @property
    def models(self) -> dict[str, type[EventData]]:
        return dict(self._models)

    def model_for(self, event_type: str) -> type[EventData]:
        """The current model of ``shiplog.x.y.vN``; raises for an unknown type or a
        version newer than this code knows."""
        name, version = split_type(event_type)
        model = self._models.get(name)
        if model is None:
            raise InvalidEvent("unknown_type", f"unknown event type {name!r}", [("type", event_type)])
        if version > model.VERSION:
            raise InvalidEvent(
                "unknown_type",
                f"event version {version} of {name} is newer than this shiplog knows (v{model.VERSION})",
                [("type", event_type)],
            )
        return model

    def upcast(self, envelope: Envelope) -> Envelope:
        """Apply upcasters until the envelope is at its type's current version."""
        model = self.model_for(envelope["type"])
        name, version = split_type(envelope["type"])
        if version != model.VERSION:
            # Upcasters may edit nested dicts in place; never the caller's.
            envelope = copy.deepcopy(envelope)
        for _ in range(MAX_UPCAST_STEPS):
            if version == model.VERSION:
                return envelope
            step = self._upcasters.get((name, version))
            if step is None:
                raise InvalidEvent(
                    "unknown_type",
                    f"no upcaster from {name} v{version} to v{version + 1}",
                    [("type", envelope["type"])],
                )
            envelope = step(envelope)
            next_name, next_version = split_type(envelope["type"])
            if (next_name, next_version) != (name, version + 1):
                raise RuntimeError(f"upcaster {step.__name__} must produce {join_type(name, version + 1)}")
            version = next_version
        raise RuntimeError(f"upcast chain of {name} does not terminate")

    def decode(self, raw: bytes | str | Envelope) -> CloudEvent:
        """Raw bytes (or an already parsed dict) -> a validated, current-version event."""
        envelope = check_envelope(raw) if isinstance(raw, dict) else parse_envelope(raw)
        envelope = self.upcast(envelope)
        model = self.model_for(envelope["type"])
        try:
            event = CloudEvent.model_validate(envelope)
        except ValidationError as exc:
            raise InvalidEvent("validation", "invalid CloudEvent envelope", validation_errors(exc)) from exc
        try:
            data = model.model_validate(event.data)
        except ValidationError as exc:
            raise InvalidEvent(
                "validation", f"invalid {event.type} data", validation_errors(exc, "data")
            ) from exc
        return event.model_copy(update={"data": data.model_dump(mode="json", exclude_none=True)})

    def payload(self, event: CloudEvent, model: type[D]) -> D:
        """The typed data of a decoded event."""
        if event.type_name != model.TYPE:
            raise TypeError(f"{event.type} is not a {model.TYPE}")
        return model.model_validate(event.data)

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        """JSON Schema of every event type: the envelope with its ``data`` model."""
        envelope_schema = CloudEvent.model_json_schema()
        out: dict[str, dict[str, Any]] = {}
        for _, model in sorted(self._models.items()):
            data_schema = model.model_json_schema()
            defs = data_schema.pop("$defs", {})
            schema = {
                **envelope_schema,
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"https://shiplog.dev/schemas/{model.event_type()}.json",
                "title": model.event_type(),
                "description": (model.__doc__ or "").strip(),
            }
            properties = dict(schema["properties"])
            properties["type"] = {"const": model.event_type(), "type": "string"}
            properties["data"] = data_schema
            schema["properties"] = properties
            schema["required"] = sorted({*schema.get("required", []), "type", "data"})
            if defs:
                schema["$defs"] = defs
            out[model.event_type()] = schema
        return out


def new_event(
    data: EventData,
    *,
    source: str,
    subject: str,
    correlationid: str | None = None,
    causationid: str | None = None,
    actor: str | None = None,
    **envelope: Any,
) -> CloudEvent:
    """Wrap a payload in its envelope."""
    return CloudEvent(
        type=data.event_type(),
        source=source,
        subject=subject,
        data=data.model_dump(mode="json", exclude_none=True),
        correlationid=correlationid,
        causationid=causationid,
        actor=actor,
        **envelope,
    )


def _models_of(*modules: object) -> list[type[EventData]]:
    return [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, EventData) and "TYPE" in vars(value)
    ]


REGISTRY = EventRegistry(
    [
        BuildCompleted,
        MessageDeadLettered,
        TimerScheduled,
        TimerCancelled,
        TimerFired,
        *_models_of(
            access,
            deployment,
            release,
            drill,
            approval,
            execution,
            verification,
            rollback,
            command,
            notification,
        ),
    ],
    UPCASTERS,
)
