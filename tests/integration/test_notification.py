"""The notification consumer against real receivers (aiohttp, aiosmtpd), the real log
and the real broker: delivered, retried, recorded once — and no secret anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from adapters.eventlog import PostgresEventLog
from adapters.notify import KINDS, Credentials, Message, Notifier, create_notifier
from consumers.contract import Ports
from consumers.notification import NOTIFICATION, Courier
from consumers.notification.config import NOTIFICATIONS_FILE
from consumers.notification.core import notification_id
from consumers.shell import ConsumerShell
from events.approval import ApprovalRequested
from events.deployment import (
    DeploymentFailed,
    DeploymentPlanned,
    DeploymentStarted,
    StrategyPlan,
    TargetRef,
    deployment_stream,
)
from events.envelope import CloudEvent
from events.errors import AdapterRejected, AdapterUnavailable
from events.registry import new_event
from events.topics import ALL_TOPICS, APPROVALS, NOTIFICATIONS, topic_name
from producers.relay import OutboxRelay
from shiplog.runner import make_broker
from tests.busutil import consume, eventually, produce, running_shell, unique

# aiosmtpd warns about AUTH without TLS: these servers exist only for the test
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SENT = "shiplog.notification.sent.v1"
FAILED = "shiplog.notification.failed.v1"


# --- receivers ------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A local HTTP receiver: checks the webhook signature when it knows the secret
    (401 if it does not verify), then answers with the next status of ``script``,
    and ``then`` once the script is used up."""

    secret: str | None = None
    script: list[int] = field(default_factory=list)
    then: int = 200
    delay: float = 0.0
    on_request: Callable[[], Awaitable[None]] | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/shiplog"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.script.pop(0) if self.script else self.then
        if self.secret is not None:
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, request.headers.get("X-Shiplog-Signature-256", "")):
                status = 401
        self.received.append(Received(request.path_qs, dict(request.headers), body, status))
        if self.on_request is not None:
            await self.on_request()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status < 300]


@contextlib.asynccontextmanager
async def serving(*receivers: Receiver) -> AsyncIterator[None]:
    runners = []
    try:
        for receiver in receivers:
            app = web.Application()
            app.router.add_post("/{tail:.*}", receiver._handle)
            runner = web.AppRunner(app, access_log=None)  # the receiver's log is not ours to scan
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            receiver.port = runner.addresses[0][1]
            runners.append(runner)
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


class Mailbox:
    """aiosmtpd's handler: keeps every message; refuses recipients on ``refuse``."""

    def __init__(self, refuse: str | None = None, busy: bool = False):
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse = refuse
        self.busy = busy

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.busy:
            return "451 4.3.0 try again later"
        if address == self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(
            (
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, _class=EmailMessage, policy=policy.default),
            )
        )
        return "250 2.0.0 accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, login: tuple[str, str] | None = None) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            login is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == login
        )
        return AuthResult(success=ok)

    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,
        auth_required=login is not None,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


# --- the deployment and the consumer ----------------------------------------------------


def deployment(service: str = "checkout", environment: str = "production") -> tuple[str, CloudEvent]:
    dep = f"{service}.{environment}.{uuid.uuid4().hex[:8]}"
    plan = new_event(
        DeploymentPlanned(
            deployment_id=dep,
            release_id="r1",
            service=service,
            version="1.4.2",
            artifact=f"registry.example.com/{service}:1.4.2",
            environment=environment,
            stage=0,
            strategy=StrategyPlan(type="rolling", reason="test", steps=[]),
            target=TargetRef(type="local"),
            plan_hash="h1",
        ),
        source="shiplog/planning",
        subject=dep,
        correlationid="r1",
    )
    return dep, plan


def approval_requested(dep: str, plan: CloudEvent) -> CloudEvent:
    data = plan.data
    return new_event(
        ApprovalRequested(
            deployment_id=dep,
            service=data["service"],
            environment=data["environment"],
            version=data["version"],
            level="release-managers",
            roles=["release-manager"],
            quorum=2,
            plan_hash="h1",
            expires_at=datetime.now(UTC) + timedelta(hours=4),
        ),
        source="shiplog/approval",
        subject=dep,
        correlationid="r1",
        causationid=plan.id,
    )


async def record(log: PostgresEventLog, *events: CloudEvent) -> None:
    stream = deployment_stream(events[0].subject)
    version = await log.stream_version(stream)
    await log.append(stream, list(events), version)


