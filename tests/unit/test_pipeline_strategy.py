"""Strategy selection: explicit strategies as configured, ``auto`` by what the target
can do and whether the analysis has metrics — always with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.targets import Capabilities
from consumers.planning.pipeline import Environment
from consumers.planning.strategy import StrategyNotSupported, select_strategy
from events.errors import DomainRefusal

SPLIT = Capabilities(traffic_split=True)
COLOURS = Capabilities(two_colours=True)
BOTH = Capabilities(traffic_split=True, two_colours=True)
NEITHER = Capabilities()

METRICS = {"metrics": [{"name": "error_rate", "max": 0.05}]}
NO_METRICS: dict[str, Any] = {}

DEFAULT_CANARY = ["set_weight 20", "analysis", "set_weight 50", "analysis", "promote"]
BLUE_GREEN = ["preview", "analysis", "switch", "analysis", "pause 30", "scale_down"]
ROLLING = ["rolling", "analysis"]


def env(strategy: dict[str, Any], analysis: dict[str, Any] | None = None) -> Environment:
    return Environment.model_validate(
        {
            "name": "production",
            "target": {"type": "local"},
            "strategy": strategy,
            "analysis": analysis or {},
        }
    )


def kinds(steps: Any) -> list[str]:
    out = []
    for step in steps:
        if step.kind == "set_weight":
            out.append(f"set_weight {step.weight}")
        elif step.kind == "pause":
            out.append(f"pause {step.duration_s}")
        else:
            out.append(step.kind)
    return out


SELECTION = [
    # (case, strategy, analysis, capabilities, chosen, steps, words in the reason)
    ("auto, split + metrics", {"type": "auto"}, METRICS, BOTH, "canary", DEFAULT_CANARY, "can split traffic"),
    ("auto, split only + metrics", {"type": "auto"}, METRICS, SPLIT, "canary", DEFAULT_CANARY, "1 metric"),
    (
        "auto, split but no metrics",
        {"type": "auto"},
        NO_METRICS,
        BOTH,
        "blue_green",
        BLUE_GREEN,
        "no metrics",
    ),
    ("auto, two colours", {"type": "auto"}, METRICS, COLOURS, "blue_green", BLUE_GREEN, "two colours"),
    (
        "auto, split, no metrics, one colour",
        {"type": "auto"},
        NO_METRICS,
        SPLIT,
        "rolling",
        ROLLING,
        "no metrics",
    ),
    ("auto, nothing", {"type": "auto"}, METRICS, NEITHER, "rolling", ROLLING, "neither"),
    ("rolling as configured", {"type": "rolling"}, METRICS, BOTH, "rolling", ROLLING, "as configured"),
    (
        "blue_green without preview analysis or delay",
        {"type": "blue_green", "preview_analysis": False, "scale_down_delay_s": 0},
        NO_METRICS,
        COLOURS,
        "blue_green",
        ["preview", "switch", "analysis", "scale_down"],
        "as configured",
    ),
    (
        "canary with default steps",
        {"type": "canary"},
        NO_METRICS,
        SPLIT,
        "canary",
        DEFAULT_CANARY,
        "as configured",
    ),
    (
        "canary with set_weight 100 as the promotion",
        {"type": "canary", "steps": [{"set_weight": 20}, {"analysis": {}}, {"set_weight": 100}]},
        METRICS,
        SPLIT,
        "canary",
        ["set_weight 20", "analysis", "promote"],
        "20% -> analysis -> promote",
    ),
    (
        "canary with pauses",
        {
            "type": "canary",
            "steps": [{"set_weight": 10}, {"pause": {"duration_s": 60}}, {"set_weight": 30}, {"pause": {}}],
        },
        METRICS,
        SPLIT,
        "canary",
        ["set_weight 10", "pause 60", "set_weight 30", "pause None", "promote"],
        "pause until promoted",
    ),
]


@pytest.mark.parametrize(
    ("strategy", "analysis", "capabilities", "chosen", "steps", "words"),
    [c[1:] for c in SELECTION],
    ids=[c[0] for c in SELECTION],
)
def test_select_strategy(
    strategy: dict[str, Any],
    analysis: dict[str, Any],
    capabilities: Capabilities,
    chosen: str,
    steps: list[str],
    words: str,
) -> None:
    plan, reason = select_strategy(env(strategy, analysis), capabilities)
    assert plan.strategy == chosen
    assert kinds(plan.steps) == steps
    assert words in reason
    assert reason.startswith(chosen)


@pytest.mark.parametrize(
    ("strategy", "capabilities", "words"),
    [
        ({"type": "canary"}, COLOURS, "canary needs a target that can split traffic"),
        ({"type": "blue_green"}, SPLIT, "blue_green needs a target that can run two colours"),
    ],
)
def test_an_explicit_strategy_the_target_cannot_carry_out_is_refused(
    strategy: dict[str, Any], capabilities: Capabilities, words: str
) -> None:
    with pytest.raises(StrategyNotSupported, match=words) as caught:
        select_strategy(env(strategy), capabilities)
    assert isinstance(caught.value, DomainRefusal)


def test_replicas_and_rolling_batches_reach_the_plan() -> None:
    plan, _ = select_strategy(
        env({"type": "rolling", "replicas": 4, "batch_size": 2, "max_unavailable": 1}), NEITHER
    )
    assert plan.replicas == 4
    assert (plan.steps[0].batch_size, plan.steps[0].max_unavailable) == (2, 1)
    plan, _ = select_strategy(env({"type": "auto", "replicas": 3}), BOTH)
    assert plan.replicas == 3


def test_only_control_steps_stay_away_from_the_target() -> None:
    plan, _ = select_strategy(env({"type": "blue_green"}), COLOURS)
    assert [s.kind for s in plan.steps if not s.applies_to_target] == ["analysis", "analysis", "pause"]


def test_a_plan_survives_a_json_round_trip() -> None:
    plan, _ = select_strategy(env({"type": "auto"}, METRICS), SPLIT)
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan
