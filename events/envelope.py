"""The CloudEvents 1.0 envelope in structured JSON mode, with shiplog's extensions.

Every message value on every shiplog topic, and every row of the event log, is one
of these: ``specversion, id, source, type, time, subject, datacontenttype, data``
plus ``correlationid`` (the release), ``causationid`` (the event reacted to) and
``actor`` (the authenticated principal, on human actions).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from events.errors import InvalidEvent

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION: Literal["1.0"] = "1.0"

#: ``shiplog.<noun>.<verb>.v<N>``; nouns and verbs may hold underscores.
TYPE_PATTERN = re.compile(r"^(?P<name>shiplog(?:\.[a-z][a-z0-9_]*)+)\.v(?P<version>[1-9][0-9]*)$")


def split_type(event_type: str) -> tuple[str, int]:
    """``shiplog.build.completed.v1`` -> ``("shiplog.build.completed", 1)``."""
    match = TYPE_PATTERN.fullmatch(event_type)
    if match is None:
        raise InvalidEvent(
            "unknown_type",
            f"event type {event_type!r} is not of the form shiplog.<noun>.<verb>.v<N>",
            [("type", "bad format")],
        )
    return match["name"], int(match["version"])


def join_type(name: str, version: int) -> str:
    return f"{name}.v{version}"


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """pydantic errors as ``(dotted.field.path, reason)`` pairs."""
    out = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        out.append((path or "<root>", err["msg"]))
    return out


class CloudEvent(BaseModel):
    """One event, as it travels and as it is stored. ``data`` is the type's payload."""

    # CloudEvents consumers must accept extension attributes they do not know;
    # they are kept (and stored, and hashed) as they came.
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    specversion: Literal["1.0"] = SPEC_VERSION
    id: str = Field(default_factory=new_event_id, min_length=1)
    source: str = Field(min_length=1)
    type: str
    time: datetime = Field(default_factory=utcnow)
    subject: str = Field(min_length=1)
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    correlationid: str | None = None
    causationid: str | None = None
    actor: str | None = None

    @field_validator("type")
    @classmethod
    def _type_is_shiplog(cls, value: str) -> str:
        if not TYPE_PATTERN.fullmatch(value):
            raise ValueError("must be of the form shiplog.<noun>.<verb>.v<N>")
        return value

    @field_validator("time")
    @classmethod
    def _time_is_aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (RFC 3339)")
        return value

    @property
    def type_name(self) -> str:
        return split_type(self.type)[0]

    @property
    def type_version(self) -> int:
        return split_type(self.type)[1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, without absent optional attributes (CloudEvents omits them)."""
        return self.model_dump(mode="json", exclude_none=True)

    def canonical_json(self) -> str:
        """Canonical text: sorted keys, no whitespace, ASCII only.

        This is exactly what the log stores and hashes, and what goes on the wire,
        so a consumer, an auditor and the hash chain all see the same bytes. (The
        chain hashes the stored text, never a re-serialisation, so the serialiser
        only has to be deterministic, not identical across versions.)
        """
        obj = self.to_dict()
        text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
        if text.isascii():
            return text
        # orjson writes UTF-8; keep stored bodies ASCII whatever the database encoding.
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def to_bytes(self) -> bytes:
        return self.canonical_json().encode("ascii")


def parse_envelope(raw: bytes | str) -> dict[str, Any]:
    """Bytes from a topic -> the envelope as a dict, checked for shape only.

    Full validation happens in the registry, after upcasting, because an old
    version's fields may only make sense once upcast.
    """
    try:
        obj: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent("not_json", f"message is not JSON ({exc})") from exc
    return check_envelope(obj)


def check_envelope(obj: Any) -> dict[str, Any]:
    """A parsed JSON value -> the envelope dict, if it has a CloudEvent's shape."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_cloudevent", "message is JSON but not an object")
    missing = [k for k in ("specversion", "id", "source", "type", "subject") if k not in obj]
    if missing:
        raise InvalidEvent(
            "not_cloudevent",
            "message is not a CloudEvent",
            [(k, "required attribute missing") for k in missing],
        )
    if not isinstance(obj["type"], str):
        raise InvalidEvent("not_cloudevent", "invalid CloudEvent", [("type", "must be a string")])
    if not isinstance(obj.get("data", {}), dict):
        raise InvalidEvent("not_cloudevent", "invalid CloudEvent", [("data", "must be a JSON object")])
    return obj
