"""The command API served by uvicorn on a free port, against the real log and broker,
for integration tests; and deployments written into the log to give commands to."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adapters.eventlog import PostgresEventLog
from adapters.identity import Authenticator, BearerAuthenticator
from adapters.identity.tokens import PostgresTokenStore
from events.access import REFUSALS_STREAM
from events.approval import ApprovalRequested
from events.deployment import (
    DeploymentPlanned,
    PlannedStep,
    StrategyPlan,
    TargetRef,
    deployment_id,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.registry import new_event
from events.signature import key_id_for
from producers.api import ApiDeps, Signer, create_app
from producers.api.publisher import CommandPublisher
from producers.api.server import ApiServer, bind
from producers.kafka import create_topics

KEY = b"test command key: 0123456789abcdef"
KEY_ID = key_id_for(KEY)
KEYS = {KEY_ID: KEY}
#: the gate of the deployments written here: one level, for release managers
GATE = {"manual": {"required": True, "levels": [{"name": "release", "roles": ["release-manager"]}]}}


@dataclass
class Api:
    url: str
    log: PostgresEventLog
    tokens: PostgresTokenStore
    #: every token value issued through ``token()``, to look for where it must not be
    issued: list[str] = field(default_factory=list)

    async def token(
        self, user: str, roles: list[str], expires_in: timedelta | None = timedelta(hours=1)
    ) -> str:
        expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
        _, value = await self.tokens.create(user, roles, expires_at)
        self.issued.append(value)
        return value

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20)

    async def refusals(self) -> list[CloudEvent]:
        return [r.event for r in await self.log.read_stream(REFUSALS_STREAM)]


@contextlib.asynccontextmanager
async def running_api(
    log: PostgresEventLog,
    bootstrap: str,
    prefix: str,
    *,
    oidc: Authenticator | None = None,
    trust_proxy: bool = False,
    key: bytes = KEY,
) -> AsyncIterator[Api]:
    await create_topics(bootstrap, prefix)
    tokens = PostgresTokenStore(log)
    publisher = CommandPublisher(bootstrap, prefix)
    await publisher.start()
    app = create_app(
        ApiDeps(
            log=log,
            authenticator=BearerAuthenticator(tokens, oidc),
            publish=publisher,
            signer=Signer(key_id_for(key), key),
            trust_proxy=trust_proxy,
        )
    )
    server = ApiServer(app, bind("127.0.0.1", 0))
    await server.start()
    try:
        yield Api(server.url, log, tokens)
    finally:
        await server.stop()
        await publisher.stop()


async def awaiting_approval(
    log: PostgresEventLog, service: str = "checkout", environment: str = "production"
) -> DeploymentPlanned:
    """A deployment planned with ``GATE`` and asked for approval, as the saga writes it."""
    release = str(uuid.uuid4())
    dep = deployment_id(service, environment, release)
    plan = DeploymentPlanned(
        deployment_id=dep,
        release_id=release,
        service=service,
        version="1.4.2",
        artifact=f"reg/{service}:1.4.2",
        digest="sha256:" + "ab" * 32,
        environment=environment,
        stage=0,
        strategy=StrategyPlan(type="rolling", reason="explicit", steps=[PlannedStep(kind="rolling")]),
        target=TargetRef(type="local"),
        gate=GATE,
        build={"author": "bob", "tests": {"failed": 0}},
        plan_hash="h1",
    )
    request = ApprovalRequested(
        deployment_id=dep,
        service=service,
        environment=environment,
        version="1.4.2",
        level="release",
        roles=["release-manager"],
        plan_hash="h1",
        digest=plan.digest,
    )
    events = [
        new_event(p, source="shiplog/test", subject=dep, correlationid=release) for p in (plan, request)
    ]
    await log.append(deployment_stream(dep), events, None)
    return plan


async def drain(bootstrap: str, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on ``topics`` now (up to their end offsets), without joining a
    consumer group (a group's join costs seconds on the embedded broker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in consumer.partitions_for_topic(topic) or ()
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = {tp: offset for tp, offset in (await consumer.end_offsets(partitions)).items() if offset}
        records: list[ConsumerRecord[bytes, bytes]] = []
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                return records
            batch = await consumer.getmany(*behind, timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()


async def log_bodies(log: PostgresEventLog) -> list[str]:
    return [row.body async for row in log.scan(after=0)]


def leaks(secrets: list[str | bytes], *texts: Any) -> list[str]:
    """Which of ``secrets`` appear in any of ``texts`` (str, bytes, or lists of them)."""
    flat: list[str] = []
    for text in texts:
        items = text if isinstance(text, list | tuple) else [text]
        flat += [t.decode(errors="replace") if isinstance(t, bytes) else str(t) for t in items]
    found = []
    for secret in secrets:
        value = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
        if any(value in t for t in flat):
            found.append(value[:12] + "...")
    return found
