"""The local target's pure parts: weight arithmetic, the proxy's picker, the factory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from adapters.targets import create_target
from adapters.targets.local import LocalTarget
from adapters.targets.local.proxy import Routing, SmoothWeightedPicker
from adapters.targets.local.state import (
    Instance,
    InstanceStatus,
    ServiceState,
    Spec,
    TrackState,
    _file_stem,
)
from adapters.targets.local.tracks import apportion, canary_weights, proportional_weights
from events.errors import InvalidInput


@pytest.mark.parametrize(
    ("shares", "total", "expected"),
    [
        ({"a": 1}, 100, {"a": 100}),
        ({"a": 2, "b": 1}, 100, {"a": 67, "b": 33}),
        ({"a": 1, "b": 1, "c": 1}, 100, {"a": 34, "b": 33, "c": 33}),
        ({"a": 80, "b": 20}, 50, {"a": 40, "b": 10}),
        ({"a": 0, "b": 5}, 100, {"a": 0, "b": 100}),
        ({"a": 0, "b": 0}, 100, {"a": 0, "b": 0}),
        ({}, 100, {}),
    ],
)
def test_apportion_splits_the_total_exactly(shares, total, expected):
    assert apportion(shares, total) == expected
    if any(shares.values()):
        assert sum(apportion(shares, total).values()) == total


def test_proportional_weights_follow_instance_counts_mid_rolling():
    assert proportional_weights({"1.0.0": 2, "1.1.0": 1}) == {"1.0.0": 67, "1.1.0": 33}


@pytest.mark.parametrize(
    ("current", "canary", "weight", "expected"),
    [
        ({"1.0.0": 100}, "1.1.0", 20, {"1.0.0": 80, "1.1.0": 20}),
        ({"1.0.0": 80, "1.1.0": 20}, "1.1.0", 50, {"1.0.0": 50, "1.1.0": 50}),
        ({"1.0.0": 100, "1.1.0": 0}, "1.1.0", 0, {"1.0.0": 100, "1.1.0": 0}),
        # nothing else serves: the canary is all there is
        ({}, "1.1.0", 20, {"1.1.0": 100}),
        # an idle colour stays idle
        ({"0.9.0": 0, "1.0.0": 100}, "1.1.0", 25, {"0.9.0": 0, "1.0.0": 75, "1.1.0": 25}),
        # two stables share the rest in proportion
        ({"a": 60, "b": 40}, "c", 50, {"a": 30, "b": 20, "c": 50}),
    ],
)
def test_canary_weights(current, canary, weight, expected):
    assert canary_weights(current, canary, weight) == expected


def test_canary_weight_out_of_range_is_refused():
    with pytest.raises(ValueError):
        canary_weights({"a": 100}, "b", 101)


def test_smooth_weighted_picker_gives_exact_shares_interleaved():
    picker = SmoothWeightedPicker({"stable": 80, "canary": 20})
    picks = [picker.pick() for _ in range(100)]
    assert Counter(picks) == {"stable": 80, "canary": 20}
    # interleaved, not 80 then 20: every window of 5 has exactly one canary
    assert all(picks[i : i + 5].count("canary") == 1 for i in range(0, 100, 5))


def test_picker_without_weights_picks_nothing():
    assert SmoothWeightedPicker({"a": 0}).pick() is None


def test_routing_gives_the_share_of_a_version_without_instances_to_the_others():
    doc = {
        "generation": 7,
        "routing": [
            {"version": "1.0.0", "weight": 80, "urls": ["http://a", "http://b"]},
            {"version": "1.1.0", "weight": 20, "urls": []},
        ],
    }
    routing = Routing.from_state(doc)
    assert routing.generation == 7
    chosen = [routing.choose() for _ in range(4)]
    assert [c[0] for c in chosen if c] == ["1.0.0"] * 4
    # round robin over the instances, the others next in line for retries
    assert [c[1] for c in chosen if c][:2] == [["http://a", "http://b"], ["http://b", "http://a"]]


def test_routing_keeps_its_rhythm_across_a_reload_with_the_same_weights():
    doc = {
        "routing": [
            {"version": "a", "weight": 50, "urls": ["x"]},
            {"version": "b", "weight": 50, "urls": ["y"]},
        ]
    }
    first = Routing.from_state(doc)
    assert first.choose() is not None
    again = Routing.from_state({**doc, "generation": 2}, first)
    assert again.picker is first.picker


def test_routing_of_the_record_lists_only_ready_instances():
    spec = Spec(version="1.0.0", command=["x"], config_hash="h", health_path="/healthz", cwd="/")

    def instance(pid: int, status: InstanceStatus) -> Instance:
        return Instance(
            pid=pid,
            port=1000 + pid,
            version="1.0.0",
            spec_id=spec.spec_id,
            config_hash="h",
            command=["x"],
            started_at="t",
            status=status,
        )

    state = ServiceState(
        service="s",
        environment="e",
        tracks=[TrackState(spec=spec, role="stable", weight=100, replicas=3)],
        instances=[instance(1, "ready"), instance(2, "stopping"), instance(3, "starting")],
    )
    [backend] = state.derive_routing("127.0.0.1")
    assert backend.urls == ["http://127.0.0.1:1001"]


@pytest.mark.parametrize(
    ("service", "environment"),
    [("checkout", "prod"), ("a@b", "c"), ("a", "b@c"), ("../x", "y/z")],
)
def test_record_file_names_are_unambiguous_and_stay_in_the_directory(service, environment):
    stem = _file_stem(service, environment)
    assert stem.count("@") == 1
    assert "/" not in stem


def test_factory_builds_the_local_target(tmp_path: Path):
    target = create_target("local", {"state_dir": tmp_path, "health_timeout": 5})
    assert isinstance(target, LocalTarget)
    assert target.TYPE == "local"
    assert target.capabilities.traffic_split and target.capabilities.two_colours


@pytest.mark.parametrize(
    "config",
    [{}, {"state_dir": "/tmp/x", "colour": "blue"}, {"state_dir": "/tmp/x", "proxy_ports": [9000, 8000]}],
)
def test_factory_refuses_bad_config(config):
    with pytest.raises(InvalidInput):
        create_target("local", config)
