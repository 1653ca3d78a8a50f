"""The process runner: wires the log, the relay and the consumers, runs them until
told to stop, and — for ``shiplog dev`` — owns the embedded broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from faststream.kafka import KafkaBroker

from adapters.eventlog import PostgresEventLog
from adapters.eventlog.lanes import PostgresLanes
from adapters.eventlog.timers import PostgresTimerStore
from consumers.contract import Ports
from consumers.notification import NOTIFICATION, Courier
from consumers.planning.loader import load_pipelines
from consumers.planning.watch import PipelineWatcher
from consumers.recorder import RECORDER
from consumers.shell import ConsumerShell, LocalDispatch
from consumers.timers import TimerScheduler
from events.errors import InvalidInput
from producers.kafka import create_topics
from producers.relay import OutboxRelay
from shiplog.components import ALL, API, CONSUMERS, RELAY, subscriptions
from shiplog.embedded import EmbeddedBroker, EmbeddedPostgres
from shiplog.identity import authenticator, command_key, ensure_dev_token, operator_roles, verifying_keys
from shiplog.settings import LOCK_FILE, Settings, read_runtime
from shiplog.status import deployment_status
from shiplog.targets import TargetPool

log = logging.getLogger(__name__)


#: the span exporters ``OTEL_TRACES_EXPORTER`` may name
TRACE_EXPORTERS = ("otlp", "console", "none")


def trace_exporters(env: Mapping[str, str]) -> list[str]:
    """Which span exporters the standard OpenTelemetry variables ask for.

    ``OTEL_TRACES_EXPORTER`` (a comma-separated list) decides when set; unset, an
    OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``) means
    OTLP, and nothing means no export at all. An unknown exporter or a protocol
    other than HTTP/protobuf is refused rather than silently not exported."""
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if unknown := [n for n in named if n not in TRACE_EXPORTERS]:
        raise InvalidInput(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; shiplog knows {', '.join(TRACE_EXPORTERS)}"
        )
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not named and endpoint:
        named = ["otlp"]
    if "none" in named:
        return []
    exporters = list(dict.fromkeys(named))
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if "otlp" in exporters and protocol not in (None, "", "http/protobuf"):
        raise InvalidInput(f"OTLP protocol {protocol!r} is not supported; shiplog exports http/protobuf")
    return exporters


def setup_tracing(components: Sequence[str]) -> None:
    """A real OpenTelemetry SDK provider, so consumers' spans join the trace their
    message's ``traceparent`` names. Where spans go is what the standard variables
    say (``trace_exporters``): OTLP over HTTP/protobuf, batched, configured by the
    exporter's own ``OTEL_EXPORTER_OTLP_*`` variables; the console; or nowhere.
    Left alone if the process already has an SDK provider (a test's, an embedder's)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporters = trace_exporters(os.environ)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shiplog", "shiplog.components": ",".join(components)})
    )
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in exporters:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def workdir_for(config: Path) -> Path:
    """Service commands run in the pipelines directory, so a pipeline names its
    scripts relative to itself."""
    return config.resolve()


def make_broker(bootstrap: str) -> KafkaBroker:
    from faststream.kafka import KafkaBroker

    # Per-message "Received/Processed" lines at DEBUG: the log is the record of work.
    # No dependency injection: every shell's handler takes the message as it comes
    # (consumers/shell.py); FastDepends would cost a resolution and a worker-thread
    # hop per message, on every message of every subscribed topic.
    return KafkaBroker(
        bootstrap,
        enable_idempotence=False,
        client_id=f"shiplog-{os.getpid()}",
        log_level=logging.DEBUG,
        apply_types=False,
    )


@dataclass
class Running:
    """What a runner has up: handles for /metrics, banners and tests."""

    log: PostgresEventLog
    relay: OutboxRelay | None = None
    shells: list[ConsumerShell] = field(default_factory=list)
    ports: Ports | None = None
    #: where the command API listens, when it runs here
    api_url: str | None = None
    #: the dashboard's address (served by the API's HTTP server)
    dashboard_url: str | None = None
    #: the admin token `shiplog dev` keeps for the person running it
    dev_token_file: Path | None = None


