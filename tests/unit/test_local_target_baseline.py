"""The local target's baseline, its pure parts: a baseline is its own track of the
stable version (own spec id, own routing key, own metrics label), nothing about a
record without one changes, and the judge compares the canary with it."""

from __future__ import annotations

from typing import Any

from adapters.targets import Track
from adapters.targets.local.proxy import Routing
from adapters.targets.local.state import Instance, ServiceState, Spec, TrackState
from consumers.verification.comparison import compared_track

STABLE = Spec(version="1.0.0", command=["x"], config_hash="h", health_path="/healthz", cwd="/")
CANARY = STABLE.model_copy(update={"version": "1.1.0"})


def instance(spec: Spec, pid: int) -> Instance:
    return Instance(
        pid=pid,
        port=9000 + pid,
        version=spec.version,
        spec_id=spec.spec_id,
        config_hash=spec.config_hash,
        command=spec.command,
        started_at="t",
        status="ready",
        variant=spec.variant,
    )


def test_a_baseline_spec_is_another_spec_of_the_same_version_and_a_main_one_is_unchanged():
    baseline = STABLE.as_variant("baseline")
    assert baseline.version == STABLE.version and baseline.spec_id != STABLE.spec_id
    # the main spec's id and record are what they were before variants existed
    assert "variant" not in STABLE.record() and STABLE.record() == STABLE.model_dump(exclude={"variant"})
    assert Spec.model_validate(baseline.record()) == baseline


def test_the_record_routes_the_baseline_apart_from_the_stable_of_the_same_version():
    baseline = STABLE.as_variant("baseline")
    state = ServiceState(
        service="shop",
        environment="production",
        tracks=[
            TrackState(spec=STABLE, role="stable", weight=60, replicas=2),
            TrackState(spec=CANARY, role="canary", weight=20),
            TrackState(spec=baseline, role="baseline", weight=20),
        ],
        instances=[instance(STABLE, 1), instance(STABLE, 2), instance(CANARY, 3), instance(baseline, 4)],
    )
    routing = [b.model_dump() for b in state.derive_routing("h")]
    assert [(b["version"], b["variant"], b["role"], b["weight"], b["urls"]) for b in routing] == [
        ("1.0.0", None, "stable", 60, ["http://h:9001", "http://h:9002"]),
        ("1.1.0", None, "canary", 20, ["http://h:9003"]),
        ("1.0.0", "baseline", "baseline", 20, ["http://h:9004"]),
    ]
    assert state.track("1.0.0") is not None and state.track("1.0.0").role == "stable"  # type: ignore[union-attr]

    proxy = Routing.from_state({"routing": routing})
    assert proxy.weights == {"1.0.0": 60, "1.1.0": 20, "1.0.0/baseline": 20}
    picked = [proxy.choose() for _ in range(100)]
    labels = [proxy.label(p[0]) for p in picked if p]
    assert labels.count(("1.0.0", "baseline")) == 20 and labels.count(("1.1.0", "canary")) == 20
    assert labels.count(("1.0.0", "stable")) == 60


def test_a_routing_table_without_roles_or_variants_routes_by_version_as_before():
    proxy = Routing.from_state({"routing": [{"version": "a", "weight": 100, "urls": ["x"]}]})
    assert proxy.weights == {"a": 100} and proxy.choose() == ("a", ["x"])
    assert proxy.label("a") == ("a", "none")


def test_the_judge_compares_the_canary_with_the_baseline_the_local_target_reports():
    status: list[dict[str, Any]] = [
        Track(version="1.0.0", role="stable", weight=60, urls=["http://h:1"]).model_dump(),
        Track(version="1.1.0", role="canary", weight=20, urls=["http://h:2"]).model_dump(),
        Track(version="1.0.0", role="baseline", weight=20, urls=["http://h:3"]).model_dump(),
    ]
    assert compared_track("baseline", status, "1.1.0", "1.0.0") == ("baseline", "1.0.0", None)
    # without the baseline track: stable, with the reason (as before)
    track, version, why = compared_track("baseline", status[:2], "1.1.0", "1.0.0")
    assert (track, version) == ("stable", "1.0.0") and why and "no baseline track" in why
