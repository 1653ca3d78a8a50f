"""The registry: decoding stored and live events, validation errors, JSON Schema export."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from events.base import EventData
from events.build import BuildCompleted
from events.deadletter import MessageDeadLettered
from events.envelope import CloudEvent
from events.errors import InvalidEvent
from events.registry import REGISTRY, EventRegistry, new_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
BUILD_V1 = FIXTURES / "build.completed.v1.json"


def stored(path: Path = BUILD_V1) -> dict[str, Any]:
    return json.loads(path.read_text())


def mutated(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """The stored build.completed.v1 with one dotted path set (or deleted)."""
    env = stored()
    *parents, leaf = path.split(".")
    node = env
    for key in parents:
        node = node[key]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return env


def dead_letter() -> MessageDeadLettered:
    return MessageDeadLettered(
        consumer="planning",
        reason="not_json",
        error="message is not JSON (Expecting value: line 1 column 1 (char 0))",
        topic="shiplog.builds",
        partition=3,
        offset=1042,
        key="checkout",
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        original="bm90IGpzb24=",
    )


# --- decoding the stored fixture ----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(BUILD_V1.read_bytes(), id="bytes"),
        pytest.param(BUILD_V1.read_text(), id="str"),
        pytest.param(stored(), id="dict"),
    ],
)
def test_stored_build_completed_decodes_to_build_completed(raw: bytes | str | dict) -> None:
    event = REGISTRY.decode(raw)
    build = REGISTRY.payload(event, BuildCompleted)
    assert event.type == "shiplog.build.completed.v1"
    assert event.id == "3f2b8c1e-7d4a-4e0b-9a6f-2c5d8e1f4b7a"
    assert event.subject == build.service == "checkout"
    assert build.version == "1.4.2"
    assert build.tests is not None and build.tests.passed == 120
    assert build.security is not None and build.security.critical == 0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("ci_url", "https://github.com/acme/checkout/actions/runs/9087654321"),
        ("tests.skipped", 3),
    ],
)
def test_decoding_keeps_fields_ci_added_that_shiplog_does_not_know(path: str, expected: Any) -> None:
    event = REGISTRY.decode(BUILD_V1.read_bytes())
    node: Any = event.data
    for key in path.split("."):
        node = node[key]
    assert node == expected

    build = REGISTRY.payload(event, BuildCompleted)
    owner: Any = build
    *parents, leaf = path.split(".")
    for key in parents:
        owner = getattr(owner, key)
    assert owner.model_extra == {leaf: expected}


def test_decoded_event_survives_a_second_trip_through_canonical_json() -> None:
    event = REGISTRY.decode(BUILD_V1.read_bytes())
    assert REGISTRY.decode(event.to_bytes()) == event


def test_decoding_does_not_modify_the_callers_dict() -> None:
    raw = stored()
    before = copy.deepcopy(raw)
    REGISTRY.decode(raw)
    assert raw == before


def test_new_event_round_trips_through_decode() -> None:
    event = new_event(dead_letter(), source="shiplog/planning", subject="checkout", correlationid="c-1")
    decoded = REGISTRY.decode(event.to_bytes())
    assert decoded == event
    assert REGISTRY.payload(decoded, MessageDeadLettered) == dead_letter()


def test_payload_refuses_a_model_of_another_type() -> None:
    event = REGISTRY.decode(BUILD_V1.read_bytes())
    with pytest.raises(TypeError):
        REGISTRY.payload(event, MessageDeadLettered)


# --- validation errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("envelope", "field", "reason"),
    [
        pytest.param(
            mutated("data.tests.passed", -1),
            "data.tests.passed",
            "greater than or equal to 0",
            id="negative-tests-passed",
        ),
        pytest.param(
            mutated("data.tests.failed", "some"),
            "data.tests.failed",
            "valid integer",
            id="non-integer-tests-failed",
        ),
        pytest.param(
            mutated("data.tests.coverage", 150),
            "data.tests.coverage",
            "less than or equal to 100",
            id="coverage-over-100",
        ),
        pytest.param(
            mutated("data.security.critical", -2),
            "data.security.critical",
            "greater than or equal to 0",
            id="negative-critical-findings",
        ),
        pytest.param(
            mutated("data.tests", "all green"), "data.tests", "valid dictionary", id="tests-not-an-object"
        ),
        pytest.param(mutated("data.service", ""), "data.service", "at least 1 character", id="empty-service"),
        pytest.param(
            mutated("data.service", "-checkout"),
            "data.service",
            "should match pattern",
            id="service-bad-name",
        ),
        pytest.param(
            mutated("data.version", delete=True), "data.version", "Field required", id="missing-version"
        ),
        pytest.param(
            mutated("data.artifact", delete=True), "data.artifact", "Field required", id="missing-artifact"
        ),
        pytest.param(
            mutated("data.digest", "sha256:not-hex"),
            "data.digest",
            "should match pattern",
            id="digest-not-hex",
        ),
        pytest.param(mutated("data.commit", 40), "data.commit", "valid string", id="commit-not-a-string"),
        pytest.param(mutated("time", "2024-05-14T09:31:07"), "time", "time zone", id="naive-time"),
        pytest.param(mutated("specversion", "0.3"), "specversion", "1.0", id="old-specversion"),
        pytest.param(mutated("subject", ""), "subject", "at least 1 character", id="empty-subject"),
        pytest.param(mutated("id", 42), "id", "valid string", id="numeric-id"),
        pytest.param(mutated("actor", ["alice"]), "actor", "valid string", id="actor-not-string"),
    ],
)
def test_validation_error_names_the_field_path_and_reason(
    envelope: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode(json.dumps(envelope))
    assert caught.value.reason == "validation"
    assert [path for path, _ in caught.value.errors] == [field]
    [(_, message)] = caught.value.errors
    assert reason in message
    assert f"{field}: " in str(caught.value)


def test_dead_letter_rejects_fields_it_does_not_define() -> None:
    envelope = new_event(dead_letter(), source="shiplog/planning", subject="checkout").to_dict()
    envelope["data"]["surprise"] = True
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode(envelope)
    assert caught.value.errors == [("data.surprise", "Extra inputs are not permitted")]


def test_every_invalid_field_is_reported_not_only_the_first() -> None:
    envelope = mutated("data.tests.passed", -1)
    envelope["data"]["service"] = ""
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode(envelope)
    assert {path for path, _ in caught.value.errors} == {"data.tests.passed", "data.service"}


# --- unknown types and versions ----------------------------------------------------------


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("shiplog.widget.assembled.v1", id="unknown-noun"),
        pytest.param("shiplog.build.started.v1", id="unknown-verb"),
        pytest.param("shiplog.build.completed.v2", id="newer-version"),
        pytest.param("shiplog.build.completed.v99", id="much-newer-version"),
        pytest.param("shiplog.message.dead_lettered.v2", id="newer-dead-letter"),
        pytest.param("build.completed.v1", id="no-shiplog-prefix"),
        pytest.param("shiplog.build.completed", id="no-version-suffix"),
    ],
)
def test_unknown_type_or_newer_version_is_refused_as_unknown_type(event_type: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode(json.dumps(mutated("type", event_type)))
    assert caught.value.reason == "unknown_type"
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.model_for(event_type)
    assert caught.value.reason == "unknown_type"


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param({"id": "x"}, id="dict-without-type"),
        pytest.param({**stored(), "type": 5}, id="dict-with-numeric-type"),
    ],
)
def test_a_malformed_dict_is_refused_as_invalid_event_not_a_crash(
    envelope: dict[str, Any],
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        REGISTRY.decode(envelope)
    assert caught.value.reason == "not_cloudevent"


@pytest.mark.parametrize(
    ("model", "event_type"),
    [
        (BuildCompleted, "shiplog.build.completed.v1"),
        (MessageDeadLettered, "shiplog.message.dead_lettered.v1"),
    ],
)
def test_model_for_finds_the_current_class(model: type[EventData], event_type: str) -> None:
    assert REGISTRY.model_for(event_type) is model
    assert model.event_type() == event_type


def test_registering_two_models_for_one_type_is_refused() -> None:
    class Impostor(EventData):
        TYPE = "shiplog.build.completed"
        VERSION = 2

    with pytest.raises(ValueError, match=r"shiplog\.build\.completed"):
        EventRegistry([BuildCompleted, Impostor])


# --- JSON Schema export -----------------------------------------------------------------


SCHEMAS = REGISTRY.json_schemas()


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _schema_errors(instance: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "") -> list[str]:
    """The subset of JSON Schema 2020-12 that pydantic emits for these models.

    Used only when ``jsonschema`` is not installed in the venv.
    """
    if "$ref" in schema:
        return _schema_errors(instance, _resolve(schema["$ref"], root), root, at)
    if "anyOf" in schema:
        branches = [_schema_errors(instance, s, root, at) for s in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{at}: matches no anyOf branch"]
    errors = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{at}: not {schema['const']!r}")
    if "type" in schema:
        ok = isinstance(instance, _JSON_TYPES[schema["type"]])
        if isinstance(instance, bool) and schema["type"] in ("integer", "number"):
            ok = False
        if not ok:
            return [*errors, f"{at}: not {schema['type']}"]
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{at}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{at}: does not match {schema['pattern']}")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{at}: below minimum")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{at}: above maximum")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        errors += [f"{at}.{k}: required" for k in schema.get("required", []) if k not in instance]
        for key, value in instance.items():
            if key in properties:
                errors += _schema_errors(value, properties[key], root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}.{key}: not allowed")
    return errors


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return _schema_errors(instance, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [e.message for e in validator.iter_errors(instance)]


@pytest.mark.parametrize("model", REGISTRY.models.values(), ids=lambda m: m.TYPE)
def test_json_schemas_has_one_schema_per_registered_model(model: type[EventData]) -> None:
    schema = SCHEMAS[model.event_type()]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{model.event_type()}.json")
    assert schema["title"] == model.event_type()
    assert schema["properties"]["type"] == {"const": model.event_type(), "type": "string"}
    assert {"type", "data", "source", "subject"} <= set(schema["required"])
    data_schema = schema["properties"]["data"]
    assert data_schema["type"] == "object"
    assert set(data_schema["properties"]) == set(model.model_fields)
    assert set(data_schema.get("required", [])) == {
        name for name, field in model.model_fields.items() if field.is_required()
    }


def test_json_schemas_cover_exactly_the_registered_models() -> None:
    assert set(SCHEMAS) == {m.event_type() for m in REGISTRY.models.values()}


@pytest.mark.parametrize("event_type", sorted(SCHEMAS))
def test_every_ref_in_a_schema_resolves_within_it(event_type: str) -> None:
    schema = SCHEMAS[event_type]
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))
    for ref in refs:
        assert isinstance(_resolve(ref, schema), dict)


def test_stored_fixture_validates_against_its_exported_schema() -> None:
    envelope = stored()
    assert schema_errors(envelope, SCHEMAS[envelope["type"]]) == []


@pytest.mark.parametrize(
    "envelope",
    [
        pytest.param(mutated("type", "shiplog.message.dead_lettered.v1"), id="wrong-type-const"),
        pytest.param(mutated("data.service", delete=True), id="missing-service"),
        pytest.param(mutated("data.tests.passed", -1), id="negative-tests-passed"),
        pytest.param(mutated("data.digest", "sha256:not-hex"), id="bad-digest"),
        pytest.param(mutated("specversion", "0.3"), id="old-specversion"),
    ],
)
def test_exported_schema_rejects_what_decode_rejects(envelope: dict[str, Any]) -> None:
    assert schema_errors(envelope, SCHEMAS["shiplog.build.completed.v1"]) != []
    with pytest.raises(InvalidEvent):
        REGISTRY.decode(envelope)


def test_new_event_stamps_type_and_omits_absent_fields() -> None:
    event = new_event(
        BuildCompleted(service="checkout", version="1.4.2", artifact="r/checkout:1.4.2"),
        source="ci/test",
        subject="checkout",
    )
    assert isinstance(event, CloudEvent)
    assert event.type == "shiplog.build.completed.v1"
    assert event.data == {
        "service": "checkout",
        "version": "1.4.2",
        "artifact": "r/checkout:1.4.2",
        "pipeline": "default",
    }


def test_unknown_extension_attributes_are_kept_as_cloudevents_requires() -> None:
    envelope = {**json.loads(BUILD_V1.read_text()), "dataschema": "https://x/s.json", "tenant": "acme"}
    event = REGISTRY.decode(envelope)
    assert event.model_dump()["tenant"] == "acme"
    assert json.loads(event.canonical_json())["tenant"] == "acme"
    assert event.dataschema == "https://x/s.json"
