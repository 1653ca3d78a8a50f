"""The pipeline models: sensible defaults, refusals a YAML author needs to see, and a
JSON Schema that editors can use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.planning.pipeline import (
    AutoStrategy,
    CanaryStrategy,
    Environment,
    PipelineFile,
    Window,
    default_canary_steps,
    parse_duration,
)


def pipeline(*envs: dict[str, Any]) -> PipelineFile:
    return PipelineFile.model_validate({"service": "shop", "environments": list(envs)})


def env(name: str = "dev", **fields: Any) -> dict[str, Any]:
    return {"name": name, "target": {"type": "local"}, **fields}


def test_defaults() -> None:
    p = pipeline(env())
    assert p.pipeline == "default"
    dev = p.environments[0]
    assert dev.strategy == AutoStrategy()
    assert dev.schedule == [] and dev.values == {}
    assert dev.gate.auto_approve is None and dev.gate.manual is None
    assert dev.analysis.health is not None and dev.analysis.health.path == "/healthz"
    assert dev.analysis.consecutive_error_limit == 4
    assert CanaryStrategy().steps == default_canary_steps()
    assert [s.set_weight for s in default_canary_steps()] == [20, None, 50, None]


def test_models_are_frozen() -> None:
    p = pipeline(env())
    with pytest.raises(ValidationError):
        p.service = "other"


def test_promotion_order() -> None:
    p = pipeline(env("dev"), env("staging"), env("production"))
    assert p.next_after("dev") == p.environment("staging")
    assert p.next_after("production") is None
    with pytest.raises(KeyError):
        p.next_after("qa")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"strategy": {"type": "rolling", "replicas": 2, "batch_size": 3}},
            "batch_size 3 is more than replicas 2",
        ),
        ({"analysis": {"metrics": [{"name": "error_rate", "max": 5}]}}, "fraction from 0 to 1"),
        ({"analysis": {"metrics": [{"name": "latency_p99"}]}}, "exactly one of `max` or `max_increase_pct`"),
        ({"gate": {"manual": {"levels": [{}, {}]}}}, "level names must be distinct"),
        ({"gate": {"manual": {"levels": [{"name": str(i)} for i in range(6)]}}}, "at most 5 items"),
        ({"gate": {"manual": {"levels": [{"quorum": 0}]}}}, "greater than or equal to 1"),
        ({"gate": {"manual": {"expires_after": "soon"}}}, "not a duration"),
        ({"gate": {"manual": {"remind_before": "5m"}}}, "remind_before needs expires_after"),
        ({"gate": {"auto_approve": {"min_soak": "2 hours"}}}, "not a duration"),
        ({"values": {"PW": {"secret": {}}}}, "exactly one of `env` or `file`"),
        ({"values": {"PW": {"secret": {"env": "not a name"}}}}, "should match pattern"),
        ({"strategy": {"type": "canary", "steps": []}}, "at least 1 item"),
        ({"schedule": [{"kind": "allow", "cron": "0 9 * * 1-5 2025", "duration": "1h"}]}, "five fields"),
        ({"schedule": [{"kind": "maybe", "cron": "0 9 * * *", "duration": "1h"}]}, "'allow' or 'deny'"),
        ({"schedule": [{"kind": "deny", "cron": "0 9 * * *", "duration": "0h"}]}, "longer than zero"),
    ],
)
def test_refusals(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        pipeline(env(**fields))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("8h", 8 * 3600), ("1h30m", 5400), ("14d", 14 * 86400), ("90s", 90), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_a_window_knows_its_zone_and_length() -> None:
    w = Window(kind="allow", cron="@daily", duration="2h", timezone="Asia/Tokyo", name="night")
    assert (str(w.zone), w.length.total_seconds()) == ("Asia/Tokyo", 7200)
    assert w.label == "deploy window 'night' (@daily for 2h, Asia/Tokyo)"


def test_the_json_schema_helps_editors() -> None:
    schema = PipelineFile.model_json_schema()
    json.dumps(schema)  # serialisable as it is
    assert schema["title"] == "shiplog pipeline"
    assert schema["required"] == ["service", "environments"]
    defs = schema["$defs"]
    for name in ("RollingStrategy", "BlueGreenStrategy", "CanaryStrategy", "AutoStrategy"):
        assert "type" in defs[name]["required"], name
        assert defs[name]["additionalProperties"] is False
    assert set(defs["Environment"]["properties"]["strategy"]["discriminator"]["mapping"]) == {
        "rolling",
        "blue_green",
        "canary",
        "auto",
    }
    assert defs["Window"]["properties"]["duration"]["pattern"]
    assert "Europe/Berlin" in defs["Window"]["properties"]["timezone"]["examples"]
    undocumented = [
        f"{model}.{field}"
        for model, body in {**defs, "PipelineFile": schema}.items()
        for field, prop in body.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []
    assert all(body.get("title") for body in defs.values())


def test_environment_values_accept_scalars_as_strings() -> None:
    e = Environment.model_validate(env(values={"PORT": 8080, "RATIO": 0.5, "ON": True, "NAME": "x"}))
    assert e.values == {"PORT": "8080", "RATIO": "0.5", "ON": "true", "NAME": "x"}
