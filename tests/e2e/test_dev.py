"""The whole system through its public contract: `shiplog dev` started as a user
starts it (no servers configured: embedded broker and database), a build published
with the CLI, the log read back with `shiplog audit`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.devproc import SHIPLOG, Dev, running_dev

BUILD = "shiplog.build.completed.v1"


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from running_dev(tmp_path)


def publish(dev: Dev, version: str) -> str:
    return dev.cli(
        "build-completed",
        "--service",
        "checkout",
        "--version",
        version,
        "--artifact",
        f"registry.example.com/checkout:{version}",
        "--digest",
        "sha256:" + "ab" * 32,
        "--commit",
        "0" * 40,
        "--author",
        "alice",
        "--tests-passed",
        "120",
        "--tests-failed",
        "0",
        "--coverage",
        "87.5",
        "--security-critical",
        "0",
        "--security-high",
        "0",
    ).stdout.strip()


def test_one_command_starts_it_all_and_a_build_lands_in_the_audited_log(dev: Dev) -> None:
    dev.start()
    runtime = json.loads((dev.home / "dev.json").read_text())
    assert runtime["embedded_kafka"] and runtime["embedded_database"]

    second = dev.cli("dev", check=False)
    assert second.returncode != 0
    assert "already running" in second.stderr

    event_id = publish(dev, "1.4.2")
    [entry] = dev.wait_for_events(1, BUILD)
    assert entry["event"]["id"] == event_id
    assert entry["event"]["type"] == "shiplog.build.completed.v1"
    assert entry["event"]["data"]["tests"] == {"passed": 120, "failed": 0, "coverage": 87.5}
    assert entry["stream"] == f"release-{event_id}"
    # planning rejects it (no pipeline for checkout): a second event, with the reason
    [rejected] = dev.wait_for_events(1, "shiplog.deployment.rejected.v1")
    assert rejected["event"]["data"]["reasons"][0]["code"] == "no_pipeline"
    # the build, its rejection, and the admin API token `shiplog dev` issued (by id, not value)
    assert "ok: 3 events" in dev.cli("audit", "verify").stdout
    assert dev.runtime["api"].startswith("http://127.0.0.1:")
    token = (dev.home / "admin.token").read_text().strip()
    assert token not in "".join(dev.output)
    pending = dev.cli("approvals", "pending")  # through the API, with the admin token
    assert "no deployment is awaiting approval" in pending.stderr

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{dev.metrics_port}/metrics").read().decode()
    assert 'shiplog_consumer_messages_total{consumer="recorder",outcome="handled"} 1.0' in metrics
    assert 'shiplog_event_append_seconds_count{outcome="appended"}' in metrics
    assert "shiplog_pending_approvals 0.0" in metrics  # refreshed from the log at start
    assert 'shiplog_consumer_lag{consumer="recorder",partition="0",topic="shiplog.builds"}' in metrics

    assert dev.stop() == 0
    assert not (dev.home / "dev.json").exists()

    # Started again: the log survived, and new work flows.
    dev.start()
    second_id = publish(dev, "1.4.3")
    events = dev.wait_for_events(2, BUILD)
    assert [e["event"]["id"] for e in events] == [event_id, second_id]
    assert dev.stop() == 0


def test_audit_verify_names_the_row_altered_with_plain_sql(dev: Dev) -> None:
    dev.start()
    ids = [publish(dev, f"2.0.{i}") for i in range(3)]
    builds = dev.wait_for_events(3, BUILD)
    [altered] = [b["position"] for b in builds if b["event"]["id"] == ids[1]]
    runtime = json.loads((dev.home / "dev.json").read_text())

    async def tamper() -> None:
        conn = await asyncpg.connect(runtime["database"])
        try:
            await conn.execute(
                "UPDATE shiplog.events SET body = replace(body, '2.0.1', '9.9.9') WHERE event_id = $1",
                ids[1],
            )
        finally:
            await conn.close()

    asyncio.run(tamper())
    result = dev.cli("audit", "verify", check=False)
    assert result.returncode == 1
    assert f"first bad global position {altered}:" in result.stdout
    dev.stop()


def test_cli_commands_say_clearly_when_nothing_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env["SHIPLOG_HOME"] = str(tmp_path / "nothing")
    result = subprocess.run(
        [*SHIPLOG, "build-completed", "--service", "s", "--version", "1", "--artifact", "a"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no running `shiplog dev`" in result.stderr.replace("\n", " ")
