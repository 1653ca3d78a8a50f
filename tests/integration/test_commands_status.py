"""The command API and the status read model, against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.eventlog import PostgresEventLog
from consumers.deployment import Status
from events import CloudEvent
from events.approval import ApprovalGranted, ApprovalRequested
from events.base import EventData
from events.deployment import (
    DeploymentApproved,
    DeploymentPaused,
    DeploymentPlanned,
    DeploymentQueued,
    DeploymentRolledBack,
    DeploymentStarted,
    DeploymentSucceeded,
    PlannedStep,
    StrategyPlan,
    TargetRef,
    deployment_id,
    deployment_stream,
)
from events.execution import SnapshotTaken, StepApplied, StepStarted
from events.registry import REGISTRY, new_event
from events.rollback import RollbackCompleted, RollbackStarted
from events.signature import verify
from events.topics import COMMANDS, topic_name
from events.verification import VerificationFailed
from producers.commands import command_event
from producers.kafka import ID_HEADER, TYPE_HEADER
from shiplog.status import deployment_status, find_deployment
from tests.apiutil import KEYS, running_api
from tests.busutil import consume

ROOT = Path(__file__).resolve().parents[2]
ROLLING = StrategyPlan(type="rolling", reason="explicit", steps=[PlannedStep(kind="rolling", batch_size=1)])
CANARY = StrategyPlan(
    type="canary",
    reason="auto: the target splits traffic and the analysis has metrics",
    steps=[
        PlannedStep(kind="set_weight", weight=20),
        PlannedStep(kind="pause"),
        PlannedStep(kind="set_weight", weight=100),
    ],
)
STAGES = {"dev": 0, "staging": 1, "production": 2}


@dataclass
class Deployment:
    """Writes one deployment's stream the way the saga consumers would."""

    log: PostgresEventLog
    service: str
    environment: str
    version: str
    strategy: StrategyPlan = ROLLING
    release: str = ""

    def __post_init__(self) -> None:
        self.release = self.release or str(uuid.uuid4())

    @property
    def id(self) -> str:
        return deployment_id(self.service, self.environment, self.release)

    async def add(self, *payloads: EventData, actor: str | None = None) -> None:
        events = [
            new_event(p, source="shiplog/test", subject=self.id, correlationid=self.release, actor=actor)
            for p in payloads
        ]
        await self.log.append(deployment_stream(self.id), events, None)

    async def planned(self) -> Deployment:
        await self.add(
            DeploymentPlanned(
                deployment_id=self.id,
                release_id=self.release,
                service=self.service,
                version=self.version,
                artifact=f"reg/{self.service}:{self.version}",
                environment=self.environment,
                stage=STAGES[self.environment],
                strategy=self.strategy,
                target=TargetRef(type="local"),
                plan_hash="h",
            )
        )
        return self

    async def approved(self, by: str | None = None) -> Deployment:
        if by is None:
            await self.add(DeploymentApproved(deployment_id=self.id, automatic=True, rule="tests pass"))
            return self
        await self.add(
            ApprovalRequested(
                deployment_id=self.id,
                service=self.service,
                environment=self.environment,
                version=self.version,
            )
        )
        await self.add(ApprovalGranted(deployment_id=self.id), actor=by)
        await self.add(DeploymentApproved(deployment_id=self.id, automatic=False, approvers=[by]))
        return self

    async def started(self, previous: str | None) -> Deployment:
        await self.add(DeploymentStarted(deployment_id=self.id))
        # (A snapshot of "nothing ran" is left out: SnapshotTaken.version=None is
        # dropped by new_event's exclude_none and then fails validation on read.)
        if previous is not None:
            await self.add(
                SnapshotTaken(deployment_id=self.id, version=previous, snapshot={"version": previous})
            )
        return self

    async def step(self, index: int, *, applied: bool = True) -> Deployment:
        step = self.strategy.steps[index]
        step_id = f"{self.id}#{index}"
        await self.add(StepStarted(deployment_id=self.id, index=index, step_id=step_id, step=step))
        if applied:
            await self.add(
                StepApplied(deployment_id=self.id, index=index, step_id=step_id, step=step, ok=True)
            )
        return self

    async def succeeded(self) -> Deployment:
        for i in range(len(self.strategy.steps)):
            await self.step(i)
        await self.add(
            DeploymentSucceeded(
                deployment_id=self.id,
                release_id=self.release,
                service=self.service,
                environment=self.environment,
                version=self.version,
            )
        )
        return self

    async def rolled_back(self, to: str | None) -> Deployment:
        await self.add(
            VerificationFailed(deployment_id=self.id, step_index=0, outcome="Failed", reason="error rate"),
            RollbackStarted(deployment_id=self.id, reason="analysis failed", to_version=to, step_id="rb"),
            RollbackCompleted(deployment_id=self.id, ok=True, healthy=True),
            DeploymentRolledBack(
                deployment_id=self.id,
                service=self.service,
                environment=self.environment,
                to_version=to,
                reason="analysis failed",
                healthy=True,
            ),
        )
        return self


