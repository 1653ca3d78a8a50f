"""The upcaster chain: stored old versions are read as the current one.

Modelled on eventsourcing's ``tests/application_tests/test_upcasting.py``: a toy type
has been published as v1 (``a``), v2 (``aa`` upper-cased, ``b`` added) and v3 (``c``
added); only v3 exists as a class, v1 and v2 live on as pure dict transforms.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from events.base import EventData
from events.envelope import split_type
from events.errors import InvalidEvent
from events.registry import REGISTRY, EventRegistry
from events.upcasters import UPCASTERS, Envelope, Upcaster

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
STORED_FIXTURES = sorted(FIXTURES.glob("*.json"))


class WidgetAssembled(EventData):
    TYPE: ClassVar[str] = "shiplog.widget.assembled"
    VERSION: ClassVar[int] = 3

    aa: str
    b: int
    c: list[int]


def widget_assembled_v1_to_v2(envelope: Envelope) -> Envelope:
    data = dict(envelope["data"])
    data["aa"] = data.pop("a").upper()
    data["b"] = 0
    return {**envelope, "type": "shiplog.widget.assembled.v2", "data": data}


def widget_assembled_v2_to_v3(envelope: Envelope) -> Envelope:
    return {
        **envelope,
        "type": "shiplog.widget.assembled.v3",
        "data": {**envelope["data"], "c": []},
    }


FULL_CHAIN: dict[tuple[str, int], Upcaster] = {
    ("shiplog.widget.assembled", 1): widget_assembled_v1_to_v2,
    ("shiplog.widget.assembled", 2): widget_assembled_v2_to_v3,
}


def widgets(upcasters: dict[tuple[str, int], Upcaster] = FULL_CHAIN) -> EventRegistry:
    return EventRegistry([WidgetAssembled], upcasters=upcasters)


def stored_widget(version: int, data: dict[str, Any]) -> str:
    """What the log or a topic holds for a widget published at ``version``."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"0b9e6a52-51d4-4c8e-a3f1-7d2c9e00000{version}",
            "source": "shiplog/test",
            "type": f"shiplog.widget.assembled.v{version}",
            "time": "2024-05-14T09:31:07Z",
            "subject": "widget-1",
            "datacontenttype": "application/json",
            "data": data,
            "correlationid": "release-1",
        }
    )


STORED_V1 = stored_widget(1, {"a": "text"})
STORED_V2 = stored_widget(2, {"aa": "TEXT", "b": 1})
STORED_V3 = stored_widget(3, {"aa": "TEXT", "b": 1, "c": [1, 2]})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(STORED_V1, {"aa": "TEXT", "b": 0, "c": []}, id="from-v1"),
        pytest.param(STORED_V2, {"aa": "TEXT", "b": 1, "c": []}, id="from-v2"),
        pytest.param(STORED_V3, {"aa": "TEXT", "b": 1, "c": [1, 2]}, id="current-v3"),
    ],
)
def test_stored_versions_decode_as_the_current_version(raw: str, expected: dict[str, Any]) -> None:
    event = widgets().decode(raw)
    assert event.type == "shiplog.widget.assembled.v3"
    assert event.data == expected
    assert widgets().payload(event, WidgetAssembled) == WidgetAssembled(**expected)


@pytest.mark.parametrize("raw", [STORED_V1, STORED_V2, STORED_V3])
def test_upcasting_keeps_the_envelope_attributes(raw: str) -> None:
    original = json.loads(raw)
    event = widgets().decode(raw)
    assert (event.id, event.subject, event.correlationid) == (
        original["id"],
        original["subject"],
        original["correlationid"],
    )


@pytest.mark.parametrize(
    ("raw", "expected_type"),
    [
        (STORED_V1, "shiplog.widget.assembled.v3"),
        (STORED_V2, "shiplog.widget.assembled.v3"),
        (STORED_V3, "shiplog.widget.assembled.v3"),
    ],
)
def test_upcast_returns_the_envelope_at_the_current_version(raw: str, expected_type: str) -> None:
    assert widgets().upcast(json.loads(raw))["type"] == expected_type


@pytest.mark.parametrize("raw", [STORED_V1, STORED_V2, STORED_V3])
def test_decoding_a_stored_dict_leaves_it_untouched(raw: str) -> None:
    envelope = json.loads(raw)
    before = copy.deepcopy(envelope)
    widgets().decode(envelope)
    assert envelope == before


def test_upcast_applies_each_step_once_in_order() -> None:
    calls: list[str] = []

    def recorded(step: Upcaster) -> Upcaster:
        def wrapper(envelope: Envelope) -> Envelope:
            calls.append(envelope["type"])
            return step(envelope)

        wrapper.__name__ = step.__name__
        return wrapper

    registry = widgets({key: recorded(step) for key, step in FULL_CHAIN.items()})
    registry.decode(STORED_V1)
    assert calls == ["shiplog.widget.assembled.v1", "shiplog.widget.assembled.v2"]


