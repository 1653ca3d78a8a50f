"""`shiplog schema asyncapi`: the document FastStream makes from the subscribers the
processes really register, and a publisher entry for every topic."""

from __future__ import annotations

import json

from click.testing import CliRunner

from events.topics import ALL_TOPICS
from shiplog.cli import cli
from shiplog.components import CONSUMERS


def test_the_asyncapi_document_names_every_topic_and_consumer() -> None:
    result = CliRunner().invoke(cli, ["schema", "asyncapi"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert {topic.name for topic in ALL_TOPICS} <= addresses
    titles = " ".join(json.dumps(operation) for operation in doc["operations"].values())
    for name in CONSUMERS:
        assert f"{name}:" in titles or name in titles, name
    # every message value is a CloudEvent: the consumers' handler takes FastStream's
    # message from the context, which is not a payload the document describes
    assert "KafkaMessage" not in result.output