async def run_components(
    settings: Settings,
    components: Sequence[str],
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Running], None] | None = None,
    stop_targets: bool = False,
    dev_token: bool = False,
) -> None:
    """Migrate, create topics, start the named components, wait for ``stop``.
    ``dev_token``: issue (once) the admin API token `shiplog dev` keeps under home."""
    unknown = [c for c in components if c not in ALL]
    if unknown:
        raise InvalidInput(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(ALL)}")
    assert settings.kafka_bootstrap_servers and settings.database_url
    setup_tracing(components)
    bootstrap = settings.kafka_bootstrap_servers
    # Only planning and the release coordinator read the config; a bad file stops them
    # (and `dev`) with every error, before anything is connected.
    pipelines = {}
    if {"planning", "releases"} & set(components) and settings.config.exists():
        pipelines = load_pipelines(settings.config)
    # likewise a bad notifications.yaml stops the notification consumer
    notifier = Courier.from_dir(settings.config) if NOTIFICATION.name in components else None
    # The API's port first: a taken one stops everything before anything starts.
    api_socket = bind_api(settings.api_host, settings.api_port) if API in components else None
    # Commands are signed by the API and verified by every consumer with this key.
    keys = verifying_keys(settings) if API in components or set(CONSUMERS) & set(components) else {}
    try:
        eventlog = await PostgresEventLog.connect(settings.database_url, schema=settings.log_schema)
    except BaseException:
        if api_socket is not None:
            api_socket.close()
        raise
    await create_topics(
        bootstrap, settings.topic_prefix, settings.topic_replication, settings.topic_partitions
    )
    running = Running(eventlog)
    tasks: list[asyncio.Task[Any]] = []
    #: stopped first, in reverse order, before the tasks are cancelled
    stoppers: list[Callable[[], Awaitable[None]]] = []
    # One broker client per consumer: FastStream starts a broker's subscribers one
    # after another, each waiting out its group's join, so separate brokers started
    # together come up in the time of one.
    brokers: list[KafkaBroker] = []
    ports = Ports(log=eventlog, lanes=PostgresLanes(eventlog))
    ports.targets = TargetPool(settings.home, workdir=workdir_for(settings.config))
    ports.pipelines = pipelines
    ports.config_dir = settings.config
    ports.notifier = notifier
    running.ports = ports
    scheduler: TimerScheduler | None = None
    watcher: PipelineWatcher | None = None
    if "planning" in components and settings.config.exists():

        async def pending(service: str) -> list[Any]:
            return (await deployment_status(eventlog, service)).pending_approvals()

        watcher = PipelineWatcher(settings.config, pipelines, eventlog, pending)
        tasks.append(asyncio.create_task(watcher.run(), name="pipelines"))
    if "timers" in components:
        ports.timers = PostgresTimerStore(eventlog)
        scheduler = TimerScheduler(eventlog, ports.timers)
        ports.wake = scheduler.wake
        tasks.append(asyncio.create_task(scheduler.run(), name="timers"))
    try:
        if RELAY in components:
            running.relay = OutboxRelay(
                eventlog,
                bootstrap,
                topic_prefix=settings.topic_prefix,
                subscriptions=subscriptions(),
            )
            tasks.append(asyncio.create_task(running.relay.run_forever(), name="relay"))
        # With every consumer in this process, each hears what the others append at
        # once (LocalDispatch), and the recorder hands on what comes from outside
        # (builds, commands): only it needs to poll Kafka quickly; for the rest Kafka
        # is the durable path, and a long fetch wait spares the broker and this
        # process hundreds of idle fetches a second.
        fed_locally = settings.local_dispatch and set(CONSUMERS) <= set(components)
        for name in components:
            if name in CONSUMERS:
                broker = make_broker(bootstrap)
                fetch_wait = settings.kafka_fetch_max_wait_ms
                if fed_locally and name != RECORDER.name:
                    fetch_wait = max(fetch_wait, FED_LOCALLY_FETCH_WAIT_MS)
                shell = ConsumerShell(
                    CONSUMERS[name],
                    eventlog,
                    broker,
                    settings.topic_prefix,
                    ports=ports,
                    fetch_max_wait_ms=fetch_wait,
                    session_timeout_ms=settings.kafka_session_timeout_ms,
                    command_keys=keys,
                )
                shell.subscribe()
                running.shells.append(shell)
                brokers.append(broker)
        if settings.local_dispatch and len(running.shells) > 1:
            dispatch = LocalDispatch(running.shells)
            for shell in running.shells:
                shell.on_appended = dispatch
                if fed_locally and shell.consumer.name == RECORDER.name:
                    shell.forward_received = dispatch
            if scheduler is not None:
                scheduler.on_appended = dispatch
            if watcher is not None:
                watcher.on_appended = dispatch
        await asyncio.gather(*(b.start() for b in brokers))
        if running.relay is not None:
            await _wait_ready(running.relay, next(t for t in tasks if t.get_name() == "relay"))
        if dev_token:
            running.dev_token_file = await ensure_dev_token(settings, eventlog)
        if api_socket is not None:
            hub, feed = await _start_dashboard(settings, eventlog)
            tasks.append(asyncio.create_task(feed.run(), name="dashboard"))
            api = await _start_api(settings, eventlog, api_socket, hub)
            api_socket = None  # the server owns it now
            stoppers.append(api.stop)
            # stopped before the server: an open event stream would hold it
            stoppers.append(hub.close)
            running.api_url = api.url
            running.dashboard_url = f"{api.url}/ui/"
            tasks.append(api.task)
        from shiplog.metrics import serve

        if (refresher := serve(running, settings.metrics_port)) is not None:
            tasks.append(refresher)
        if on_ready is not None:
            on_ready(running)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter:
                task.result()  # a component died: surface why
    finally:
        for stopper in reversed(stoppers):
            with contextlib.suppress(Exception):
                await stopper()
        if api_socket is not None:
            api_socket.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(sh.flush_commits() for sh in running.shells), return_exceptions=True)
        await asyncio.gather(*(b.stop() for b in brokers), return_exceptions=True)
        await ports.targets.close(stop_processes=stop_targets)
        if notifier is not None:
            await notifier.close()
        await eventlog.close()


