"""Helpers for the saga's end-to-end tests: shiplog components as real processes,
the CLI, the log read back, HTTP through an environment's endpoint, and a cleanup
that leaves no process behind.

Every process a test starts gets ``SHIPLOG_HOME`` under the test's ``tmp_path``;
the local target's instances inherit that environment and its proxies name their
state file (under that home) on their command line, so "every process whose
command line or environment mentions tmp_path" is exactly what the test started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.eventlog import PostgresEventLog
from events.deployment import deployment_id, deployment_stream
from producers.build import publish_build
from shiplog.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "deploy" / "examples" / "demo"
SAMPLE_SERVICE = ROOT / "deploy" / "examples" / "sample_service.py"
SHIPLOG = [sys.executable, "-m", "shiplog"]
SERVICE = "sample"
READY_BANNER = "shiplog is running"

TERMINAL = frozenset(
    {
        "shiplog.deployment.succeeded",
        "shiplog.deployment.failed",
        "shiplog.deployment.rolled_back",
        "shiplog.deployment.rejected",
        "shiplog.deployment.denied",
    }
)


# -- processes ------------------------------------------------------------------------


@dataclass
class Component:
    """One ``shiplog run ...`` process; its stderr is collected as it comes."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 60.0) -> None:
        self.output = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        proc, ready, output = self.proc, self._ready, self.output

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                output.append(line)
                if READY_BANNER in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True, name=f"pump-{self.name}").start()
        if not self.wait_ready(timeout):
            self.kill()
            raise AssertionError(f"{self.name} did not start:\n{self.log()}")

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
        return False

    async def start_async(self, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.start, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup runs in the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log(self) -> str:
        return "".join(self.output[-200:])


class Shiplog:
    """The environment every process of one test shares, and its processes."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        bootstrap: str,
        dsn: str,
        log_schema: str,
        topic_prefix: str,
        config: Path = DEMO_CONFIG,
        home: Path | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.home = home or tmp_path
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        api_port = free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SHIPLOG_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
        }
        self.env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            DATABASE_URL=dsn,
            SHIPLOG_LOG_SCHEMA=log_schema,
            SHIPLOG_TOPIC_PREFIX=topic_prefix,
            SHIPLOG_HOME=str(self.home),
            SHIPLOG_CONFIG=str(config),
            SHIPLOG_LOG_LEVEL="WARNING",
            # the command API, in whichever process runs the "api" component; the CLI
            # finds it here
            SHIPLOG_API_PORT=str(api_port),
            SHIPLOG_API_URL=f"http://127.0.0.1:{api_port}",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        )
        self.components: list[Component] = []
        #: API tokens issued in this test, by user
        self.tokens: dict[str, str] = {}

    def component(self, name: str, *components: str) -> Component:
        c = Component(name, [*SHIPLOG, "run", *components], dict(self.env))
        self.components.append(c)
        return c

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI; ``user``: with that user's token (see ``login``)."""
        env = self.env if user is None else {**self.env, "SHIPLOG_TOKEN": self.tokens[user]}
        result = subprocess.run(
            [*SHIPLOG, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"shiplog {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    async def acli(
        self, *args: str, check: bool = True, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(lambda: self.cli(*args, check=check, user=user))

    async def login(self, user: str, *roles: str) -> str:
        """Issue ``user`` an API token with ``roles`` (as an administrator does)."""
        created = await self.acli("token", "create", "--user", user, "--roles", ",".join(roles))
        self.tokens[user] = created.stdout.strip()
        return self.tokens[user]

    async def publish(self, version: str, service: str = SERVICE) -> str:
        """Publish build.completed like a CI job; returns the build event's id."""
        event = await publish_build(
            self.bootstrap, build(version, service), source="ci/e2e/sample", topic_prefix=self.topic_prefix
        )
        return event.id

    def state_dir(self) -> Path:
        return self.home / "targets" / "local"

    def target_record(self, environment: str, service: str = SERVICE) -> dict[str, Any]:
        """The local target's own durable record of (service, environment)."""
        return json.loads((self.state_dir() / f"{service}@{environment}.json").read_text())

    def stop_all(self) -> None:
        """SIGTERM every component, then kill whatever the test's processes left."""
        for c in self.components:
            with contextlib.suppress(Exception):
                c.terminate()
        kill_leftovers(self.tmp_path)

    def logs(self) -> str:
        return "\n".join(f"--- {c.name} ---\n{c.log()}" for c in self.components)


def _mentions(pid: int, needle: bytes) -> bool:
    for part in ("cmdline", "environ"):
        try:
            raw = Path(f"/proc/{pid}/{part}").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        # the path itself, or something inside it (not a sibling that shares its prefix)
        if needle + b"/" in raw or needle + b"\0" in raw:
            return True
    return False


def processes_under(path: Path) -> list[int]:
    """Every live process (not this one) whose command line or environment names ``path``."""
    needle = str(path).encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _mentions(int(entry.name), needle):
            found.append(int(entry.name))
    return found


def kill_leftovers(path: Path, rounds: int = 3) -> list[int]:
    killed: list[int] = []
    for _ in range(rounds):
        pids = processes_under(path)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.1)
    return killed


# -- builds -----------------------------------------------------------------------------


def build(version: str, service: str = SERVICE) -> dict[str, Any]:
    return {
        "service": service,
        "version": version,
        "artifact": f"registry.example.com/{service}:{version}",
        "digest": "sha256:" + (version.replace(".", "") * 64)[:64],
        "commit": "0" * 40,
        "branch": "main",
        "author": "bob",
        "pipeline": "default",
        "tests": {"passed": 120, "failed": 0, "coverage": 91.0},
        "security": {"critical": 0, "high": 0},
    }


def dep_stream(environment: str, build_id: str, service: str = SERVICE) -> str:
    return deployment_stream(deployment_id(service, environment, build_id))


# -- the log --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    position: int
    stream: str
    type: str
    data: dict[str, Any]
    subject: str
    actor: str | None


async def stream_events(log: PostgresEventLog, stream: str) -> list[Logged]:
    return [
        Logged(r.position, r.stream_id, r.event.type_name, r.event.data, r.event.subject, r.event.actor)
        for r in await log.read_stream(stream)
    ]


async def all_events(log: PostgresEventLog) -> list[Logged]:
    out = []
    async for raw in log.scan(after=0):
        body = log.upcast_body(raw.body)
        out.append(
            Logged(
                raw.position,
                raw.stream_id,
                body["type"].rsplit(".v", 1)[0],
                body.get("data", {}),
                body.get("subject", ""),
                body.get("actor"),
            )
        )
    return out


async def wait_for(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    what: str,
    every: float = 0.02,
    dump: Callable[[], str] | None = None,
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            extra = f"\n{dump()}" if dump else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        await asyncio.sleep(every)


async def wait_stream(
    log: PostgresEventLog,
    stream: str,
    done: Callable[[list[Logged]], bool],
    *,
    timeout: float,
    what: str,
    dump: Callable[[], str] | None = None,
) -> list[Logged]:
    async def check() -> list[Logged] | None:
        events = await stream_events(log, stream)
        return events if done(events) else None

    def describe() -> str:
        return f"{stream}: ...\n{dump() if dump else ''}"

    return await wait_for(check, timeout=timeout, what=f"{what} in {stream}", dump=describe)


def has(events: Sequence[Logged], type_: str, **data: Any) -> bool:
    return any(e.type == type_ and all(e.data.get(k) == v for k, v in data.items()) for e in events)


def terminal(events: Sequence[Logged]) -> Logged | None:
    return next((e for e in events if e.type in TERMINAL), None)


def types(events: Sequence[Logged]) -> list[str]:
    return [e.type.removeprefix("shiplog.") for e in events]


# -- HTTP ------------------------------------------------------------------------------------


async def serving(endpoint: str, requests: int = 30) -> Counter[str]:
    """Which versions answer real requests through an environment's endpoint."""
    seen: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=5.0) as client:
        for _ in range(requests):
            response = await client.get(endpoint.rstrip("/") + "/")
            version = response.headers.get("x-shiplog-version")
            if version is None and response.status_code == 200:
                version = response.json().get("version")
            seen[f"{version}" if response.status_code == 200 else f"HTTP {response.status_code}"] += 1
    return seen
