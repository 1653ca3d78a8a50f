"""The CloudEvents envelope: canonical text, shape checks, type names, attribute rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from events.envelope import CloudEvent, join_type, parse_envelope, split_type
from events.errors import InvalidEvent

T0 = datetime(2024, 5, 14, 9, 31, 7, 412000, tzinfo=UTC)


def envelope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "3f2b8c1e-7d4a-4e0b-9a6f-2c5d8e1f4b7a",
        "source": "ci/github-actions/acme/checkout",
        "type": "shiplog.build.completed.v1",
        "time": "2024-05-14T09:31:07.412Z",
        "subject": "checkout",
        "data": {"service": "checkout", "version": "1.4.2"},
    }
    base.update(overrides)
    return base


def without(key: str) -> dict[str, Any]:
    env = envelope()
    del env[key]
    return env


# --- canonical_json ---------------------------------------------------------------

CANONICAL_CASES = [
    pytest.param(
        CloudEvent(source="ci/x", subject="checkout", type="shiplog.build.completed.v1", time=T0),
        id="minimal",
    ),
    pytest.param(
        CloudEvent(
            id="e-1",
            source="ci/x",
            subject="checkout",
            type="shiplog.build.completed.v1",
            time=T0,
            data={"zeta": 1, "alpha": {"y": [3, 2, 1], "b": None}, "mid": 0.5},
            correlationid="c-1",
            causationid="e-0",
            actor="alice@example.com",
        ),
        id="nested-data-and-extensions",
    ),
    pytest.param(
        CloudEvent(
            source="ci/x",
            subject="café",
            type="shiplog.build.completed.v1",
            time=T0,
            data={"author": "Zoë Ångström", "note": "デプロイ ✓"},
        ),
        id="non-ascii-text",
    ),
    pytest.param(
        CloudEvent(
            source="ci/x",
            subject="checkout",
            type="shiplog.build.completed.v1",
            time=datetime(2024, 5, 14, 11, 31, 7, tzinfo=timezone(timedelta(hours=2))),
        ),
        id="non-utc-offset",
    ),
]


def _assert_keys_sorted(value: Any) -> None:
    if isinstance(value, dict):
        assert list(value) == sorted(value)
        for item in value.values():
            _assert_keys_sorted(item)
    elif isinstance(value, list):
        for item in value:
            _assert_keys_sorted(item)


@pytest.mark.parametrize("event", CANONICAL_CASES)
def test_canonical_json_sorts_keys_at_every_depth(event: CloudEvent) -> None:
    _assert_keys_sorted(json.loads(event.canonical_json()))


@pytest.mark.parametrize("event", CANONICAL_CASES)
def test_canonical_json_is_compact_ascii(event: CloudEvent) -> None:
    text = event.canonical_json()
    assert text.isascii()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert "\n" not in text


@pytest.mark.parametrize("event", CANONICAL_CASES)
def test_canonical_json_round_trips_to_an_equal_event(event: CloudEvent) -> None:
    again = CloudEvent.model_validate_json(event.canonical_json())
    assert again == event
    assert again.canonical_json() == event.canonical_json()


@pytest.mark.parametrize("event", CANONICAL_CASES)
def test_to_bytes_is_the_canonical_text_in_ascii(event: CloudEvent) -> None:
    assert event.to_bytes() == event.canonical_json().encode("ascii")


def test_canonical_json_omits_absent_optional_attributes() -> None:
    event = CloudEvent(source="ci/x", subject="checkout", type="shiplog.build.completed.v1")
    assert set(json.loads(event.canonical_json())) == {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "data",
    }


def test_canonical_json_escapes_non_ascii_rather_than_dropping_it() -> None:
    event = CloudEvent(source="ci/x", subject="checkout", type="shiplog.build.completed.v1", data={"a": "é"})
    assert '"a":"\\u00e9"' in event.canonical_json()


# --- parse_envelope ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(json.dumps(envelope()), id="str"),
        pytest.param(json.dumps(envelope()).encode(), id="bytes"),
        pytest.param(json.dumps(envelope(), indent=2).encode(), id="pretty-bytes"),
        pytest.param(json.dumps(without("data")), id="no-data"),
        pytest.param(json.dumps(without("time")), id="no-time"),
    ],
)
def test_parse_envelope_returns_the_object_unchanged(raw: str | bytes) -> None:
    assert parse_envelope(raw) == json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "reason", "errors"),
    [
        pytest.param(b"", "not_json", [], id="empty-bytes"),
        pytest.param(b"not json", "not_json", [], id="plain-text"),
        pytest.param('{"id": ', "not_json", [], id="truncated"),
        pytest.param(b'{"id": "caf\xe9"}', "not_json", [], id="latin1-not-utf8"),
        pytest.param(b"\xc3\x28", "not_json", [], id="invalid-utf8-sequence"),
        pytest.param(b"[]", "not_cloudevent", [], id="json-array"),
        pytest.param(b"42", "not_cloudevent", [], id="json-number"),
        pytest.param(b'"shiplog"', "not_cloudevent", [], id="json-string"),
        pytest.param(b"null", "not_cloudevent", [], id="json-null"),
        pytest.param(
            b"{}",
            "not_cloudevent",
            [
                ("specversion", "required attribute missing"),
                ("id", "required attribute missing"),
                ("source", "required attribute missing"),
                ("type", "required attribute missing"),
                ("subject", "required attribute missing"),
            ],
            id="empty-object",
        ),
        *(
            pytest.param(
                json.dumps(without(key)),
                "not_cloudevent",
                [(key, "required attribute missing")],
                id=f"missing-{key}",
            )
            for key in ("specversion", "id", "source", "type", "subject")
        ),
        pytest.param(
            json.dumps(envelope(type=1)),
            "not_cloudevent",
            [("type", "must be a string")],
            id="type-not-string",
        ),
        pytest.param(
            json.dumps(envelope(type=None)),
            "not_cloudevent",
            [("type", "must be a string")],
            id="type-null",
        ),
        *(
            pytest.param(
                json.dumps(envelope(data=data)),
                "not_cloudevent",
                [("data", "must be a JSON object")],
                id=f"data-{label}",
            )
            for label, data in [
                ("list", [1, 2]),
                ("string", "x"),
                ("number", 3),
                ("null", None),
                ("bool", True),
            ]
        ),
    ],
)
def test_parse_envelope_rejects_with_reason_and_field(
    raw: str | bytes, reason: str, errors: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_envelope(raw)
    assert caught.value.reason == reason
    assert caught.value.errors == errors


def test_parse_envelope_keeps_the_json_error_as_cause() -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_envelope(b"\xff")
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


# --- split_type / join_type ---------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("shiplog.build.completed.v1", ("shiplog.build.completed", 1)),
        ("shiplog.message.dead_lettered.v1", ("shiplog.message.dead_lettered", 1)),
        ("shiplog.deployment.rolled_back.v2", ("shiplog.deployment.rolled_back", 2)),
        ("shiplog.verification.inconclusive.v10", ("shiplog.verification.inconclusive", 10)),
        ("shiplog.step2.applied.v3", ("shiplog.step2.applied", 3)),
    ],
)
def test_split_type_separates_name_and_version(event_type: str, expected: tuple[str, int]) -> None:
    assert split_type(event_type) == expected
    assert join_type(*expected) == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("", id="empty"),
        pytest.param("build.completed.v1", id="no-prefix"),
        pytest.param("acme.build.completed.v1", id="foreign-prefix"),
        pytest.param("shiplog.build.completed", id="no-version"),
        pytest.param("shiplog.build.completed.v", id="empty-version"),
        pytest.param("shiplog.build.completed.v0", id="version-zero"),
        pytest.param("shiplog.build.completed.v01", id="leading-zero"),
        pytest.param("shiplog.build.completed.V1", id="upper-v"),
        pytest.param("shiplog.build.completed.vx", id="non-numeric-version"),
        pytest.param("shiplog.build.completed.1", id="version-without-v"),
        pytest.param("shiplog.Build.completed.v1", id="upper-case-noun"),
        pytest.param("shiplog.build-x.completed.v1", id="hyphen"),
        pytest.param("shiplog..completed.v1", id="empty-segment"),
        pytest.param("shiplog.1build.completed.v1", id="segment-starts-with-digit"),
        pytest.param(" shiplog.build.completed.v1", id="leading-space"),
        pytest.param("shiplog.build.completed.v1 ", id="trailing-space"),
        pytest.param(
            "shiplog.build.completed.v1\n",
            id="trailing-newline",
        ),
    ],
)
def test_split_type_rejects_malformed_types_as_unknown_type(event_type: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        split_type(event_type)
    assert caught.value.reason == "unknown_type"
    assert caught.value.errors == [("type", "bad format")]


# --- CloudEvent attribute rules -----------------------------------------------------


@pytest.mark.parametrize(
    "time",
    [
        pytest.param("2024-05-14T09:31:07", id="iso-string-without-offset"),
        pytest.param("2024-05-14T09:31:07.412", id="fractional-without-offset"),
        pytest.param(datetime(2024, 5, 14, 9, 31, 7), id="naive-datetime"),
    ],
)
def test_naive_time_is_rejected(time: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate(envelope(time=time))
    [error] = caught.value.errors()
    assert error["loc"] == ("time",)
    assert "time zone" in error["msg"]


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2024-05-14T09:31:07.412Z", T0),
        ("2024-05-14T11:31:07.412+02:00", T0),
        ("2024-05-14T04:31:07.412-05:00", T0),
    ],
)
def test_time_with_an_offset_is_accepted_as_the_same_instant(time: str, expected: datetime) -> None:
    assert CloudEvent.model_validate(envelope(time=time)).time == expected


@pytest.mark.parametrize("specversion", ["0.3", "1.1", "1", "2.0", "", " 1.0"])
def test_specversion_other_than_1_0_is_rejected(specversion: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate(envelope(specversion=specversion))
    [error] = caught.value.errors()
    assert error["loc"] == ("specversion",)
    assert "1.0" in error["msg"]


def test_specversion_as_a_json_number_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate_json(json.dumps(envelope(specversion=1.0)))
    assert caught.value.errors()[0]["loc"] == ("specversion",)


@pytest.mark.parametrize(
    "event_type", ["build.completed.v1", "shiplog.build.completed", "shiplog.build.completed.v0"]
)
def test_envelope_rejects_a_type_outside_the_shiplog_naming_scheme(event_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate(envelope(type=event_type))
    assert caught.value.errors()[0]["loc"] == ("type",)


@pytest.mark.parametrize("key", ["id", "source", "subject"])
def test_empty_identifying_attributes_are_rejected(key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CloudEvent.model_validate(envelope(**{key: ""}))
    assert caught.value.errors()[0]["loc"] == (key,)


def test_envelope_exposes_type_name_and_version() -> None:
    event = CloudEvent.model_validate(envelope(type="shiplog.deployment.rolled_back.v2"))
    assert (event.type_name, event.type_version) == ("shiplog.deployment.rolled_back", 2)


def test_envelope_is_frozen() -> None:
    event = CloudEvent.model_validate(envelope())
    with pytest.raises(ValidationError):
        event.subject = "payments"
