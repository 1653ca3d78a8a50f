"""A release of three services, schema <- api <- web (each depends on the one
before), through `shiplog dev` and the CLI (tests/fixtures/release: one environment,
a canary judged on the error rate).

1. 1.0.0 of all three: each deploys after its dependency succeeded; the release
   concludes ``succeeded``.
2. The middle one is bad (2.0.1 fails its canary): exactly it is rolled back and
   its dependant never deploys; schema's 2.0.0 is kept — ``partially_rolled_back``.
3. A good 2.0.0 of all three, then a person rolls api back: web, which depends on
   it, follows; schema stays — the release concludes again, ``partially_rolled_back``.

Between them, rollback drills: one on schema (healthy: back to 1.0.0 and forward to
2.0.0, each verified, ending where it started) and one refused on api.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.devproc import Dev, running_dev

CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "release"

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from running_dev(tmp_path, CONFIG)


def publish(dev: Dev, tmp_path: Path, release_id: str, versions: dict[str, str]) -> None:
    deps = {"schema": [], "api": ["schema"], "web": ["api"]}
    manifest = {
        "release_id": release_id,
        "services": [
            {
                "service": name,
                "version": version,
                "artifact": f"registry.example.com/{name}:{version}",
                "depends_on": deps[name],
                "tests": {"passed": 10, "failed": 0},
                "security": {"critical": 0, "high": 0},
            }
            for name, version in versions.items()
        ],
    }
    path = tmp_path / f"{release_id}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    dev.cli("release", "publish", str(path))


def events_of(dev: Dev, release_id: str, *types: str) -> list[dict[str, Any]]:
    events = [row["event"] for row in dev.replay()]
    return [
        e for e in events if e.get("correlationid") == release_id and e["type"].rsplit(".v", 1)[0] in types
    ]


def concluded(dev: Dev, release_id: str, n: int = 1, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events_of(dev, release_id, "shiplog.release.concluded")
        if len(found) >= n:
            return found[n - 1]["data"]
        time.sleep(0.5)
    raise AssertionError(f"{release_id} did not conclude {n} time(s):\n" + "".join(dev.output[-60:]))


def order_released(dev: Dev, release_id: str) -> list[str]:
    return [e["data"]["service"] for e in events_of(dev, release_id, "shiplog.release.member_released")]


def terminal(dev: Dev, release_id: str) -> dict[str, str]:
    types = ("shiplog.deployment.succeeded", "shiplog.deployment.rolled_back")
    out = {}
    for e in events_of(dev, release_id, *types):
        out[e["subject"].split(".")[0]] = e["type"].split(".")[2]
    return out


async def test_a_three_service_release_rolls_back_exactly_the_failed_service_and_its_dependants(
    dev: Dev, tmp_path: Path
) -> None:
    await asyncio.to_thread(dev.start)

    publish(dev, tmp_path, "r1", {"schema": "1.0.0", "api": "1.0.0", "web": "1.0.0"})
    first = await asyncio.to_thread(concluded, dev, "r1")
    assert first["outcome"] == "succeeded", first
    assert order_released(dev, "r1") == ["schema", "api", "web"]

    # the middle service is bad: rolled back alone; web never deploys; schema is kept
    publish(dev, tmp_path, "r2", {"schema": "2.0.0", "api": "2.0.1", "web": "2.0.0"})
    second = await asyncio.to_thread(concluded, dev, "r2")
    assert (second["outcome"], second["kept"], second["rolled_back"], second["cancelled"]) == (
        "partially_rolled_back",
        ["schema"],
        ["api"],
        ["web"],
    ), second
    assert terminal(dev, "r2") == {"schema": "succeeded", "api": "rolled_back"}
    assert order_released(dev, "r2") == ["schema", "api"]
    rolled = events_of(dev, "r2", "shiplog.deployment.rolled_back")
    assert [(e["data"]["to_version"], e["data"]["healthy"]) for e in rolled] == [("1.0.0", True)]

    shown = json.loads(dev.cli("release", "status", "r2", "--json").stdout)
    assert {s: c["prod"]["status"] for s, c in shown["cells"].items()} == {
        "schema": "succeeded",
        "api": "rolled_back",
        "web": "cancelled",
    }
    assert shown["waves"] == [["schema"], ["api"], ["web"]]
    assert shown["concluded"]["prod"]["outcome"] == "partially_rolled_back"

    # a rollback drill on schema (2.0.0 now, 1.0.0 before): back, verified, forward,
    # verified, timed — and it ends where it started
    drilled = await asyncio.to_thread(dev.cli, "drill", "schema", "--env", "prod")
    assert "drill completed: time to recover" in drilled.stdout, drilled.stdout + drilled.stderr
    drill_events = [
        e for e in (row["event"] for row in dev.replay()) if e["type"].startswith("shiplog.drill.")
    ]
    steps = [(e["data"]["step"], e["data"]["ok"]) for e in drill_events if ".step_completed." in e["type"]]
    assert steps == [
        ("rollback", True),
        ("verify_rollback", True),
        ("roll_forward", True),
        ("verify_forward", True),
    ]
    by_step = {e["data"]["step"]: e["data"] for e in drill_events if ".step_completed." in e["type"]}
    assert by_step["verify_rollback"]["detail"]["serving"] == ["1.0.0"]
    assert by_step["verify_forward"]["detail"]["serving"] == ["2.0.0"]
    async with httpx.AsyncClient(timeout=3) as client:
        answers = {
            (await client.get(url)).json()["version"] for url in by_step["verify_forward"]["detail"]["urls"]
        }
    assert answers == {"2.0.0"}

    # a good release, then a person rolls api back: web follows it, schema stays
    publish(dev, tmp_path, "r3", {"schema": "2.0.0", "api": "2.0.0", "web": "2.0.0"})
    assert (await asyncio.to_thread(concluded, dev, "r3"))["outcome"] == "succeeded"
    dev.cli("rollback", "api", "--env", "prod", "--comment", "api 2.0.0 breaks a client")
    third = await asyncio.to_thread(concluded, dev, "r3", 2)
    assert (third["outcome"], third["kept"], third["rolled_back"]) == (
        "partially_rolled_back",
        ["schema"],
        ["api", "web"],
    ), third
    asked = events_of(dev, "r3", "shiplog.rollback.requested")
    assert [(e["subject"], e["data"]["because_of"]) for e in asked] == [("web.prod.r3", "api")]
    back = {e["subject"]: e["data"] for e in events_of(dev, "r3", "shiplog.deployment.rolled_back")}
    assert {s: (d["to_version"], d["healthy"]) for s, d in back.items()} == {
        "api.prod.r3": ("1.0.0", True),
        "web.prod.r3": ("1.0.0", True),
    }

    # a drill of a service whose last deployment was rolled back is refused, with why
    refused = await asyncio.to_thread(lambda: dev.cli("drill", "api", "--env", "prod", check=False))
    assert refused.returncode == 1
    assert "drill refused" in refused.stderr and "rolled_back" in refused.stderr, refused.stderr
