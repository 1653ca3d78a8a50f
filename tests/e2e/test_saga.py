"""The demo's two scenarios as tests, driven only through the public contract: a
build published with plain aiokafka, the terminal events read from the topics, an
approval given with the CLI, the log checked, and HTTP requests telling which
version really serves."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.e2e.devproc import Dev, running_dev

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "demo"
TOPICS = [
    "shiplog.plans",
    "shiplog.approvals",
    "shiplog.executions",
    "shiplog.verifications",
    "shiplog.rollbacks",
]
TERMINAL = {
    "deployment.succeeded",
    "deployment.rolled_back",
    "deployment.failed",
    "deployment.rejected",
    "deployment.denied",
}


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from running_dev(tmp_path, DEMO)


def build_completed(version: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "ci/github/acme/sample",
        "type": "shiplog.build.completed.v1",
        "time": datetime.now(UTC).isoformat(),
        "subject": "sample",
        "datacontenttype": "application/json",
        "data": {
            "service": "sample",
            "version": version,
            "artifact": f"registry.example.com/sample:{version}",
            "digest": "sha256:" + "cd" * 32,
            "commit": "1" * 40,
            "branch": "main",
            "author": "bob",
            "pipeline": "default",
            "tests": {"passed": 120, "failed": 0, "coverage": 87.5},
            "security": {"critical": 0, "high": 0},
        },
    }


class Topics:
    """Every deployment event on the topics, as a dashboard would see them."""

    def __init__(self, bootstrap: str):
        self.consumer = AIOKafkaConsumer(
            *TOPICS,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=f"e2e-{uuid.uuid4().hex}",
            enable_auto_commit=False,
        )
        self.events: list[dict[str, Any]] = []

    async def first(self, matches: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        async def look() -> dict[str, Any]:
            while True:
                for event in self.events:
                    if matches(event):
                        return event
                batch = await self.consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    self.events.extend(json.loads(r.value) for r in records)

        return await asyncio.wait_for(look(), timeout)

    async def wait_for(self, kind: str, subject: str) -> dict[str, Any]:
        return await self.first(lambda e: _kind(e) == kind and e["subject"] == subject)

    async def terminal(self, subject: str) -> dict[str, Any]:
        return await self.first(lambda e: _kind(e) in TERMINAL and e["subject"] == subject)

    def of(self, subject: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["subject"] == subject]


def _kind(event: dict[str, Any]) -> str:
    return event["type"].removeprefix("shiplog.").rsplit(".v", 1)[0]


async def serving(endpoint: str, n: int = 40) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=3) as client:
        for _ in range(n):
            response = await client.get(endpoint + "/")
            seen[response.json().get("version") if response.status_code == 200 else response.status_code] += 1
    return seen


async def release(dev: Dev, topics: Topics, producer: AIOKafkaProducer, version: str) -> tuple[str, dict]:
    build = build_completed(version)
    await producer.send_and_wait("shiplog.builds", json.dumps(build).encode(), key=b"sample")
    production = f"sample.production.{build['id']}"
    for env in ("dev", "staging"):
        assert _kind(await topics.terminal(f"sample.{env}.{build['id']}")) == "deployment.succeeded", env
    await topics.wait_for("approval.requested", production)
    # alice is a release manager: her token says so (the production gate asks for the role)
    token = await asyncio.to_thread(dev.token, "alice", "release-manager")
    approve = ("approve", production, "--comment", "ship it", "--role", "release-manager")
    approved = await asyncio.to_thread(lambda: dev.cli(*approve, token=token))
    assert f"approved {production} as alice" in approved.stdout
    return production, await topics.terminal(production)


def test_a_good_release_reaches_production_and_a_bad_one_rolls_itself_back(dev: Dev) -> None:
    dev.start()
    asyncio.run(_scenarios(dev, dev.runtime["kafka"]))


async def _scenarios(dev: Dev, bootstrap: str) -> None:
    topics = Topics(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await asyncio.gather(topics.consumer.start(), producer.start())
    try:
        production, end = await release(dev, topics, producer, "1.0.0")
        assert _kind(end) == "deployment.succeeded"
        kinds = [_kind(e) for e in topics.of(production)]
        assert [k for k in kinds if k.startswith("step.applied") or k == "step.started"].count(
            "step.started"
        ) == 5
        [approved] = [e for e in topics.of(production) if _kind(e) == "deployment.approved"]
        assert approved["data"]["approvers"] == ["alice"] and approved["actor"] == "alice"
        endpoint = next(
            e["data"]["detail"]["endpoint"] for e in topics.of(production) if _kind(e) == "step.applied"
        )
        assert await serving(endpoint) == Counter({"1.0.0": 40})

        bad, end = await release(dev, topics, producer, "1.1.0")
        assert _kind(end) == "deployment.rolled_back"
        assert end["data"]["to_version"] == "1.0.0" and end["data"]["healthy"] is True
        [failed] = [e for e in topics.of(bad) if _kind(e) == "verification.failed"]
        error_rate = [m for m in failed["data"]["measurements"] if m["metric"] == "error_rate"]
        assert error_rate and all(m["outcome"] == "Failed" for m in error_rate)
        assert await serving(endpoint) == Counter({"1.0.0": 40})
    finally:
        await asyncio.gather(topics.consumer.stop(), producer.stop())

    # The log holds all of it, the approval's author included, and is intact.
    replay = [
        json.loads(line)
        for line in dev.cli(
            "audit", "replay", "--json", "--stream", f"deployment-{production}"
        ).stdout.splitlines()
    ]
    granted = [r["event"] for r in replay if r["event"]["type"].startswith("shiplog.approval.granted.")]
    assert granted and granted[0]["actor"] == "alice"
    # the API recorded what the token says of her, the role she acted in, and from where
    data = granted[0]["data"]
    assert data["roles"] == ["release-manager"] and data["role"] == "release-manager"
    assert data["client"] == "127.0.0.1" and granted[0]["shiplogsig"]
    assert "ok:" in dev.cli("audit", "verify").stdout
    status = json.loads(dev.cli("status", "sample", "--json").stdout)
    serving_now = {e["environment"]: e["serving"] for e in status["environments"]}
    assert serving_now["production"]["version"] == "1.0.0"
    assert serving_now["production"]["via"] == "rolled_back"
    assert serving_now["staging"]["version"] == "1.1.0"