async def notifications(log: PostgresEventLog, dep: str) -> list[CloudEvent]:
    return [r.event for r in await log.read_stream(deployment_stream(dep)) if r.event.type in (SENT, FAILED)]


def courier(config_dir: Path, yaml_text: str) -> Courier:
    (config_dir / NOTIFICATIONS_FILE).write_text(yaml_text)
    return Courier.from_dir(config_dir)


def shell(log: PostgresEventLog, notifier: Courier, name: str | None = None) -> ConsumerShell:
    """A shell whose ``handle`` is called directly (its broker is never started)."""
    consumer = unique(NOTIFICATION) if name is None else replace(NOTIFICATION, name=name)
    return ConsumerShell(consumer, log, make_broker("127.0.0.1:9"), ports=Ports(log=log, notifier=notifier))


FAST = "delivery: {attempts: 4, backoff_initial_s: 0.01, backoff_cap_s: 0.05, timeout_s: 5}\n"


def webhook_config(
    *receivers: tuple[str, Receiver], secret_env: str = "T_HOOK_SECRET", routes: str = ""
) -> str:
    channels = "".join(
        f"  - {{name: {name}, kind: webhook, url: '{r.url}', "
        f"signing_secret: {{secret: {{env: {secret_env}}}}}}}\n"
        for name, r in receivers
    )
    routes = routes or f"  - channels: [{', '.join(name for name, _ in receivers)}]\n"
    return f"{FAST}channels:\n{channels}routes:\n{routes}"


@contextlib.asynccontextmanager
async def relay(log: PostgresEventLog, bootstrap: str, prefix: str) -> AsyncIterator[OutboxRelay]:
    outbox = OutboxRelay(log, bootstrap, topic_prefix=prefix)
    task = asyncio.create_task(outbox.run())
    try:
        await eventually(lambda: outbox.ready.is_set() or task.done(), what="the relay")
        if task.done():
            task.result()
        yield outbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"whsec-{uuid.uuid4().hex}"
    monkeypatch.setenv("T_HOOK_SECRET", value)
    return value


# --- the notifiers' contract, one suite for every kind -------------------------------------

MESSAGE = Message(
    id=str(uuid.uuid4()),
    event_type="shiplog.deployment.failed.v1",
    title="Failed: checkout 1.4.2 to production",
    text="boom",
    facts=(("Service", "checkout"),),
    body={"title": "Failed"},
)
ANSWERS = {"ok": 200, "busy": 503, "refuse": 404}


@contextlib.asynccontextmanager
async def notifier_for(kind: str, answer: str) -> AsyncIterator[Notifier]:
    """A notifier of ``kind`` facing a real server that answers ``answer`` (ok, busy,
    refuse) or, for ``nobody``, a port where nothing listens."""
    if kind == "email":
        mailbox = Mailbox(refuse="rm@example.com" if answer == "refuse" else None, busy=answer == "busy")
        with smtp_server(mailbox) as server:
            settings = {
                "host": "127.0.0.1",
                "port": free_port() if answer == "nobody" else server.port,
                "starttls": False,
                "sender": "shiplog@example.com",
                "recipients": ["rm@example.com"],
                "timeout_s": 2,
            }
            yield create_notifier(kind, settings, Credentials())
        return
    receiver = Receiver(then=ANSWERS.get(answer, 200))
    async with serving(receiver), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{free_port()}/x" if answer == "nobody" else receiver.url
        yield create_notifier(kind, {"url": url, "timeout_s": 2}, Credentials(SecretStr("k")), http=http)


CONTRACT = [
    pytest.param(kind, answer, error, id=f"{kind}-{answer}")
    for kind in KINDS
    for answer, error in (
        ("ok", None),
        ("busy", AdapterUnavailable),
        ("refuse", AdapterRejected),
        ("nobody", AdapterUnavailable),
    )
]


@pytest.mark.parametrize(("kind", "answer", "error"), CONTRACT)
async def test_every_notifier_keeps_the_same_contract(
    kind: str, answer: str, error: type[Exception] | None
) -> None:
    """Delivered: the receiver's answer in short. Worth another try (busy, nobody
    there): AdapterUnavailable. Final (refused): AdapterRejected."""
    async with notifier_for(kind, answer) as notifier:
        if error is None:
            assert await notifier.post(MESSAGE)
        else:
            with pytest.raises(error):
                await notifier.post(MESSAGE)