@dataclass
class History:
    staging_paused: Deployment
    staging_queued: Deployment
    production_bad: Deployment
    payments_waiting: Deployment


async def fill(log: PostgresEventLog) -> History:
    """checkout 1.0.0 through dev, staging, production (approved by alice); a bad
    1.1.0 rolled back in production; 1.2.0 in dev, paused at its canary's pause in
    staging, with 1.3.0 queued behind it; payments 2.0.0 waiting for approval in dev."""
    for env in ("dev", "staging"):
        d = Deployment(log, "checkout", env, "1.0.0")
        await (await (await (await d.planned()).approved()).started(None)).succeeded()
    prod = Deployment(log, "checkout", "production", "1.0.0", CANARY)
    await (await (await (await prod.planned()).approved(by="alice")).started(None)).succeeded()

    bad = Deployment(log, "checkout", "production", "1.1.0", CANARY)
    await (await (await (await bad.planned()).approved(by="alice")).started("1.0.0")).step(0)
    await bad.rolled_back("1.0.0")

    dev = Deployment(log, "checkout", "dev", "1.2.0")
    await (await (await (await dev.planned()).approved()).started("1.0.0")).succeeded()
    paused = Deployment(log, "checkout", "staging", "1.2.0", CANARY, release=dev.release)
    await (await (await (await paused.planned()).approved()).started("1.0.0")).step(0)
    await paused.step(1, applied=False)
    await paused.add(DeploymentPaused(deployment_id=paused.id, step_index=1, reason="waiting for promote"))
    queued = Deployment(log, "checkout", "staging", "1.3.0", CANARY)
    await (await queued.planned()).approved()
    await queued.add(DeploymentQueued(deployment_id=queued.id, behind=paused.id))

    waiting = Deployment(log, "payments", "dev", "2.0.0")
    await waiting.planned()
    await waiting.add(
        ApprovalRequested(deployment_id=waiting.id, service="payments", environment="dev", version="2.0.0")
    )
    return History(paused, queued, bad, waiting)


# -- commands through the API --------------------------------------------------------------


