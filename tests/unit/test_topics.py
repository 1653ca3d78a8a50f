"""The topic catalogue: every event type of DESIGN.md's data flow goes to its topic."""

from __future__ import annotations

import pytest

from events.base import EventData
from events.errors import InvalidEvent
from events.registry import REGISTRY
from events.topics import ALL_TOPICS, DEADLETTER, topic_for

#: DESIGN.md, "Data flow": type name -> topic.
DATA_FLOW = [
    ("shiplog.build.completed", "shiplog.builds"),
    ("shiplog.release.planned", "shiplog.plans"),
    ("shiplog.deployment.planned", "shiplog.plans"),
    ("shiplog.deployment.rejected", "shiplog.plans"),
    ("shiplog.approval.requested", "shiplog.approvals"),
    ("shiplog.deployment.approved", "shiplog.approvals"),
    ("shiplog.deployment.denied", "shiplog.approvals"),
    ("shiplog.approval.granted", "shiplog.commands"),
    ("shiplog.approval.denied", "shiplog.commands"),
    ("shiplog.snapshot.taken", "shiplog.executions"),
    ("shiplog.step.applied", "shiplog.executions"),
    ("shiplog.deployment.succeeded", "shiplog.executions"),
    ("shiplog.verification.passed", "shiplog.verifications"),
    ("shiplog.verification.failed", "shiplog.verifications"),
    ("shiplog.verification.inconclusive", "shiplog.verifications"),
    ("shiplog.rollback.started", "shiplog.rollbacks"),
    ("shiplog.rollback.completed", "shiplog.rollbacks"),
    ("shiplog.deployment.rolled_back", "shiplog.rollbacks"),
    ("shiplog.timer.fired", "shiplog.timers"),
    ("shiplog.message.dead_lettered", "shiplog.deadletter"),
]

ROUTES = [
    pytest.param(event_type, topic, id=event_type)
    for name, topic in DATA_FLOW
    for event_type in (name, f"{name}.v1", f"{name}.v12")
]


@pytest.mark.parametrize(("event_type", "topic"), ROUTES)
def test_each_event_type_goes_to_its_data_flow_topic(event_type: str, topic: str) -> None:
    assert topic_for(event_type).name == topic


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("shiplog.widget.assembled", id="unknown-noun"),
        pytest.param("shiplog.widget.assembled.v1", id="unknown-noun-versioned"),
        pytest.param("shiplog.deployment.exploded", id="unknown-deployment-verb"),
        pytest.param("shiplog.deployment.exploded.v1", id="unknown-deployment-verb-versioned"),
        pytest.param("shiplog.build", id="noun-without-verb"),
        pytest.param("shiplog", id="prefix-only"),
        pytest.param("shiplog.build.completed.v0", id="version-zero"),
        pytest.param(
            "",
            id="empty",
        ),
        pytest.param(
            "acme.build.completed",
            id="foreign-prefix",
        ),
    ],
)
def test_an_event_type_without_a_catalogued_topic_is_refused(event_type: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        topic_for(event_type)
    assert caught.value.reason == "unknown_type"


@pytest.mark.parametrize("model", REGISTRY.models.values(), ids=lambda m: m.TYPE)
def test_every_registered_event_type_has_a_topic_in_the_catalogue(
    model: type[EventData],
) -> None:
    assert topic_for(model.event_type()) in ALL_TOPICS


def test_catalogue_topic_names_are_unique_and_namespaced() -> None:
    names = [topic.name for topic in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert all(name.startswith("shiplog.") for name in names)
    assert {topic for _, topic in DATA_FLOW} <= set(names)


def test_dead_letter_topic_has_one_partition() -> None:
    assert DEADLETTER.partitions == 1