# --- through Kafka ------------------------------------------------------------------------


async def test_a_pending_approval_reaches_a_signed_webhook_once_and_is_recorded(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, secret: str
) -> None:
    hook = Receiver(secret=secret)
    async with serving(hook):
        notifier = courier(tmp_path, webhook_config(("ops", hook)))
        ports = Ports(log=eventlog, notifier=notifier)
        async with (
            running_shell(unique(NOTIFICATION), eventlog, kafka_bootstrap, topic_prefix, ports=ports) as sh,
            relay(eventlog, kafka_bootstrap, topic_prefix),
        ):
            dep, plan = deployment()
            request = approval_requested(dep, plan)
            await record(eventlog, plan, request)
            [sent] = await eventually(lambda: notifications(eventlog, dep), what="the notification")
            # Kafka delivers the request again: a duplicate, nothing sent, nothing recorded
            await produce(
                kafka_bootstrap, topic_name(APPROVALS, topic_prefix), request.to_bytes(), key=dep.encode()
            )
            await eventually(lambda: sh.stats["duplicates"] >= 1, what="the redelivery")
            [published] = await consume(
                kafka_bootstrap, topic_name(NOTIFICATIONS, topic_prefix), 1, settle=0.5
            )
        await notifier.close()
    [received] = hook.received
    assert received.status == 200  # the signature verified
    assert received.headers["X-Shiplog-Delivery"] == sent.id == notification_id(request.id, "ops")
    assert received.headers["X-Shiplog-Event"] == "shiplog.approval.requested.v2"
    assert received.headers["Content-Type"] == "application/json"
    body = received.json
    assert body["event"]["id"] == request.id
    assert body["title"] == "Approval needed: checkout 1.4.2 to production"
    assert body["deployment"]["environment"] == "production"
    assert sent.type == SENT and sent.causationid == request.id and sent.correlationid == "r1"
    assert sent.data | {"about": request.id, "channel": "ops", "kind": "webhook", "attempts": 1} == sent.data
    assert sent.data["response"] == "HTTP 200"
    assert await notifications(eventlog, dep) == [sent]
    assert json.loads(published.value)["id"] == sent.id


async def test_a_receiver_failing_twice_then_succeeding_gets_the_notice_once_recorded_with_three_attempts(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, secret: str
) -> None:
    hook = Receiver(secret=secret, script=[500, 500])
    async with serving(hook):
        notifier = courier(tmp_path, webhook_config(("ops", hook)))
        ports = Ports(log=eventlog, notifier=notifier)
        async with (
            running_shell(unique(NOTIFICATION), eventlog, kafka_bootstrap, topic_prefix, ports=ports),
            relay(eventlog, kafka_bootstrap, topic_prefix),
        ):
            dep, plan = deployment()
            request = approval_requested(dep, plan)
            await record(eventlog, plan, request)
            [sent] = await eventually(lambda: notifications(eventlog, dep), what="the notification")
            await asyncio.sleep(0.5)  # nothing else arrives
        await notifier.close()
    assert [r.status for r in hook.received] == [500, 500, 200]
    assert len(hook.accepted) == 1
    assert {r.headers["X-Shiplog-Delivery"] for r in hook.received} == {sent.id}
    assert sent.type == SENT and sent.data["attempts"] == 3
    assert await notifications(eventlog, dep) == [sent]


async def test_a_receiver_that_always_fails_is_recorded_as_failed_and_the_consumer_goes_on(
    eventlog: PostgresEventLog, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, secret: str
) -> None:
    down = Receiver(secret=secret, then=503)
    gone = Receiver(secret=secret, then=404)
    async with serving(down, gone):
        notifier = courier(tmp_path, webhook_config(("down", down), ("gone", gone)))
        ports = Ports(log=eventlog, notifier=notifier)
        async with (
            running_shell(unique(NOTIFICATION), eventlog, kafka_bootstrap, topic_prefix, ports=ports) as sh,
            relay(eventlog, kafka_bootstrap, topic_prefix),
        ):
            dep, plan = deployment()
            await record(eventlog, plan, approval_requested(dep, plan))
            await eventually(lambda: _count(eventlog, dep, 2), what="both failures")
            # the next event is handled as usual
            failed = new_event(DeploymentFailed(deployment_id=dep, reason="boom"), source="t", subject=dep)
            await record(eventlog, failed)
            await eventually(lambda: _count(eventlog, dep, 4), what="the next event's notices")
        await notifier.close()
    assert sh.stats["deadlettered"] == 0
    records = await notifications(eventlog, dep)
    assert {e.type for e in records} == {FAILED}
    by_channel = {(e.data["about_type"], e.data["channel"]): e.data for e in records}
    request_type = "shiplog.approval.requested.v2"
    assert by_channel[(request_type, "down")]["attempts"] == 4
    assert "HTTP 503" in by_channel[(request_type, "down")]["error"]
    assert by_channel[(request_type, "gone")]["attempts"] == 1  # a 404 is final
    assert "HTTP 404" in by_channel[(request_type, "gone")]["error"]
    assert len(down.received) == 8 and len(gone.received) == 2


