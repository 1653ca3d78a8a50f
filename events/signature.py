"""Signatures of commands: what tells a command the command API accepted from one
written straight to ``shiplog.commands``.

The API signs every command it publishes with a CloudEvents extension attribute,
``shiplogsig = "<key id>:<hex HMAC-SHA256>"``, computed over the event's canonical
JSON without that attribute. Every consumer verifies a command before acting on it;
one that is unsigned, altered on the way, or signed with a key it does not know is
refused (and the recorder records the refusal).

The key id names which key signed (so keys can be rotated: verifiers hold a map of
them); it is a fingerprint, never the key. Keys never appear in events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

import orjson

from events.approval import ApprovalDenied, ApprovalGranted
from events.command import CommandRefused
from events.envelope import CloudEvent
from events.registry import REGISTRY
from events.topics import COMMANDS, topic_for

#: the CloudEvents extension attribute holding the signature (lowercase letters
#: and digits only, as the spec asks of extension names)
ATTRIBUTE = "shiplogsig"

#: events on shiplog.commands that record something rather than ask for it: they
#: come from shiplog itself (appended to the log, relayed) and carry no signature
_RECORDS = frozenset({CommandRefused.TYPE})


def is_command(type_name: str) -> bool:
    """Whether an event type (``shiplog.x.y``) is a person's command, which must be
    signed: approval answers and ``command.*``, not the records beside them."""
    if type_name in _RECORDS:
        return False
    return type_name in (ApprovalGranted.TYPE, ApprovalDenied.TYPE) or type_name.startswith(
        "shiplog.command."
    )


#: every command type the registry knows (type names without the version)
COMMAND_TYPES: tuple[str, ...] = tuple(
    sorted(name for name in REGISTRY.models if is_command(name) and topic_for(name) is COMMANDS)
)


def key_id_for(key: bytes) -> str:
    """A short, stable name for a key: a fingerprint, from which the key cannot be
    recovered (and no easier to guess from than any signature made with it)."""
    return "k" + hashlib.sha256(b"shiplog command key id\0" + key).hexdigest()[:12]


def signed_bytes(event: CloudEvent) -> bytes:
    """What is signed: the canonical JSON of the event without the signature."""
    obj = event.to_dict()
    obj.pop(ATTRIBUTE, None)
    text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    if not text.isascii():
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def _mac(key: bytes, event: CloudEvent) -> str:
    return hmac.new(key, signed_bytes(event), hashlib.sha256).hexdigest()


def sign(event: CloudEvent, key: bytes, key_id: str) -> CloudEvent:
    """The event with its signature attribute set (replacing any earlier one)."""
    if not key:
        raise ValueError("an empty key signs nothing")
    if not key_id or ":" in key_id:
        raise ValueError("a key id is non-empty and holds no ':'")
    return event.model_copy(update={ATTRIBUTE: f"{key_id}:{_mac(key, event)}"})


def signature_of(event: CloudEvent) -> str | None:
    value = (event.model_extra or {}).get(ATTRIBUTE)
    return value if isinstance(value, str) else None


def verify(event: CloudEvent, keys: Mapping[str, bytes]) -> str | None:
    """None when the event carries a valid signature by one of ``keys`` (key id ->
    key); otherwise why not."""
    raw = (event.model_extra or {}).get(ATTRIBUTE)
    if raw is None:
        return "unsigned: not published by the command API"
    if not isinstance(raw, str):
        return "malformed signature"
    key_id, sep, mac = raw.rpartition(":")
    if not sep or not key_id or len(mac) != 64:
        return "malformed signature"
    key = keys.get(key_id)
    if key is None:
        return f"signed with an unknown key ({key_id[:40]})"
    if not hmac.compare_digest(mac, _mac(key, event)):
        return "bad signature: the command was altered or signed with another key"
    return None