def bind_api(host: str, port: int) -> socket.socket:
    from producers.api.server import bind

    return bind(host, port)


@dataclass
class _RunningApi:
    url: str
    task: asyncio.Task[None]
    stop: Callable[[], Awaitable[None]]


async def _start_dashboard(settings: Settings, eventlog: PostgresEventLog) -> tuple[Any, Any]:
    """The dashboard's hub, loaded from the log, and its subscription of the topics
    (positioned first, so nothing falls between the log and the topics)."""
    from consumers.dashboard import DashboardFeed, Hub

    assert settings.kafka_bootstrap_servers
    hub = Hub()
    feed = DashboardFeed(
        hub, settings.kafka_bootstrap_servers, settings.topic_prefix, settings.kafka_fetch_max_wait_ms
    )
    await feed.start()
    await hub.load(eventlog)
    return hub, feed


async def _start_api(
    settings: Settings, eventlog: PostgresEventLog, sock: socket.socket, hub: Any = None
) -> _RunningApi:
    """The command API on ``sock``: authenticated, signing, publishing to Kafka; and
    the dashboard, fed by ``hub``, in the same HTTP server."""
    from producers.api import ApiDeps, Signer, create_app
    from producers.api.publisher import CommandPublisher
    from producers.api.server import ApiServer

    assert settings.kafka_bootstrap_servers
    publisher = CommandPublisher(settings.kafka_bootstrap_servers, settings.topic_prefix)
    key_id, key = command_key(settings)
    app = create_app(
        ApiDeps(
            log=eventlog,
            authenticator=authenticator(settings, eventlog),
            publish=publisher,
            signer=Signer(key_id, key),
            trust_proxy=settings.api_trust_proxy,
            operator_roles=operator_roles(settings),
        )
    )
    if hub is not None:
        from consumers.dashboard import mount

        mount(app, hub)
    await publisher.start()
    server = ApiServer(app, sock)
    try:
        task = await server.start()
    except BaseException:
        await publisher.stop()
        raise

    async def stop() -> None:
        await server.stop()
        await publisher.stop()

    return _RunningApi(server.url, task, stop)


