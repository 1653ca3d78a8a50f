"""Command signatures: what the API signs, every consumer verifies."""

from __future__ import annotations

import json

import pytest

from events.approval import ApprovalGranted
from events.command import CommandRefused, Pause
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.signature import ATTRIBUTE, COMMAND_TYPES, is_command, key_id_for, sign, verify

KEY = b"k" * 32
KID = key_id_for(KEY)
KEYS = {KID: KEY}


def _command() -> CloudEvent:
    return new_event(
        ApprovalGranted(deployment_id="checkout.production.r1", comment="ok", roles=["release-manager"]),
        source="shiplog/api",
        subject="checkout.production.r1",
        correlationid="r1",
        actor="alice",
    )


def test_a_signed_command_verifies_and_survives_the_wire() -> None:
    signed = sign(_command(), KEY, KID)
    assert verify(signed, KEYS) is None
    # what a consumer decodes from the topic, and what the recorder stores
    decoded = REGISTRY.decode(signed.to_bytes())
    assert verify(decoded, KEYS) is None
    assert json.loads(decoded.canonical_json())[ATTRIBUTE].startswith(f"{KID}:")


def _altered(event: CloudEvent, **changes: object) -> CloudEvent:
    body = json.loads(event.canonical_json())
    for key, value in changes.items():
        if key.startswith("data."):
            body["data"][key.removeprefix("data.")] = value
        else:
            body[key] = value
    return REGISTRY.decode(json.dumps(body))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"actor": "mallory"}, "bad signature", id="another-actor"),
        pytest.param({"data.comment": "sneaky"}, "bad signature", id="altered-data"),
        pytest.param({"subject": "checkout.production.r2"}, "bad signature", id="another-deployment"),
        pytest.param({ATTRIBUTE: "nope"}, "malformed", id="malformed"),
        pytest.param({ATTRIBUTE: "kother:" + "0" * 64}, "unknown key", id="unknown-key"),
        pytest.param({ATTRIBUTE: f"{KID}:" + "0" * 64}, "bad signature", id="forged-mac"),
    ],
)
def test_an_altered_or_forged_signature_is_refused_with_the_reason(
    change: dict[str, object], reason: str
) -> None:
    signed = sign(_command(), KEY, KID)
    assert reason in (verify(_altered(signed, **change), KEYS) or "")


def test_an_unsigned_command_and_one_signed_with_another_key_are_refused() -> None:
    assert "unsigned" in (verify(_command(), KEYS) or "")
    other = b"o" * 32
    assert "unknown key" in (verify(sign(_command(), other, key_id_for(other)), KEYS) or "")
    # a key that claims the right id but is not the key
    assert "bad signature" in (verify(sign(_command(), other, KID), KEYS) or "")


def test_signing_again_replaces_the_signature_and_the_key_never_appears() -> None:
    once = sign(_command(), KEY, KID)
    twice = sign(once, KEY, KID)
    assert verify(twice, KEYS) is None and twice.model_extra == once.model_extra
    assert KEY.decode() not in twice.canonical_json()
    assert KEY.hex() not in twice.canonical_json()
    assert KEY.decode() not in KID


def test_key_ids_are_fingerprints_without_colons() -> None:
    assert key_id_for(KEY) == key_id_for(KEY) != key_id_for(b"x" * 32)
    assert ":" not in KID
    with pytest.raises(ValueError):
        sign(_command(), KEY, "a:b")
    with pytest.raises(ValueError):
        sign(_command(), b"", KID)


def test_which_types_are_commands() -> None:
    assert is_command(ApprovalGranted.TYPE) and is_command(Pause.TYPE)
    assert not is_command(CommandRefused.TYPE)
    assert not is_command("shiplog.access.refused")
    assert not is_command("shiplog.deployment.approved")
    assert CommandRefused.TYPE not in COMMAND_TYPES
    assert {"shiplog.approval.granted", "shiplog.approval.denied", "shiplog.command.rollback"} <= set(
        COMMAND_TYPES
    )