async def _count(log: PostgresEventLog, dep: str, n: int) -> bool:
    return len(await notifications(log, dep)) >= n


# --- the shell's handle, called directly ---------------------------------------------------


async def test_slack_gets_text_and_blocks(eventlog: PostgresEventLog, tmp_path: Path) -> None:
    slack = Receiver()
    async with serving(slack):
        notifier = courier(
            tmp_path,
            f"{FAST}channels:\n  - {{name: s, kind: slack, url: '{slack.url}'}}\n"
            "routes:\n  - channels: [s]\n",
        )
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        await shell(eventlog, notifier).handle(request)
        await notifier.close()
    [received] = slack.received
    payload = received.json
    assert payload["text"].startswith("Approval needed: checkout 1.4.2 to production")
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "section", "context"]
    assert payload["blocks"][0]["text"]["text"] == "Approval needed: checkout 1.4.2 to production"
    assert "*Environment*\nproduction" in [f["text"] for f in payload["blocks"][2]["fields"]]
    [sent] = await notifications(eventlog, dep)
    assert sent.data["kind"] == "slack" and sent.data["response"] == "HTTP 200 ok"


async def test_email_goes_through_a_real_smtp_server_with_a_login(
    eventlog: PostgresEventLog, tmp_path: Path
) -> None:
    password = f"smtp-{uuid.uuid4().hex}"
    (tmp_path / "smtp-password").write_text(password + "\n")
    mailbox = Mailbox()
    with smtp_server(mailbox, login=("shiplog", password)) as server:
        notifier = courier(
            tmp_path,
            f"{FAST}channels:\n"
            f"  - name: managers\n    kind: email\n    host: 127.0.0.1\n    port: {server.port}\n"
            "    starttls: false\n    from: shiplog@example.com\n"
            "    to: [rm@example.com, lead@example.com]\n"
            "    username: shiplog\n    password: {secret: {file: smtp-password}}\n"
            "routes:\n  - channels: [managers]\n",
        )
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        await shell(eventlog, notifier).handle(request)
        await notifier.close()
    [(sender, recipients, mail)] = mailbox.messages
    assert sender == "shiplog@example.com" and recipients == ["rm@example.com", "lead@example.com"]
    assert mail["Subject"] == "[shiplog] Approval needed: checkout 1.4.2 to production"
    assert mail["X-Shiplog-Delivery"] == notification_id(request.id, "managers")
    assert mail.get_content_type() == "text/plain"
    text = mail.get_content()
    assert "2 approvals needed at level 'release-managers'" in text
    assert f"shiplog approve {dep}" in text
    [sent] = await notifications(eventlog, dep)
    assert sent.type == SENT and sent.data["kind"] == "email" and "accepted" in sent.data["response"]


async def test_a_refused_recipient_is_a_final_failure(eventlog: PostgresEventLog, tmp_path: Path) -> None:
    mailbox = Mailbox(refuse="nobody@example.com")
    with smtp_server(mailbox) as server:
        notifier = courier(
            tmp_path,
            f"{FAST}channels:\n  - {{name: m, kind: email, host: 127.0.0.1, port: {server.port}, "
            "starttls: false, from: shiplog@example.com, to: [nobody@example.com]}\n"
            "routes:\n  - channels: [m]\n",
        )
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        await shell(eventlog, notifier).handle(request)
        await notifier.close()
    assert mailbox.messages == []
    [failed] = await notifications(eventlog, dep)
    assert failed.type == FAILED and failed.data["attempts"] == 1
    assert "550" in failed.data["error"]