@pytest.mark.parametrize(
    ("upcasters", "raw", "missing"),
    [
        pytest.param(
            {("shiplog.widget.assembled", 2): widget_assembled_v2_to_v3},
            STORED_V1,
            "v1 to v2",
            id="first-step-missing",
        ),
        pytest.param(
            {("shiplog.widget.assembled", 1): widget_assembled_v1_to_v2},
            STORED_V1,
            "v2 to v3",
            id="second-step-missing-from-v1",
        ),
        pytest.param(
            {("shiplog.widget.assembled", 1): widget_assembled_v1_to_v2},
            STORED_V2,
            "v2 to v3",
            id="second-step-missing-from-v2",
        ),
        pytest.param({}, STORED_V1, "v1 to v2", id="no-upcasters"),
    ],
)
def test_a_missing_upcaster_step_is_refused(
    upcasters: dict[tuple[str, int], Upcaster], raw: str, missing: str
) -> None:
    with pytest.raises(InvalidEvent, match=missing) as caught:
        widgets(upcasters).decode(raw)
    assert caught.value.reason == "unknown_type"


def test_a_version_newer_than_the_current_class_is_refused() -> None:
    with pytest.raises(InvalidEvent) as caught:
        widgets().decode(stored_widget(4, {"aa": "TEXT", "b": 1, "c": [], "d": None}))
    assert caught.value.reason == "unknown_type"


def _skips_a_version(envelope: Envelope) -> Envelope:
    return {**envelope, "type": "shiplog.widget.assembled.v3", "data": {"aa": "A", "b": 0, "c": []}}


def _forgets_to_bump_the_version(envelope: Envelope) -> Envelope:
    return widget_assembled_v1_to_v2(envelope) | {"type": "shiplog.widget.assembled.v1"}


def _renames_the_type(envelope: Envelope) -> Envelope:
    return widget_assembled_v1_to_v2(envelope) | {"type": "shiplog.gadget.assembled.v2"}


def _goes_backwards(envelope: Envelope) -> Envelope:
    return {**envelope, "type": "shiplog.widget.assembled.v1"}


@pytest.mark.parametrize(
    ("key", "step"),
    [
        pytest.param(("shiplog.widget.assembled", 1), _skips_a_version, id="skips-a-version"),
        pytest.param(("shiplog.widget.assembled", 1), _forgets_to_bump_the_version, id="same-version"),
        pytest.param(("shiplog.widget.assembled", 1), _renames_the_type, id="renames-type"),
        pytest.param(("shiplog.widget.assembled", 2), _goes_backwards, id="goes-backwards"),
    ],
)
def test_an_upcaster_producing_the_wrong_type_is_a_programming_error(
    key: tuple[str, int], step: Upcaster
) -> None:
    with pytest.raises(RuntimeError, match=rf"{step.__name__} must produce"):
        widgets({**FULL_CHAIN, key: step}).decode(STORED_V1)


def test_data_is_validated_after_upcasting_not_before() -> None:
    def v2_to_v3_with_a_bad_b(envelope: Envelope) -> Envelope:
        upcast = widget_assembled_v2_to_v3(envelope)
        return {**upcast, "data": {**upcast["data"], "b": "zero"}}

    registry = widgets({**FULL_CHAIN, ("shiplog.widget.assembled", 2): v2_to_v3_with_a_bad_b})
    with pytest.raises(InvalidEvent) as caught:
        registry.decode(STORED_V1)
    assert caught.value.reason == "validation"
    assert [path for path, _ in caught.value.errors] == ["data.b"]


# --- the production registry ---------------------------------------------------------------


def test_there_are_stored_fixtures_to_replay() -> None:
    assert STORED_FIXTURES, f"no stored events in {FIXTURES}"


@pytest.mark.parametrize("path", STORED_FIXTURES, ids=lambda p: p.name)
def test_production_registry_decodes_every_stored_fixture(path: Path) -> None:
    raw = path.read_bytes()
    stored_type = json.loads(raw)["type"]
    assert stored_type == f"shiplog.{path.stem}", "fixture files are named <noun>.<verb>.v<N>.json"

    event = REGISTRY.decode(raw)
    name, _ = split_type(stored_type)
    current = REGISTRY.models[name]
    assert event.type == current.event_type()
    assert REGISTRY.payload(event, current).event_type() == current.event_type()


def test_production_upcasters_only_lead_up_to_registered_current_versions() -> None:
    for (name, from_version), step in UPCASTERS.items():
        assert name in REGISTRY.models, f"{step.__name__} upcasts an unregistered type"
        assert 1 <= from_version < REGISTRY.models[name].VERSION, step.__name__