async def test_the_api_puts_a_command_keyed_by_its_subject_with_the_principal_and_signed(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    h = await fill(eventlog)
    async with running_api(eventlog, kafka_bootstrap, topic_prefix) as api:
        alice, bob = await api.token("alice", ["operator"]), await api.token("bob", ["operator"])
        async with api.client(alice) as client:
            answer = await client.post(
                f"/deployments/{h.staging_paused.id}/pause", json={"comment": "looks odd"}
            )
        assert answer.status_code == 202, answer.text
        pause_id = answer.json()["id"]
        async with api.client(bob) as client:
            answer = await client.post(
                "/services/checkout/environments/production/rollback", json={"to_version": "1.0.0"}
            )
        assert answer.status_code == 202, answer.text
        rollback_id = answer.json()["id"]
    records = await consume(kafka_bootstrap, topic_name(COMMANDS, topic_prefix), 2)
    by_id = {CloudEvent.model_validate_json(r.value).id: r for r in records}
    assert set(by_id) == {pause_id, rollback_id}

    record = by_id[pause_id]
    assert record.key == h.staging_paused.id.encode()
    headers = dict(record.headers)
    assert headers[ID_HEADER] == pause_id.encode()
    assert headers[TYPE_HEADER] == b"shiplog.command.pause.v1"
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["traceparent"].startswith(b"00-")
    event = REGISTRY.decode(record.value)
    assert event.actor == "alice" and event.source == "shiplog/api"
    assert event.subject == h.staging_paused.id and event.correlationid == h.staging_paused.release
    assert event.data == {"deployment_id": h.staging_paused.id, "comment": "looks odd"}
    assert verify(event, KEYS) is None

    record = by_id[rollback_id]
    assert record.key == b"checkout.production"
    event = REGISTRY.decode(record.value)
    assert event.actor == "bob" and event.type == "shiplog.command.rollback.v1"
    assert event.data["to_version"] == "1.0.0" and verify(event, KEYS) is None


def test_command_event_refuses_what_is_not_a_command() -> None:
    from events.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not a command"):
        command_event(DeploymentStarted(deployment_id="x.dev.r"), actor="alice", subject="x.dev.r")


async def test_the_api_publisher_on_a_dead_broker_is_adapter_unavailable() -> None:
    from events.errors import AdapterUnavailable
    from producers.api.publisher import CommandPublisher

    with pytest.raises(AdapterUnavailable):
        await CommandPublisher("127.0.0.1:1").start()


# -- the read model -------------------------------------------------------------------


async def test_status_shows_what_serves_and_what_is_in_progress(eventlog: PostgresEventLog) -> None:
    h = await fill(eventlog)
    report = await deployment_status(eventlog)

    assert [(e.service, e.environment) for e in report.environments] == [
        ("checkout", "dev"),
        ("checkout", "staging"),
        ("checkout", "production"),
        ("payments", "dev"),
    ]
    serving = {
        (e.service, e.environment): (e.serving.version, e.serving.via) if e.serving else None
        for e in report.environments
    }
    assert serving == {
        ("checkout", "dev"): ("1.2.0", "succeeded"),
        ("checkout", "staging"): ("1.0.0", "succeeded"),
        ("checkout", "production"): ("1.0.0", "rolled_back"),
        ("payments", "dev"): None,
    }
    prod = report.get("checkout", "production")
    assert prod is not None and prod.serving is not None
    assert prod.serving.deployment_id == h.production_bad.id and prod.in_progress == []

    staging = report.get("checkout", "staging")
    assert staging is not None
    paused, queued = staging.in_progress
    assert (paused.deployment_id, paused.version, paused.status) == (
        h.staging_paused.id,
        "1.2.0",
        Status.PAUSED,
    )
    assert (paused.step_index, paused.steps_total, paused.step_kind) == (1, 3, "pause")
    assert paused.step_label == "2/3 pause"
    assert paused.paused_reason == "waiting for promote"
    assert (queued.deployment_id, queued.status, queued.step_label) == (
        h.staging_queued.id,
        Status.QUEUED,
        "0/3",
    )

    [waiting] = report.pending_approvals()
    assert waiting.deployment_id == h.payments_waiting.id and waiting.version == "2.0.0"

    only = await deployment_status(eventlog, "payments")
    assert [(e.service, e.environment) for e in only.environments] == [("payments", "dev")]
    # A LIKE wildcard in a service name matches nothing but itself.
    assert (await deployment_status(eventlog, "check_ut")).environments == []
    assert (await deployment_status(eventlog, "nosuch")).environments == []
    json.dumps(report.to_dict())  # serialisable as it stands


async def test_find_deployment_picks_the_one_executing_then_the_latest(eventlog: PostgresEventLog) -> None:
    h = await fill(eventlog)
    assert await find_deployment(eventlog, "checkout", "staging") == h.staging_paused.id
    assert await find_deployment(eventlog, "checkout", "production") == h.production_bad.id
    assert await find_deployment(eventlog, "payments", "dev") == h.payments_waiting.id
    assert await find_deployment(eventlog, "checkout", "qa") is None
    assert await find_deployment(eventlog, "nosuch", "dev") is None


# -- the CLI --------------------------------------------------------------------------


async def shiplog(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shiplog",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    return {**env, "SHIPLOG_HOME": str(tmp_path), "COLUMNS": "200", **extra}


async def test_cli_status_json_reads_the_log(
    eventlog: PostgresEventLog, postgres_dsn: str, log_schema: str, tmp_path: Path
) -> None:
    h = await fill(eventlog)
    env = cli_env(tmp_path, DATABASE_URL=postgres_dsn, SHIPLOG_LOG_SCHEMA=log_schema)
    code, stdout, stderr = await shiplog(env, "status", "--json")
    assert code == 0, stderr
    report: dict[str, Any] = json.loads(stdout)
    rows = {(e["service"], e["environment"]): e for e in report["environments"]}
    assert rows["checkout", "production"]["serving"]["version"] == "1.0.0"
    assert rows["checkout", "production"]["serving"]["via"] == "rolled_back"
    [paused, _queued] = rows["checkout", "staging"]["in_progress"]
    assert paused["deployment_id"] == h.staging_paused.id
    assert paused["status"] == "paused" and paused["step"]["label"] == "2/3 pause"

    code, stdout, stderr = await shiplog(env, "status", "payments")
    assert code == 0, stderr
    assert "payments" in stdout and "awaiting_approval" in stdout and "checkout" not in stdout


async def test_cli_commands_go_through_the_api_as_the_token_s_principal(
    eventlog: PostgresEventLog,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    h = await fill(eventlog)
    async with running_api(eventlog, kafka_bootstrap, topic_prefix) as api:
        carol = await api.token("carol", ["release-manager"])
        dave = await api.token("dave", ["operator"])
        # neither the database nor Kafka: the CLI needs only the API and a token
        env = cli_env(tmp_path, SHIPLOG_API_URL=api.url, SHIPLOG_TOKEN=carol)
        code, stdout, stderr = await shiplog(env, "approvals", "pending", "--json")
        assert code == 0, stderr
        [pending] = json.loads(stdout)
        assert pending["approve"] == f"shiplog approve {h.payments_waiting.id}"

        code, stdout, stderr = await shiplog(
            env, "approve", h.payments_waiting.id, "-m", "ok", "--role", "release-manager"
        )
        assert code == 0, stderr
        assert f"approved {h.payments_waiting.id} as carol" in stdout
        as_dave = {**env, "SHIPLOG_TOKEN": dave}
        code, stdout, stderr = await shiplog(as_dave, "promote", "checkout", "--env", "staging")
        assert code == 0, stderr
        assert f"promoted {h.staging_paused.id} as dave" in stdout

        records = await consume(kafka_bootstrap, topic_name(COMMANDS, topic_prefix), 2)
        events = {REGISTRY.decode(r.value).type_name: (r.key, REGISTRY.decode(r.value)) for r in records}
        key, granted = events["shiplog.approval.granted"]
        assert key == h.payments_waiting.id.encode() and granted.actor == "carol"
        assert granted.correlationid == h.payments_waiting.release and granted.data["comment"] == "ok"
        assert granted.data["role"] == "release-manager" and granted.data["roles"] == ["release-manager"]
        key, promote = events["shiplog.command.promote"]
        assert key == h.staging_paused.id.encode() and promote.actor == "dave"

        # Refusals are one clear line, exit code 2, nothing published.
        code, stdout, stderr = await shiplog(as_dave, "abort", h.production_bad.id)
        assert code == 2 and "already ended: rolled_back" in stderr and "Traceback" not in stderr
        code, _, stderr = await shiplog(as_dave, "pause", "checkout", "--env", "qa")
        assert code == 2 and "no deployment of checkout in qa" in stderr
        code, _, stderr = await shiplog(as_dave, "rollback", "checkout", "--env", "qa")
        assert code == 2 and "nothing to roll back" in stderr
        code, _, stderr = await shiplog(env, "pause", h.staging_paused.id)
        assert code == 2 and "not allowed" in stderr and "operator" in stderr
        code, _, stderr = await shiplog({**env, "SHIPLOG_TOKEN": "shiplog_nope"}, "approvals", "pending")
        assert code == 2 and "refused the token (unknown token)" in stderr and "SHIPLOG_TOKEN" in stderr
        no_token = {k: v for k, v in env.items() if k != "SHIPLOG_TOKEN"}
        code, _, stderr = await shiplog(no_token, "approvals", "pending")
        assert code == 2 and "no API token" in stderr
    # the API is gone
    code, _, stderr = await shiplog(env, "approve", h.payments_waiting.id)
    assert code == 2 and f"cannot reach the shiplog API at {api.url}" in stderr.replace("\n", " ")
    assert "Traceback" not in stderr