async def test_a_receiver_too_slow_to_answer_is_tried_again_then_given_up(
    eventlog: PostgresEventLog, tmp_path: Path, secret: str
) -> None:
    slow = Receiver(secret=secret, delay=2.0)
    async with serving(slow):
        config = (
            webhook_config(("slow", slow))
            .replace("attempts: 4", "attempts: 2")
            .replace("timeout_s: 5", "timeout_s: 0.2")
        )
        notifier = courier(tmp_path, config)
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        await shell(eventlog, notifier).handle(request)
        await notifier.close()
    assert len(slow.received) == 2
    [failed] = await notifications(eventlog, dep)
    assert failed.type == FAILED and failed.data["attempts"] == 2
    assert "did not answer within 0.2s" in failed.data["error"]


async def test_routes_send_each_event_only_where_they_say(
    eventlog: PostgresEventLog, tmp_path: Path, secret: str
) -> None:
    approvers = Receiver(secret=secret)
    payments = Receiver(secret=secret)
    async with serving(approvers, payments):
        notifier = courier(
            tmp_path,
            webhook_config(
                ("approvers", approvers),
                ("payments", payments),
                routes="  - {channels: [approvers], events: [approval.requested], environments: [prod*]}\n"
                "  - {channels: [payments], services: [payments]}\n",
            ),
        )
        sh = shell(eventlog, notifier)
        handled = []
        for service, environment in (
            ("checkout", "production"),
            ("checkout", "staging"),
            ("payments", "staging"),
        ):
            dep, plan = deployment(service, environment)
            request = approval_requested(dep, plan)
            failed = new_event(DeploymentFailed(deployment_id=dep, reason="boom"), source="t", subject=dep)
            await record(eventlog, plan, request, failed)
            await sh.handle(request)
            await sh.handle(failed)
            handled.append((dep, request, failed))
        await notifier.close()
    (prod, prod_request, _), (staging, _, _), (_, pay_request, pay_failed) = handled
    assert [r.json["event"]["id"] for r in approvers.received] == [prod_request.id]
    assert [r.json["event"]["id"] for r in payments.received] == [pay_request.id, pay_failed.id]
    assert await notifications(eventlog, staging) == []
    assert [e.data["channel"] for e in await notifications(eventlog, prod)] == ["approvers"]


async def test_a_redelivered_event_does_not_resend_what_the_log_records(
    eventlog: PostgresEventLog, tmp_path: Path, secret: str
) -> None:
    hook = Receiver(secret=secret)
    async with serving(hook):
        config = webhook_config(("ops", hook))
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        first = shell(eventlog, courier(tmp_path, config))
        await first.handle(request)
        # after a restart (a new courier that remembers nothing): the handled record
        again = shell(eventlog, courier(tmp_path, config), name=first.consumer.name)
        await again.handle(request)
        assert again.stats["duplicates"] == 1
        # a consumer without that handled record: the stream says it was sent
        other = shell(eventlog, courier(tmp_path, config))
        await other.handle(request)
    assert len(hook.received) == 1
    assert len(await notifications(eventlog, dep)) == 1


async def test_the_same_event_handled_twice_at_once_is_delivered_once(
    eventlog: PostgresEventLog, tmp_path: Path, secret: str
) -> None:
    """The in-process fast path and Kafka may bring one event at the same moment."""
    hook = Receiver(secret=secret, delay=0.3)
    async with serving(hook):
        notifier = courier(tmp_path, webhook_config(("ops", hook)))
        dep, plan = deployment()
        request = approval_requested(dep, plan)
        await record(eventlog, plan, request)
        sh = shell(eventlog, notifier)
        await asyncio.gather(sh.handle(request, fresh=True), sh.handle(request))
        await notifier.close()
    assert len(hook.received) == 1
    assert len(await notifications(eventlog, dep)) == 1


