"""The command API served by uvicorn, against the real PostgreSQL log and Kafka:
authenticated commands with the principal as actor, signed on shiplog.commands;
refusals answered 401/403 and audited; forged commands refused by the consumers."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from adapters.eventlog import PostgresEventLog
from consumers.approval import APPROVAL
from consumers.execution import EXECUTION
from consumers.recorder import RECORDER
from events.approval import ApprovalGranted
from events.command import CommandRefused, Pause
from events.deployment import DeploymentApproved, deployment_stream
from events.envelope import CloudEvent
from events.registry import REGISTRY, new_event
from events.signature import ATTRIBUTE, key_id_for, sign, verify
from events.topics import ALL_TOPICS, COMMANDS, topic_name
from producers.kafka import headers
from tests.apiutil import KEY, KEYS, Api, awaiting_approval, drain, leaks, log_bodies, running_api
from tests.busutil import eventually, produce, running_shell, unique

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def api(eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str):  # type: ignore[no-untyped-def]
    async with running_api(eventlog, kafka_bootstrap, topic_prefix) as running:
        yield running


async def commands_on_topic(bootstrap: str, prefix: str, n: int) -> list[CloudEvent]:
    """The commands on the topic (the API answers once the broker acknowledged them)."""
    events = [REGISTRY.decode(r.value) for r in await drain(bootstrap, [topic_name(COMMANDS, prefix)])]
    assert len(events) == n, events
    return events


# -- commands ----------------------------------------------------------------------------


async def test_a_valid_token_approves_as_its_principal_with_roles_client_and_a_signature(
    api: Api, eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    plan = await awaiting_approval(eventlog)
    token = await api.token("alice", ["release-manager", "qa"])
    async with api.client(token) as client:
        answer = await client.post(
            f"/deployments/{plan.deployment_id}/approve",
            # the body names another actor: it changes nothing
            json={
                "comment": "canary plan looks good",
                "role": "release-manager",
                "plan_hash": "h1",
                "digest": plan.digest,
                "actor": "mallory",
            },
        )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["actor"] == "alice" and accepted["type"] == "shiplog.approval.granted.v2"

    [event] = await commands_on_topic(kafka_bootstrap, topic_prefix, 1)
    assert event.id == accepted["id"]
    assert event.actor == "alice" and event.source == "shiplog/api"
    assert event.subject == plan.deployment_id and event.correlationid == plan.release_id
    granted = REGISTRY.payload(event, ApprovalGranted)
    assert granted.roles == ["qa", "release-manager"] and granted.role == "release-manager"
    assert granted.client == "127.0.0.1"
    assert (granted.comment, granted.plan_hash, granted.digest) == (
        "canary plan looks good",
        "h1",
        plan.digest,
    )
    assert "mallory" not in event.canonical_json()
    assert verify(event, KEYS) is None
    assert event.model_extra is not None and event.model_extra[ATTRIBUTE].startswith(key_id_for(KEY) + ":")


async def test_acting_in_a_role_one_does_not_hold_is_403_audited_and_publishes_nothing(
    api: Api, eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    plan = await awaiting_approval(eventlog)
    token = await api.token("dave", ["developer"])
    async with api.client(token) as client:
        answer = await client.post(
            f"/deployments/{plan.deployment_id}/approve", json={"role": "release-manager"}
        )
    assert answer.status_code == 403
    assert "does not hold the role 'release-manager'" in answer.json()["detail"]
    [refused] = await api.refusals()
    data = refused.data
    assert refused.type == "shiplog.access.refused.v1" and refused.actor == "dave"
    assert data["status"] == 403 and data["principal"] == "dave" and data["token_id"].startswith("tok_")
    assert data["method"] == "POST" and data["path"] == f"/deployments/{plan.deployment_id}/approve"
    assert data["client"] == "127.0.0.1"
    assert await drain(kafka_bootstrap, [topic_name(COMMANDS, topic_prefix)]) == []


async def test_operating_needs_an_operator_role_and_commands_name_the_principal(
    api: Api, eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    plan = await awaiting_approval(eventlog)
    dep = plan.deployment_id
    approver = await api.token("alice", ["release-manager"])
    operator = await api.token("olga", ["operator"])
    async with api.client(approver) as client:
        refused = await client.post(f"/deployments/{dep}/pause", json={})
    assert refused.status_code == 403 and "admin, operator" in refused.json()["detail"]
    async with api.client(operator) as client:
        pause = await client.post(f"/deployments/{dep}/pause", json={"comment": "looks odd"})
        when = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
        schedule = await client.post(f"/deployments/{dep}/schedule", json={"not_before": when.isoformat()})
        naive = await client.post(f"/deployments/{dep}/schedule", json={"not_before": "2030-01-01T10:00:00"})
        rollback = await client.post(
            f"/services/{plan.service}/environments/{plan.environment}/rollback", json={"comment": "bad"}
        )
        nowhere = await client.post("/services/checkout/environments/qa/rollback", json={})
        unknown = await client.post("/deployments/checkout.production.nope/abort", json={})
    assert [pause.status_code, schedule.status_code, rollback.status_code] == [202, 202, 202]
    assert naive.status_code == 422
    assert nowhere.status_code == 404 and "nothing to roll back" in nowhere.json()["detail"]
    assert unknown.status_code == 404
    events = {e.type_name: e for e in await commands_on_topic(kafka_bootstrap, topic_prefix, 3)}
    assert {e.actor for e in events.values()} == {"olga"}
    assert all(verify(e, KEYS) is None for e in events.values())
    assert events[Pause.TYPE].data == {"deployment_id": dep, "comment": "looks odd"}
    assert events["shiplog.command.schedule"].data["not_before"].startswith(when.strftime("%Y-%m-%dT%H:%M"))
    assert events["shiplog.command.rollback"].subject == f"{plan.service}.{plan.environment}"
    [audit] = await api.refusals()
    assert audit.data["principal"] == "alice" and audit.data["status"] == 403


async def test_a_command_on_a_deployment_that_ended_is_409(api: Api, eventlog: PostgresEventLog) -> None:
    from events.deployment import DeploymentDenied

    plan = await awaiting_approval(eventlog)
    denied = new_event(
        DeploymentDenied(deployment_id=plan.deployment_id, reason="no"),
        source="t",
        subject=plan.deployment_id,
    )
    await eventlog.append(deployment_stream(plan.deployment_id), [denied], None)
    token = await api.token("root", ["admin"])
    async with api.client(token) as client:
        answer = await client.post(f"/deployments/{plan.deployment_id}/approve", json={})
    assert answer.status_code == 409 and "already ended: denied" in answer.json()["detail"]


# -- reading -----------------------------------------------------------------------------


async def test_reads_need_a_token_health_and_openapi_do_not(api: Api, eventlog: PostgresEventLog) -> None:
    plan = await awaiting_approval(eventlog)
    token = await api.token("alice", ["release-manager"])
    async with api.client() as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        spec = (await anonymous.get("/openapi.json")).json()
        assert (await anonymous.get("/docs")).status_code == 200
        assert (await anonymous.get("/approvals/pending")).status_code == 401
    assert "/deployments/{deployment_id}/approve" in spec["paths"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    async with api.client(token) as client:
        [pending] = (await client.get("/approvals/pending")).json()
        one = (await client.get(f"/deployments/{plan.deployment_id}")).json()
        report = (await client.get("/deployments", params={"service": "checkout"})).json()
        found = (await client.get("/services/checkout/environments/production")).json()
        missing = await client.get("/deployments/nope.nope.nope")
    assert pending["deployment_id"] == plan.deployment_id
    assert one["status"] == "awaiting_approval" and one["plan_hash"] == "h1"
    assert one["approval_request"]["roles"] == ["release-manager"]
    assert report["environments"][0]["environment"] == "production"
    assert found["deployment_id"] == plan.deployment_id
    assert missing.status_code == 404
    [refusal] = await api.refusals()
    assert refusal.data["reason"] == "missing bearer token" and refusal.data["path"] == "/approvals/pending"


async def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_saw(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_api(eventlog, kafka_bootstrap, topic_prefix, trust_proxy=True) as api:
        plan = await awaiting_approval(eventlog)
        token = await api.token("alice", ["release-manager"])
        async with api.client(token, **{"X-Forwarded-For": "6.6.6.6, 10.1.2.3"}) as client:
            assert (
                await client.post(f"/deployments/{plan.deployment_id}/approve", json={})
            ).status_code == 202
        async with api.client("shiplog_nope", **{"X-Forwarded-For": "10.9.9.9"}) as client:
            assert (await client.get("/approvals/pending")).status_code == 401
        [event] = await commands_on_topic(kafka_bootstrap, topic_prefix, 1)
        assert event.data["client"] == "10.1.2.3"
        [refusal] = await api.refusals()
        assert refusal.data["client"] == "10.9.9.9"


# -- forged commands ---------------------------------------------------------------------


def _forged(dep: str, *, actor: str, signature: str | None = None) -> CloudEvent:
    event = new_event(
        ApprovalGranted(
            deployment_id=dep, comment="trust me", roles=["release-manager"], role="release-manager"
        ),
        source="shiplog/api",
        subject=dep,
        actor=actor,
    )
    return event.model_copy(update={ATTRIBUTE: signature}) if signature else event


async def test_a_forged_command_on_the_topic_is_refused_and_the_refusal_recorded(
    api: Api,
    eventlog: PostgresEventLog,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plan = await awaiting_approval(eventlog)
    dep = plan.deployment_id
    commands = topic_name(COMMANDS, topic_prefix)
    recorder, approval, execution = unique(RECORDER), unique(APPROVAL), unique(EXECUTION)
    other_key = b"not the API's key at all, 32 by"
    forgeries = [
        _forged(dep, actor="mallory"),  # unsigned
        sign(_forged(dep, actor="mallory"), other_key, key_id_for(other_key)),  # another key
        sign(_forged(dep, actor="alice"), KEY, key_id_for(KEY)).model_copy(update={"actor": "mallory"}),
        new_event(Pause(deployment_id=dep), source="x", subject=dep, actor="mallory"),
    ]
    async with (
        running_shell(recorder, eventlog, kafka_bootstrap, topic_prefix, command_keys=KEYS) as rec,
        running_shell(approval, eventlog, kafka_bootstrap, topic_prefix, command_keys=KEYS) as app,
        running_shell(execution, eventlog, kafka_bootstrap, topic_prefix, command_keys=KEYS) as exe,
    ):
        for forged in forgeries:
            # plain aiokafka, as anyone with access to the broker could
            await produce(
                kafka_bootstrap,
                commands,
                forged.to_bytes(),
                key=dep.encode(),
                headers=headers(forged.id, forged.type, None),
            )
        await eventually(lambda: rec.stats["refused"] == 4, what="the recorder to refuse all four")
        await eventually(lambda: app.stats["refused"] == 3, what="the approval consumer to refuse three")
        await eventually(lambda: exe.stats["refused"] == 1, what="execution to refuse the pause")

        # the same approval through the API counts
        token = await api.token("alice", ["release-manager"])
        async with api.client(token) as client:
            answer = await client.post(f"/deployments/{dep}/approve", json={"role": "release-manager"})
        assert answer.status_code == 202
        await eventually(lambda: app.stats["handled"] == 1, what="the signed approval to be handled")
        await eventually(lambda: rec.stats["handled"] == 1, what="the signed approval to be recorded")

    stream = [r.event for r in await eventlog.read_stream(deployment_stream(dep))]
    refusals = [REGISTRY.payload(e, CommandRefused) for e in stream if e.type_name == CommandRefused.TYPE]
    assert sorted(r.command_id for r in refusals) == sorted(f.id for f in forgeries)
    assert {r.claimed_actor for r in refusals} == {"mallory"}
    reasons = sorted(r.reason.split(":")[0].split(" (")[0] for r in refusals)
    assert reasons == ["bad signature", "signed with an unknown key", "unsigned", "unsigned"]
    assert not any(e.id in {f.id for f in forgeries} for e in stream)  # never recorded as given
    kinds = [e.type_name for e in stream]
    assert kinds.count(ApprovalGranted.TYPE) == 1  # the API's, recorded by the recorder
    assert DeploymentApproved.TYPE in kinds, kinds
    [approved] = [e for e in stream if e.type_name == DeploymentApproved.TYPE]
    assert approved.data["approvers"] == ["alice"]
    assert "refused command" in caplog.text and "unsigned" in caplog.text
    assert not leaks([KEY, KEY.hex(), *api.issued], caplog.text, await log_bodies(eventlog))


# -- secrets -----------------------------------------------------------------------------


async def test_no_token_or_key_appears_in_the_log_the_topics_or_the_process_logs(
    api: Api,
    eventlog: PostgresEventLog,
    kafka_bootstrap: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    plan = await awaiting_approval(eventlog)
    good = await api.token("alice", ["release-manager", "operator"])
    revoked = await api.token("eve", ["admin"])
    expired = await api.token("old", ["admin"], expires_in=timedelta(seconds=-1))
    bogus = "shiplog_" + uuid.uuid4().hex
    await api.tokens.revoke((await api.tokens.list())[1].token_id)
    async with api.client(good) as client:
        assert (await client.post(f"/deployments/{plan.deployment_id}/approve", json={})).status_code == 202
        assert (await client.post(f"/deployments/{plan.deployment_id}/pause", json={})).status_code == 202
    for token in (revoked, expired, bogus):
        async with api.client(token) as client:
            assert (await client.post(f"/deployments/{plan.deployment_id}/abort", json={})).status_code == 401
    records = await drain(kafka_bootstrap, [topic_name(t, topic_prefix) for t in ALL_TOPICS])
    values = [r.value for r in records] + [
        json.dumps([(k, v.decode()) for k, v in r.headers]) for r in records
    ]
    assert len(records) >= 2
    secrets: list[str | bytes] = [good, revoked, expired, bogus, KEY, KEY.hex()]
    assert not leaks(secrets, await log_bodies(eventlog), values, caplog.text)
    async with eventlog.pool.acquire() as conn:
        rows = [dict(r) for r in await conn.fetch("SELECT * FROM tokens")]
    assert not leaks(secrets, [repr(r) for r in rows])
    assert len(await api.refusals()) == 3