async def _wait_ready(relay: OutboxRelay, task: asyncio.Task[Any]) -> None:
    ready = asyncio.create_task(relay.ready.wait())
    await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()


def run_until_signal(coro_factory: Callable[[asyncio.Event], Any]) -> None:
    """Run ``coro_factory(stop)`` until SIGINT or SIGTERM sets ``stop``."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    asyncio.run(main())


#: fetch wait against the embedded broker: lower is faster per hop, costlier in CPU
EMBEDDED_FETCH_WAIT_MS = 25
#: the group session timeout against the embedded broker: the least Kafka accepts
EMBEDDED_SESSION_TIMEOUT_MS = 6_000
#: fetch wait of consumers that hear their events in-process first (see run_components)
FED_LOCALLY_FETCH_WAIT_MS = 500


class AlreadyRunning(InvalidInput):
    pass


@dataclass
class DevEnvironment:
    """The state directory of ``shiplog dev``: a lock, a runtime file, and the
    embedded servers it started."""

    settings: Settings
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    _lock: IO[str] | None = None

    def __enter__(self) -> Settings:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        self._lock = open(home / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            runtime = read_runtime(home) or {}
            self._lock.close()
            raise AlreadyRunning(
                f"shiplog dev is already running under {home} (pid {runtime.get('pid', '?')}; "
                f"kafka {runtime.get('kafka', '?')}; database {runtime.get('database', '?')}). "
                "Use it, stop it, or give this one another SHIPLOG_HOME."
            ) from None
        try:
            settings = self.settings
            if not settings.kafka_bootstrap_servers:
                self.broker = EmbeddedBroker.start(log_file=home / "broker.log")
                settings = settings.model_copy(
                    update={
                        "kafka_bootstrap_servers": self.broker.bootstrap,
                        # the embedded broker holds an idle fetch for its full wait
                        "kafka_fetch_max_wait_ms": min(
                            settings.kafka_fetch_max_wait_ms, EMBEDDED_FETCH_WAIT_MS
                        ),
                        # and a new group member's join for half the session timeout
                        "kafka_session_timeout_ms": EMBEDDED_SESSION_TIMEOUT_MS,
                        # one process reads every topic; each partition costs every
                        # idle fetch work at the broker
                        "topic_partitions": settings.topic_partitions or 1,
                    }
                )
            if not settings.database_url:
                self.postgres = EmbeddedPostgres.start(home / "pgdata")
                settings = settings.model_copy(update={"database_url": self.postgres.dsn})
            settings.runtime_file.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "kafka": settings.kafka_bootstrap_servers,
                        "database": settings.database_url,
                        "log_schema": settings.log_schema,
                        "topic_prefix": settings.topic_prefix,
                        "embedded_kafka": self.broker is not None,
                        "embedded_database": self.postgres is not None,
                        "started_at": datetime.now(UTC).isoformat(),
                    },
                    indent=2,
                )
            )
            return settings
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def record(self, **values: object) -> None:
        """Add to the runtime file what is known only once running (the API's address,
        where the admin token is), replacing it atomically for readers."""
        path = self.settings.runtime_file
        runtime = json.loads(path.read_text())
        runtime.update({k: v for k, v in values.items() if v is not None})
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(runtime, indent=2))
        os.replace(tmp, path)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.settings.runtime_file.unlink()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._lock is not None and not self._lock.closed:
            self._lock.close()