async def test_a_conflicting_append_during_delivery_does_not_resend(
    eventlog: PostgresEventLog, tmp_path: Path, secret: str
) -> None:
    """Another consumer appends to the deployment's stream while the notice is on its
    way: the shell reloads and decides again, and the courier answers from memory."""
    dep, plan = deployment()
    request = approval_requested(dep, plan)
    started = new_event(DeploymentStarted(deployment_id=dep), source="shiplog/execution", subject=dep)

    async def meanwhile() -> None:
        if await eventlog.stream_version(deployment_stream(dep)) == 2:
            await record(eventlog, started)

    hook = Receiver(secret=secret, on_request=meanwhile)
    async with serving(hook):
        notifier = courier(tmp_path, webhook_config(("ops", hook)))
        await record(eventlog, plan, request)
        await shell(eventlog, notifier).handle(request)
        await notifier.close()
    assert len(hook.received) == 1
    stream = [r.event.type for r in await eventlog.read_stream(deployment_stream(dep))]
    assert stream == [plan.type, request.type, started.type, SENT]


# --- secrets ----------------------------------------------------------------------------------


async def test_no_secret_reaches_the_log_the_topics_or_the_process_logs(
    eventlog: PostgresEventLog,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = f"smtp-{uuid.uuid4().hex}"
    (tmp_path / "smtp-password").write_text(password)
    slack_token = f"xoxb-{uuid.uuid4().hex}"
    hook = Receiver(secret=secret)
    slack = Receiver()
    broken = Receiver(then=500)
    mailbox = Mailbox()
    with smtp_server(mailbox, login=("shiplog", password)) as server:
        async with serving(hook, slack, broken):
            # the Slack URL is itself a credential; so is the token in the broken hook's query
            monkeypatch.setenv("T_SLACK_URL", f"{slack.url}/{slack_token}")
            monkeypatch.setenv("T_BROKEN_URL", f"{broken.url}?token={slack_token}")
            notifier = courier(
                tmp_path,
                f"{FAST}channels:\n"
                f"  - {{name: hook, kind: webhook, url: '{hook.url}', "
                "signing_secret: {secret: {env: T_HOOK_SECRET}}}\n"
                "  - {name: slack, kind: slack, url: {secret: {env: T_SLACK_URL}}}\n"
                "  - {name: broken, kind: webhook, url: {secret: {env: T_BROKEN_URL}}, "
                "signing_secret: {secret: {env: T_HOOK_SECRET}}}\n"
                f"  - {{name: mail, kind: email, host: 127.0.0.1, port: {server.port}, starttls: false, "
                "from: shiplog@example.com, to: [rm@example.com], username: shiplog, "
                "password: {secret: {file: smtp-password}}}\n"
                "routes:\n  - channels: [hook, slack, broken, mail]\n",
            )
            ports = Ports(log=eventlog, notifier=notifier)
            async with (
                running_shell(unique(NOTIFICATION), eventlog, kafka_bootstrap, topic_prefix, ports=ports),
                relay(eventlog, kafka_bootstrap, topic_prefix),
            ):
                dep, plan = deployment()
                await record(eventlog, plan, approval_requested(dep, plan))
                await eventually(lambda: _count(eventlog, dep, 4), what="four notices")
                # every topic: the plan, the request and the four notices were published
                published = await consume_all(kafka_bootstrap, topic_prefix, 6)
            await notifier.close()
    # the credentials were used: the signature verified, Slack's URL and the login worked
    assert [r.status for r in hook.received] == [200]
    assert slack.received[0].path.endswith(slack_token)
    assert len(mailbox.messages) == 1
    records = {e.data["channel"]: e for e in await notifications(eventlog, dep)}
    assert {c for c, e in records.items() if e.type == SENT} == {"hook", "slack", "mail"}
    assert records["broken"].type == FAILED and "HTTP 500" in records["broken"].data["error"]

    async with eventlog.pool.acquire() as conn:
        bodies = [row["body"] for row in await conn.fetch("SELECT body FROM events")]
    topics = [r.value.decode() + repr(r.headers) + repr(r.key) for r in published]
    logs = caplog.text + "\n".join(repr(r.args) + str(r.msg) for r in caplog.records)
    for secret_value in (secret, password, slack_token):
        for where, texts in (("log", bodies), ("topics", topics), ("process logs", [logs])):
            leaks = [_around(text, secret_value) for text in texts if secret_value in text]
            assert not leaks, f"a secret leaked into the {where}: {leaks}"


async def consume_all(bootstrap: str, prefix: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        *(topic_name(t, prefix) for t in ALL_TOPICS),
        bootstrap_servers=bootstrap,
        group_id=f"probe-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _around(text: str, secret: str) -> str:
    at = text.index(secret)
    return text[max(0, at - 300) : at + len(secret) + 100].replace(secret, "<SECRET>")
