"""One step's work on one (service, environment) of the local target.

``StepRun`` holds the record while the step runs and offers the moves every step is
made of: start instances and wait until they are healthy, retire instances (out of
the routing first, then stopped), publish the routing and wait until the proxy
follows it, keep the proxy itself running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from adapters.targets import Release
from adapters.targets.local import processes
from adapters.targets.local.config import DEFAULT_HEALTH_PATH, LocalTargetConfig
from adapters.targets.local.processes import ProcessFailed
from adapters.targets.local.state import Instance, ProxyProcess, ServiceState, Spec, StateStore, TrackState
from adapters.targets.local.wire import CONTROL_PATH

_PROXY_START_ATTEMPTS = 3
_PING_TIMEOUT_S = 1.0
#: the directory that holds the ``adapters`` package, for the proxy's ``python -m``
_CODE_ROOT = Path(__file__).resolve().parents[3]


class StepFailed(Exception):
    """The step cannot be brought about; becomes a ``StepResult`` with ``ok=False``."""


def now() -> str:
    return datetime.now(UTC).isoformat()


async def ping(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=_PING_TIMEOUT_S)) as resp:
            if resp.status != 200:
                return None
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


class StepRun:
    """One step's work on one (service, environment): the record, the processes it
    starts and stops, and the proxy that must follow."""

    def __init__(
        self,
        config: LocalTargetConfig,
        store: StateStore,
        state: ServiceState,
        session: aiohttp.ClientSession,
    ) -> None:
        self.config = config
        self.store = store
        self.state = state
        self.session = session
        self.started: list[int] = []
        self.stopped: list[int] = []

    def url(self, port: int) -> str:
        return f"http://{self.config.host}:{port}"

    def detail(self) -> dict[str, Any]:
        proxy = self.state.proxy
        return {
            "tracks": [
                {"version": t.version, "role": t.role, "weight": t.weight, "replicas": t.replicas}
                for t in self.state.tracks
            ],
            "started_pids": list(self.started),
            "stopped_pids": list(self.stopped),
            "endpoint": self.url(proxy.port) if proxy else None,
        }

    # -- the record and the proxy ------------------------------------------------------

    def save(self) -> int:
        return self.store.save(self.state)

    async def publish(self) -> None:
        """Write the record and wait until the proxy routes by it."""
        generation = self.save()
        proxy = self.state.proxy
        if proxy is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proxy.pid, signal.SIGHUP)
        deadline = time.monotonic() + self.config.routing_timeout
        url = self.url(proxy.port) + CONTROL_PATH
        while True:
            answer = await ping(self.session, url)
            if answer is not None and int(answer.get("generation", 0)) >= generation:
                return
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"the proxy on port {proxy.port} did not load routing generation {generation}"
                )
            await asyncio.sleep(0.02)

    async def forget_dead(self) -> None:
        """Drop instances that died; stop those a crashed driver left half-started or
        half-stopped (the step that started them is re-driven from the start)."""
        keep: list[Instance] = []
        for inst in self.state.instances:
            if not processes.is_alive(inst.pid, inst.start_ticks):
                continue
            if inst.status != "ready":
                await processes.stop(inst.pid, inst.start_ticks, grace=self.config.stop_timeout)
                self.stopped.append(inst.pid)
                continue
            keep.append(inst)
        self.state.instances = keep

    async def ensure_proxy(self) -> None:
        """Start the proxy if it does not run, on its recorded port while that is free."""
        proxy = self.state.proxy
        if proxy is not None and processes.is_alive(proxy.pid, proxy.start_ticks):
            return
        host = self.config.host
        taken = {s.proxy.port for s in self.store.load_all() if s.proxy is not None}
        wanted = proxy.port if proxy is not None else None
        error = "not started"
        for _ in range(_PROXY_START_ATTEMPTS):
            if wanted is not None and processes.port_is_free(host, wanted):
                port = wanted
            else:
                port = processes.free_port(host, avoid=taken, within=self.config.proxy_ports)
            wanted = None
            log = self.store.log_path(self.state.service, self.state.environment, "proxy")
            argv = [
                self.config.python,
                "-m",
                "adapters.targets.local.proxy",
                "--state",
                str(self.store.path(self.state.service, self.state.environment)),
                "--port",
                str(port),
                "--host",
                host,
            ]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_CODE_ROOT), env.get("PYTHONPATH")) if p)
            pid, ticks = processes.spawn(argv, env=env, cwd=None, log=log)
            self.state.proxy = ProxyProcess(pid=pid, start_ticks=ticks, port=port, started_at=now())
            self.save()  # the pid is on record before anything can go wrong
            try:
                await processes.wait_healthy(
                    self.session,
                    self.url(port) + CONTROL_PATH,
                    pid=pid,
                    ticks=ticks,
                    limit=self.config.health_timeout,
                    log=log,
                )
                return
            except ProcessFailed as exc:
                error = str(exc)
                await processes.stop(pid, ticks, grace=self.config.stop_timeout)
                taken.add(port)
        self.state.proxy = None
        self.save()
        raise StepFailed(f"the proxy did not start: {error}")

    # -- instances -----------------------------------------------------------------------

    def spec_for(self, release: Release) -> Spec:
        settings = release.settings
        command = settings.get("command")
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise StepFailed("release settings.command must be a non-empty list of strings")
        health_path = str(settings.get("health_path", DEFAULT_HEALTH_PATH))
        if not health_path.startswith("/"):
            raise StepFailed(f"release settings.health_path must start with '/', got {health_path!r}")
        try:
            timeout = float(settings["health_timeout"]) if "health_timeout" in settings else None
        except (TypeError, ValueError):
            raise StepFailed(
                f"release settings.health_timeout must be seconds, got {settings['health_timeout']!r}"
            ) from None
        cwd = settings.get("cwd") or self.config.workdir or Path.cwd()
        return Spec(
            version=release.version,
            artifact=release.artifact,
            command=list(command),
            config_hash=self.store.put_config(dict(release.config)),
            health_path=health_path,
            cwd=str(Path(cwd).resolve()),
            health_timeout=timeout,
        )

    def matching(self, spec: Spec) -> list[Instance]:
        return [i for i in self.state.instances if i.spec_id == spec.spec_id and i.status == "ready"]

    def others(self, specs: list[Spec]) -> list[Instance]:
        ids = {s.spec_id for s in specs}
        return [i for i in self.state.instances if i.spec_id not in ids]

    async def start(self, spec: Spec, count: int) -> None:
        """Start ``count`` instances of ``spec`` and wait until all answer on the health path."""
        if count <= 0:
            return
        config = self.store.get_config(spec.config_hash)
        if config is None:
            raise StepFailed(f"the configuration {spec.config_hash} of {spec.version} is not on record")
        env = {**os.environ, **config}
        # ports other records hold, a stopped proxy's included: it comes back on its port
        taken = {i.port for i in self.state.instances}
        for other in self.store.load_all():
            taken |= {i.port for i in other.instances}
            if other.proxy is not None:
                taken.add(other.proxy.port)
        fresh: list[Instance] = []
        for _ in range(count):
            port = processes.free_port(self.config.host, avoid=taken)
            taken.add(port)
            values = {
                "port": str(port),
                "version": spec.version,
                "artifact": spec.artifact,
                "service": self.state.service,
                "environment": self.state.environment,
                "python": self.config.python,
            }
            argv = [_fill(arg, values) for arg in spec.command]
            name = f"{spec.version}.{spec.variant}.{port}" if spec.variant else f"{spec.version}.{port}"
            log = self.store.log_path(self.state.service, self.state.environment, name)
            pid, ticks = processes.spawn(argv, env=env, cwd=spec.cwd, log=log)
            self.started.append(pid)
            inst = Instance(
                pid=pid,
                start_ticks=ticks,
                port=port,
                version=spec.version,
                spec_id=spec.spec_id,
                config_hash=spec.config_hash,
                command=argv,
                started_at=now(),
                status="starting",
                log=str(log),
                variant=spec.variant,
            )
            self.state.instances.append(inst)
            fresh.append(inst)
        self.save()  # the pids are on record before we wait for them
        limit = spec.health_timeout or self.config.health_timeout
        await _all(
            processes.wait_healthy(
                self.session,
                self.url(i.port) + spec.health_path,
                pid=i.pid,
                ticks=i.start_ticks,
                limit=limit,
                log=Path(i.log),
            )
            for i in fresh
        )
        for inst in fresh:
            inst.status = "ready"

    async def retire(self, instances: list[Instance]) -> None:
        """Take the instances out of the routing, then stop them."""
        if not instances:
            return
        for inst in instances:
            inst.status = "stopping"
        await self.publish()
        await self.stop(instances)

    async def stop(self, instances: list[Instance]) -> None:
        await asyncio.gather(
            *(processes.stop(i.pid, i.start_ticks, grace=self.config.stop_timeout) for i in instances)
        )
        gone = {i.pid for i in instances}
        self.stopped.extend(gone)
        self.state.instances = [i for i in self.state.instances if i.pid not in gone]
        self.save()

    async def discard_unready(self) -> None:
        """After a failure: stop what never became ready and what was on its way out."""
        await self.stop([i for i in self.state.instances if i.status != "ready"])

    def set_tracks(self, tracks: list[TrackState]) -> None:
        self.state.tracks = tracks


async def _all(waits: Iterable[Awaitable[None]]) -> None:
    """Await them all; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _fill(arg: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg
