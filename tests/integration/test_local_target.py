"""The local target against real processes: the sample service, the proxy, HTTP.

Every test has its own state directory; the fixture stops every process the test
started, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.targets import Release, Snapshot, Step, StepKind
from adapters.targets.local import LocalTarget, LocalTargetConfig
from adapters.targets.local import processes as local_processes

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "examples" / "sample_service.py"
COMMAND = ["{python}", str(SAMPLE), "--port", "{port}", "--version", "{version}"]
SERVICE, ENV = "shop", "production"

pytestmark = pytest.mark.timeout(60)


# -- fixtures and helpers ------------------------------------------------------------


def new_target(state_dir: Path) -> LocalTarget:
    return LocalTarget(LocalTargetConfig(state_dir=state_dir, health_timeout=10, stop_timeout=2))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def target(state_dir: Path) -> AsyncIterator[LocalTarget]:
    children_before = set(local_processes._CHILDREN)
    target = new_target(state_dir)
    try:
        yield target
    finally:
        await target.close(stop_processes=True)
        # belt and braces: whatever the record still names, or this process started
        leftovers = (set(local_processes._CHILDREN) - children_before) | pids_of(state_dir)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def release(version: str, **config: str) -> Release:
    return Release(
        service=SERVICE,
        environment=ENV,
        version=version,
        artifact=f"sample:{version}",
        config={"SAMPLE_SERVICE": SERVICE, **config},
        settings={"command": COMMAND},
    )


def step(kind: StepKind, rel: Release, *, step_id: str | None = None, **fields: Any) -> Step:
    return Step(
        step_id=step_id or f"{kind}-{uuid.uuid4().hex[:8]}",
        deployment_id=f"{SERVICE}-{rel.version}",
        kind=kind,
        release=rel,
        **fields,
    )


async def applied(target: LocalTarget, s: Step) -> dict[str, Any]:
    result = await target.apply(s)
    assert result.ok, result.error
    return result.detail


def record(state_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((state_dir / f"{SERVICE}@{ENV}.json").read_text())
    return data


def pids_of(state_dir: Path, version: str | None = None) -> set[int]:
    """The instance pids the record names, of one version or all."""
    path = state_dir / f"{SERVICE}@{ENV}.json"
    instances = json.loads(path.read_text())["instances"] if path.exists() else []
    return {i["pid"] for i in instances if version is None or i["version"] == version}


def alive(pid: int) -> bool:
    return local_processes.is_alive(pid, None)


async def hit(endpoint: str, n: int) -> Counter[tuple[str, int]]:
    """``n`` requests through the endpoint: (served version, status) -> count."""
    seen: Counter[tuple[str, int]] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(endpoint + "/") as resp:
                version = resp.headers["x-shiplog-version"]
                if resp.status == 200:
                    body = await resp.json()
                    assert body == {"service": SERVICE, "version": version}
                seen[(version, resp.status)] += 1
    return seen


def versions(seen: Counter[tuple[str, int]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for (version, _), count in seen.items():
        out[version] += count
    return out


async def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], version: str, code: str) -> float:
    return m.get(("shiplog_proxy_requests_total", (("code", code), ("version", version))), 0.0)


async def endpoint_of(target: LocalTarget) -> str:
    status = await target.status(SERVICE, ENV)
    assert status.reachable and status.endpoint
    return status.endpoint


# -- rolling -------------------------------------------------------------------------


async def test_rolling_replaces_every_instance_in_batches_without_failing_a_request(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=3))
    endpoint = await endpoint_of(target)
    assert versions(await hit(endpoint, 10)) == {"1.0.0": 10}
    old = pids_of(state_dir, "1.0.0")
    assert len(old) == 3

    seen: Counter[tuple[str, int]] = Counter()
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            seen.update(await hit(endpoint, 1))

    background = asyncio.create_task(traffic())
    detail = await applied(target, step("rolling", release("1.1.0"), replicas=3, batch_size=1))
    stop.set()
    await background

    assert {status for _, status in seen} == {200}, seen
    assert versions(await hit(endpoint, 20)) == {"1.1.0": 20}
    assert not any(alive(pid) for pid in old)
    assert set(detail["stopped_pids"]) == old
    assert len(pids_of(state_dir, "1.1.0")) == 3 and not pids_of(state_dir, "1.0.0")
    status = await target.status(SERVICE, ENV)
    [track] = status.tracks
    assert (track.version, track.role, track.weight, len(track.urls)) == ("1.1.0", "stable", 100, 3)


# -- blue-green ----------------------------------------------------------------------


async def test_blue_green_previews_switches_and_scales_down(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    endpoint = await endpoint_of(target)
    blue = pids_of(state_dir, "1.0.0")

    await applied(target, step("preview", release("1.1.0"), replicas=2))
    assert versions(await hit(endpoint, 10)) == {"1.0.0": 10}
    tracks = {t.version: t for t in (await target.status(SERVICE, ENV)).tracks}
    assert (tracks["1.1.0"].role, tracks["1.1.0"].weight, len(tracks["1.1.0"].urls)) == ("preview", 0, 2)
    async with aiohttp.ClientSession() as session:  # the preview answers on its own URLs
        for url in tracks["1.1.0"].urls:
            async with session.get(url + "/") as resp:
                assert (await resp.json())["version"] == "1.1.0"

    await applied(target, step("switch", release("1.1.0"), replicas=2))
    assert versions(await hit(endpoint, 10)) == {"1.1.0": 10}
    assert all(alive(pid) for pid in blue)  # the old colour stays until scale-down

    await applied(target, step("scale_down", release("1.1.0"), replicas=2))
    assert not any(alive(pid) for pid in blue)
    assert versions(await hit(endpoint, 10)) == {"1.1.0": 10}
    [track] = (await target.status(SERVICE, ENV)).tracks
    assert (track.version, track.role, track.weight, len(track.urls)) == ("1.1.0", "active", 100, 2)


# -- canary --------------------------------------------------------------------------


async def test_canary_splits_real_requests_by_weight_and_promotes(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    endpoint = await endpoint_of(target)
    stable = pids_of(state_dir, "1.0.0")

    await applied(target, step("set_weight", release("1.1.0"), weight=20))
    status = await target.status(SERVICE, ENV)
    assert {(t.version, t.role, t.weight) for t in status.tracks} == {
        ("1.0.0", "stable", 80),
        ("1.1.0", "canary", 20),
    }
    assert status.metrics_url == endpoint + "/metrics"
    base = await metrics(status.metrics_url)
    at_20 = versions(await hit(endpoint, 200))
    assert 30 <= at_20["1.1.0"] <= 50, at_20
    after = await metrics(status.metrics_url)
    for version in ("1.0.0", "1.1.0"):
        counted = requests_total(after, version, "200") - requests_total(base, version, "200")
        assert counted == at_20[version]
        assert after[("shiplog_proxy_request_duration_seconds_count", (("version", version),))] >= counted

    await applied(target, step("set_weight", release("1.1.0"), weight=50))
    at_50 = versions(await hit(endpoint, 100))
    assert 40 <= at_50["1.1.0"] <= 60, at_50
    assert len(pids_of(state_dir, "1.1.0")) == 1  # one canary instance, started once

    detail = await applied(target, step("promote", release("1.1.0"), replicas=2))
    assert detail["tracks"] == [{"version": "1.1.0", "role": "stable", "weight": 100, "replicas": 2}]
    assert versions(await hit(endpoint, 20)) == {"1.1.0": 20}
    assert not any(alive(pid) for pid in stable)
    assert len(pids_of(state_dir, "1.1.0")) == 2


async def test_a_bad_canary_shows_its_errors_on_the_canary_version_only(target):
    await applied(target, step("rolling", release("1.0.0"), replicas=1))
    await applied(target, step("set_weight", release("1.1.0", SAMPLE_ERROR_RATE="0.5"), weight=50))
    status = await target.status(SERVICE, ENV)
    assert status.endpoint and status.metrics_url
    seen = await hit(status.endpoint, 200)
    m = await metrics(status.metrics_url)

    assert requests_total(m, "1.0.0", "500") == 0
    assert requests_total(m, "1.0.0", "200") == seen[("1.0.0", 200)] == 100
    assert requests_total(m, "1.1.0", "500") == seen[("1.1.0", 500)]
    assert 20 <= seen[("1.1.0", 500)] <= 80, seen


async def test_an_unhealthy_canary_fails_the_step_and_leaves_the_stable_serving(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=1))
    bad = release("1.1.0", SAMPLE_UNHEALTHY="1").model_copy(
        update={"settings": {"command": COMMAND, "health_timeout": 1}}
    )
    result = await target.apply(step("set_weight", bad, weight=20))

    assert not result.ok
    assert result.error and "/healthz did not answer 200" in result.error and "HTTP 503" in result.error
    assert not any(alive(pid) for pid in result.detail["started_pids"])
    assert pids_of(state_dir) == pids_of(state_dir, "1.0.0")
    assert versions(await hit(await endpoint_of(target), 10)) == {"1.0.0": 10}


# -- idempotency, snapshot and restore -----------------------------------------------


async def test_applying_the_same_step_id_again_does_nothing(target, state_dir):
    first = await target.apply(step("rolling", release("1.0.0"), step_id="s1", replicas=2))
    pids = pids_of(state_dir)

    again = await target.apply(step("rolling", release("1.0.0"), step_id="s1", replicas=2))
    assert again.already_applied and again.ok
    assert again.model_copy(update={"already_applied": False}) == first
    assert pids_of(state_dir) == pids

    # even when the world moved on since: the recorded result, no action
    await applied(target, step("set_weight", release("1.1.0"), step_id="s2", weight=10))
    pids = pids_of(state_dir)
    replay = await target.apply(step("rolling", release("1.0.0"), step_id="s1", replicas=2))
    assert replay.already_applied
    assert pids_of(state_dir) == pids
    assert [a["key"] for a in record(state_dir)["applied"]] == ["shop-1.0.0/s1", "shop-1.1.0/s2"]


async def test_restore_brings_back_the_snapshot_after_a_canary_and_after_a_promote(target, state_dir):
    await applied(target, step("rolling", release("1.0.0", SAMPLE_SERVICE=SERVICE), replicas=2))
    before = await target.snapshot(SERVICE, ENV)
    assert before.version == "1.0.0"
    stable = pids_of(state_dir, "1.0.0")
    endpoint = await endpoint_of(target)

    await applied(target, step("set_weight", release("1.1.0"), weight=30))
    canary = pids_of(state_dir, "1.1.0")
    result = await target.restore(before, step_id="shop-1.1.0/rollback")
    assert result.ok, result.error
    assert versions(await hit(endpoint, 20)) == {"1.0.0": 20}
    assert not any(alive(pid) for pid in canary)
    assert pids_of(state_dir) == stable  # what still matched the snapshot kept running
    assert (await target.snapshot(SERVICE, ENV)).state == before.state
    assert (await target.restore(before, step_id="shop-1.1.0/rollback")).already_applied

    # after a promote 1.0.0 is gone entirely: restore starts it again, same command and config
    await applied(target, step("set_weight", release("1.2.0"), weight=50))
    await applied(target, step("promote", release("1.2.0"), replicas=1))
    assert not pids_of(state_dir, "1.0.0")
    result = await target.restore(before, step_id="shop-1.2.0/rollback")
    assert result.ok, result.error
    assert versions(await hit(endpoint, 10)) == {"1.0.0": 10}  # hit() checks the service name too
    assert len(pids_of(state_dir, "1.0.0")) == 2 and not pids_of(state_dir, "1.2.0")
    assert (await target.snapshot(SERVICE, ENV)).state == before.state


async def test_restoring_an_empty_snapshot_leaves_nothing_running(target, state_dir):
    nothing = await target.snapshot(SERVICE, ENV)
    assert nothing.version is None and nothing.state["tracks"] == []
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    pids = pids_of(state_dir)

    result = await target.restore(Snapshot.model_validate(nothing.model_dump()), step_id="undo-first")
    assert result.ok, result.error
    assert not any(alive(pid) for pid in pids)
    assert pids_of(state_dir) == set()
    status = await target.status(SERVICE, ENV)
    assert status.tracks == [] and status.endpoint
    async with aiohttp.ClientSession() as session, session.get(status.endpoint + "/") as resp:
        assert resp.status == 503


# -- surviving the driver ------------------------------------------------------------

_DRIVER = """
import asyncio, sys
from pathlib import Path
from adapters.targets import Step
from adapters.targets.local import LocalTarget, LocalTargetConfig

async def main():
    target = LocalTarget(LocalTargetConfig(state_dir=Path(sys.argv[1]), health_timeout=10))
    for raw in sys.argv[2:]:
        result = await target.apply(Step.model_validate_json(raw))
        print(result.model_dump_json(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_new_target_continues_after_the_driving_process_was_killed(target, state_dir):
    steps = [
        step("rolling", release("1.0.0"), step_id="roll", replicas=2),
        step("set_weight", release("1.1.0"), step_id="w20", weight=20),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    driver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DRIVER,
        str(state_dir),
        *(s.model_dump_json() for s in steps),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert driver.stdout is not None
        for _ in steps:
            line = await asyncio.wait_for(driver.stdout.readline(), 30)
            assert json.loads(line)["ok"], line
    finally:
        driver.kill()  # SIGKILL: no cleanup of any kind
        await driver.wait()

    before = pids_of(state_dir)
    assert len(before) == 3 and all(alive(pid) for pid in before)
    # the target in this process never started them, yet sees them and the proxy
    status = await target.status(SERVICE, ENV)
    assert status.reachable and status.endpoint
    assert {(t.version, t.weight, len(t.urls)) for t in status.tracks} == {("1.0.0", 80, 2), ("1.1.0", 20, 1)}
    assert versions(await hit(status.endpoint, 50)) == {"1.0.0": 40, "1.1.0": 10}

    # a step the dead driver applied is not applied again; the next one continues
    assert (await target.apply(steps[1])).already_applied
    await applied(target, step("set_weight", release("1.1.0"), step_id="w50", weight=50))
    assert pids_of(state_dir) == before
    await applied(target, step("promote", release("1.1.0"), step_id="promote", replicas=1))
    assert not any(alive(pid) for pid in before - pids_of(state_dir, "1.1.0"))
    assert versions(await hit(status.endpoint, 10)) == {"1.1.0": 10}


async def test_a_dead_proxy_comes_back_on_its_port_at_the_next_step(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=1))
    endpoint = await endpoint_of(target)
    proxy = record(state_dir)["proxy"]["pid"]
    await local_processes.stop(proxy, None, grace=1)  # as if it had crashed
    assert not (await target.status(SERVICE, ENV)).reachable

    await applied(target, step("set_weight", release("1.1.0"), weight=50))
    assert record(state_dir)["proxy"]["pid"] != proxy
    assert await endpoint_of(target) == endpoint
    assert versions(await hit(endpoint, 10)) == {"1.0.0": 5, "1.1.0": 5}


async def test_close_with_stop_processes_leaves_no_process(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    await applied(target, step("set_weight", release("1.1.0"), weight=20))
    proxy = record(state_dir)["proxy"]["pid"]
    pids = pids_of(state_dir) | {proxy}
    assert len(pids) == 4 and all(alive(pid) for pid in pids)

    await target.close(stop_processes=True)

    assert not any(alive(pid) for pid in pids)
    assert record(state_dir)["instances"] == [] and record(state_dir)["proxy"] is None
    assert (await target.snapshot(SERVICE, ENV)).version is None


# -- canary against a baseline ---------------------------------------------------------


def with_baseline(rel: Release) -> Release:
    return rel.model_copy(update={"settings": {**rel.settings, "baseline": True}})


def by_track(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], code: str = "200") -> Counter[str]:
    """Requests per track from the proxy's by-track counter."""
    out: Counter[str] = Counter()
    for (name, labels), value in m.items():
        found = dict(labels)
        if name == "shiplog_proxy_track_requests_total" and found["code"] == code:
            out[found["track"]] += int(value)
    return out


async def test_a_canary_with_a_baseline_splits_three_ways_and_promotion_stops_the_baseline(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    endpoint = await endpoint_of(target)
    stable = pids_of(state_dir, "1.0.0")

    detail = await applied(target, step("set_weight", with_baseline(release("1.1.0")), weight=20))
    assert detail["baseline"] == {"version": "1.0.0", "weight": 20}
    baseline = pids_of(state_dir, "1.0.0") - stable
    assert len(baseline) == 1 and all(alive(pid) for pid in baseline | stable)  # fresh, stable untouched
    status = await target.status(SERVICE, ENV)
    assert sorted((t.version, t.role, t.weight, len(t.urls)) for t in status.tracks) == [
        ("1.0.0", "baseline", 20, 1),
        ("1.0.0", "stable", 60, 2),
        ("1.1.0", "canary", 20, 1),
    ]
    urls = {t.role: set(t.urls) for t in status.tracks}
    assert not urls["baseline"] & urls["stable"]
    assert status.metrics_url
    base = await metrics(status.metrics_url)
    seen = versions(await hit(endpoint, 200))
    after = await metrics(status.metrics_url)
    tracks = by_track(after) - by_track(base)
    assert seen == {"1.0.0": 160, "1.1.0": 40}
    assert tracks == {"stable": 120, "baseline": 40, "canary": 40}  # the picker is exact: 60/20/20
    # the by-version counters still count by version: a baseline's requests are its version's
    assert requests_total(after, "1.0.0", "200") - requests_total(base, "1.0.0", "200") == 160

    # another weight moves the baseline with the canary, without restarting either
    canary = pids_of(state_dir, "1.1.0")
    await applied(target, step("set_weight", with_baseline(release("1.1.0")), weight=50))
    status = await target.status(SERVICE, ENV)
    assert sorted((t.role, t.weight) for t in status.tracks) == [
        ("baseline", 50),
        ("canary", 50),
        ("stable", 0),
    ]
    assert pids_of(state_dir, "1.0.0") - stable == baseline and pids_of(state_dir, "1.1.0") == canary

    detail = await applied(target, step("promote", with_baseline(release("1.1.0")), replicas=1))
    assert detail["tracks"] == [{"version": "1.1.0", "role": "stable", "weight": 100, "replicas": 1}]
    assert not any(alive(pid) for pid in baseline | stable)
    assert not pids_of(state_dir, "1.0.0")
    assert versions(await hit(endpoint, 10)) == {"1.1.0": 10}


async def test_restore_after_a_canary_with_a_baseline_leaves_exactly_the_snapshot(target, state_dir):
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    before = await target.snapshot(SERVICE, ENV)
    stable = pids_of(state_dir, "1.0.0")
    endpoint = await endpoint_of(target)

    await applied(target, step("set_weight", with_baseline(release("1.1.0")), weight=20))
    started = pids_of(state_dir) - stable
    assert len(started) == 2  # the canary and the baseline
    result = await target.restore(before, step_id="shop-1.1.0/rollback")
    assert result.ok, result.error
    assert not any(alive(pid) for pid in started)
    assert pids_of(state_dir) == stable
    assert (await target.snapshot(SERVICE, ENV)).state == before.state
    status = await target.status(SERVICE, ENV)
    assert [(t.version, t.role, t.weight) for t in status.tracks] == [("1.0.0", "stable", 100)]
    assert versions(await hit(endpoint, 20)) == {"1.0.0": 20}


async def test_without_a_stable_version_a_baseline_is_not_started(target, state_dir):
    detail = await applied(target, step("set_weight", with_baseline(release("1.0.0")), weight=20))
    assert "baseline" not in detail and "no stable" in detail["note"]
    status = await target.status(SERVICE, ENV)
    assert [(t.role, t.weight) for t in status.tracks] == [("canary", 100)]


# -- placement after a restart -----------------------------------------------------------


async def test_a_new_target_given_the_settings_snapshots_and_reads_what_the_record_says_runs(
    target, state_dir, tmp_path
):
    """The record, not the settings, says what runs: a new instance (a restart) given
    the release's settings — even another command and cwd than what runs — snapshots
    exactly what the first one would, and its status finds the instances."""
    await applied(target, step("rolling", release("1.0.0"), replicas=2))
    before = await target.snapshot(SERVICE, ENV)
    elsewhere = {"command": [*COMMAND, "--extra"], "cwd": str(tmp_path), "health_path": "/other"}

    restarted = new_target(state_dir)
    for settings in ({"command": COMMAND}, elsewhere):
        snapshot = await restarted.snapshot(SERVICE, ENV, settings)
        assert snapshot == before and snapshot.version == "1.0.0"
        assert [t["command"] for t in snapshot.state["tracks"]] == [COMMAND]
        status = await restarted.status(SERVICE, ENV, settings)
        assert status.reachable and status.endpoint == await endpoint_of(target)
        [track] = status.tracks
        assert (track.version, track.weight, len(track.urls)) == ("1.0.0", 100, 2)
