"""Per-target harnesses for the target contract suite
(tests/integration/test_target_contract.py).

A harness knows, for one target and one fresh service, how to build the target (a
new instance over the same state and config each call, as after a process
restart), the steps that bring version N of the service by a strategy, and how to
observe what really runs without asking the target: what answers where each SSH
host's proxy port (and ``current``) points, the Deployment's image in the fake API
server, the schema version in PostgreSQL, the version the local target's endpoint serves over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import asyncpg

from adapters.targets import Release, Step, Target
from adapters.targets.dbmigrate import DbMigrateTarget, DbMigrateTargetConfig
from adapters.targets.kubernetes import KubernetesTarget, KubernetesTargetConfig
from adapters.targets.local import LocalTarget, LocalTargetConfig
from adapters.targets.local import processes as local_processes
from adapters.targets.ssh import SshTarget, SshTargetConfig
from tests.kubefake import KubeFake
from tests.sshd import (
    SshdCluster,
    free_port,
    served,
    slotted_artifact,
    slotted_settings,
    stop_services,
)
from tests.threadedapp import ThreadedApp

Strategy = Literal["rolling", "blue_green", "canary"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "deploy" / "examples" / "sample_service.py"
MIGRATIONS = ROOT / "tests" / "fixtures" / "migrations" / "basic"
LOCAL_COMMAND = ["{python}", str(SAMPLE), "--port", "{port}", "--version", "{version}"]
ENV = "production"


def strategies(target_class: type[Any]) -> list[Strategy]:
    """The strategies the target's Capabilities say it supports: rolling always;
    blue-green needs two colours; canary needs a traffic split."""
    caps = target_class.capabilities
    out: list[Strategy] = ["rolling"]
    if caps.two_colours:
        out.append("blue_green")
    if caps.traffic_split:
        out.append("canary")
    return out


def strategy_steps(release: Release, strategy: Strategy, prefix: str) -> list[Step]:
    """The steps of one strategy bringing ``release``, with ids stable per prefix."""
    kinds: dict[Strategy, list[tuple[str, dict[str, Any]]]] = {
        "rolling": [("rolling", {})],
        "blue_green": [("preview", {}), ("switch", {}), ("scale_down", {})],
        "canary": [("set_weight", {"weight": 25}), ("promote", {})],
    }
    return [
        Step(
            step_id=f"{prefix}-{kind}",
            deployment_id=f"d-{release.version}",
            kind=kind,  # type: ignore[arg-type]
            release=release,
            **fields,
        )
        for kind, fields in kinds[strategy]
    ]


class Harness(Protocol):
    service: str
    environment: str

    def target(self) -> Target:
        """A new instance over the same state dir and config (a process restart)."""
        ...

    def release(self, n: int) -> Release:
        """Version ``n`` of the service, rendered for this target."""
        ...

    def expected(self, n: int) -> str:
        """The version label status and observation report for version ``n``."""
        ...

    async def observe(self) -> str | None:
        """What really runs, seen without the target."""
        ...

    async def effects(self) -> object:
        """A fingerprint of the side effects so far (restarts, generations, pids...)."""
        ...

    async def close(self) -> None: ...


# -- local ---------------------------------------------------------------------------


class LocalHarness:
    def __init__(self, tmp_path: Path, service: str) -> None:
        self.service, self.environment = service, ENV
        self.state_dir = tmp_path / "state"
        self._children = set(local_processes._CHILDREN)

    def target(self) -> Target:
        return LocalTarget(LocalTargetConfig(state_dir=self.state_dir, health_timeout=10, stop_timeout=2))

    def release(self, n: int) -> Release:
        return Release(
            service=self.service,
            environment=ENV,
            version=self.expected(n),
            artifact=f"sample:{n}",
            config={"SAMPLE_SERVICE": self.service},
            settings={"command": LOCAL_COMMAND},
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    def _record(self) -> dict[str, Any]:
        path = self.state_dir / f"{self.service}@{ENV}.json"
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return data

    async def observe(self) -> str | None:
        proxy = self._record().get("proxy")
        if not proxy:
            return None
        seen: set[str] = set()
        async with aiohttp.ClientSession() as session:
            for _ in range(8):
                async with session.get(f"http://127.0.0.1:{proxy['port']}/") as resp:
                    seen.add(resp.headers.get("x-shiplog-version", f"status {resp.status}"))
        return seen.pop() if len(seen) == 1 else repr(sorted(seen))

    async def effects(self) -> object:
        return sorted(i["pid"] for i in self._record().get("instances", []))

    async def close(self) -> None:
        target = self.target()
        assert isinstance(target, LocalTarget)
        pids = {i["pid"] for i in self._record().get("instances", [])}
        proxy = self._record().get("proxy")
        if proxy:
            pids.add(proxy["pid"])
        await target.close(stop_processes=True)
        for pid in (set(local_processes._CHILDREN) - self._children) | pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


# -- ssh -----------------------------------------------------------------------------


class SshHarness:
    """Two slots per host (blue-green, and rolling through the slots); what serves
    is what answers over HTTP where each host's proxy port points, checked against
    where ``current`` leads (``tests.sshd.served``)."""

    def __init__(self, tmp_path: Path, service: str, cluster: SshdCluster) -> None:
        self.service, self.environment = service, ENV
        self.tmp_path, self.cluster = tmp_path, cluster
        self.state_dir = tmp_path / "state"
        blue = free_port()
        self.ports = (blue, next(p for p in iter(free_port, None) if p != blue))

    def target(self) -> Target:
        return SshTarget(SshTargetConfig(state_dir=self.state_dir, health_interval=0.05))

    def release(self, n: int) -> Release:
        version = self.expected(n)
        art = slotted_artifact(self.tmp_path, version)
        settings = slotted_settings(self.cluster, self.ports)
        return Release(
            service=self.service, environment=ENV, version=version, artifact=str(art), settings=settings
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    async def observe(self) -> str | None:
        seen = set(await served(self.cluster, self.service))
        return seen.pop() if len(seen) == 1 else repr(sorted(map(str, seen)))

    async def effects(self) -> object:
        logs = [h.root / self.service / "restarts.log" for h in self.cluster.hosts]
        return [log.read_text() if log.exists() else "" for log in logs]

    async def close(self) -> None:
        stop_services(self.cluster, self.service)


# -- kubernetes ----------------------------------------------------------------------


class KubeFakeServer(ThreadedApp):
    """The fake API server on its own event loop in a thread (``tests.threadedapp``),
    with a kubeconfig that points at it."""

    def __init__(self, directory: Path) -> None:
        self.fake = KubeFake(tick=0.02)
        super().__init__(self.fake.app())
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )


@contextlib.contextmanager
def kube_fake_server(directory: Path) -> Iterator[KubeFakeServer]:
    server = KubeFakeServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class KubernetesHarness:
    """What serves is read from the fake's objects: the Deployments whose pods the
    Service named like the service selects (blue-green switches it), else the service's
    own Deployment — and only once all their replicas are available."""

    def __init__(self, service: str, server: KubeFakeServer) -> None:
        self.service, self.environment = service, "staging"
        self.server = server

    def target(self) -> Target:
        return KubernetesTarget(KubernetesTargetConfig(kubeconfig=self.server.kubeconfig, rollout_timeout=20))

    def release(self, n: int) -> Release:
        version = self.expected(n)
        return Release(
            service=self.service,
            environment=self.environment,
            version=version,
            artifact=f"registry.example/{self.service}:{version}",
            settings={"port": 8080, "scale_down_delay_seconds": 0},
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    def _objects(self, resource: str) -> dict[str, dict[str, Any]]:
        """The service's objects of this resource: its own and the ``<service>-*`` ones."""
        return {
            name: obj
            # a copy: the fake's loop runs in another thread
            for (r, ns, name), obj in list(self.server.fake.objects.items())
            if r == resource
            and ns == self.environment
            and (name == self.service or name.startswith(self.service + "-"))
        }

    def _serving(self) -> list[dict[str, Any]]:
        """The Deployments with replicas whose pods the Service named like the service
        selects (blue-green switches it), else the service's own Deployment."""
        deployments = self._objects("deployments")
        svc = self._objects("services").get(self.service)
        if svc is None:
            return [deployments[self.service]] if self.service in deployments else []
        selector = svc["spec"]["selector"]
        return [
            dep
            for dep in deployments.values()
            if dep["spec"].get("replicas")
            and all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]

    async def observe(self) -> str | None:
        seen = set()
        for dep in self._serving():
            image = str(dep["spec"]["template"]["spec"]["containers"][0]["image"])
            if dep["status"].get("availableReplicas") != dep["spec"].get("replicas"):
                seen.add(f"rolling out {image}")
            else:
                seen.add(image.rsplit(":", 1)[1])
        if not seen:
            return None
        return seen.pop() if len(seen) == 1 else repr(sorted(seen))

    async def effects(self) -> object:
        """Every Deployment's generation and replicas, every Service's resourceVersion."""
        deployments = self._objects("deployments")
        services = self._objects("services")
        return sorted(
            [
                ("deployment", n, f"{d['metadata']['generation']}x{d['spec'].get('replicas')}")
                for n, d in deployments.items()
            ]
            + [("service", n, s["metadata"]["resourceVersion"]) for n, s in services.items()]
        )

    async def close(self) -> None:
        return None


# -- dbmigrate -----------------------------------------------------------------------


class DbMigrateHarness:
    """Version N of the service is the first N migrations of the ``basic`` set (a
    release ships its migration set); the observed version is the newest row of
    ``shiplog_migrations``."""

    def __init__(self, tmp_path: Path, service: str, database_url: str) -> None:
        self.service, self.environment = service, ENV
        self.tmp_path, self.database_url = tmp_path, database_url
        self.state_dir = tmp_path / "state"

    def _set(self, n: int) -> Path:
        directory = self.tmp_path / f"migrations-{n}"
        if not directory.exists():
            directory.mkdir()
            for path in sorted(MIGRATIONS.iterdir()):
                if int(path.name[:4]) <= n:
                    shutil.copy(path, directory / path.name)
        return directory

    def target(self) -> Target:
        # no ``databases``: a new instance knows the database only from the settings
        # it is given, as after a restart in production
        return DbMigrateTarget(
            DbMigrateTargetConfig.model_validate(
                {
                    "state_dir": self.state_dir,
                    "dump_limit_bytes": 0,  # restore by down files; no pg_dump needed
                }
            )
        )

    def release(self, n: int) -> Release:
        return Release(
            service=self.service,
            environment=self.environment,
            version=f"{n}.0.0",
            artifact=f"{self.service}:{n}",
            settings={"database_url": self.database_url, "migrations": str(self._set(n))},
        )

    def expected(self, n: int) -> str:
        return f"{n:04d}"

    async def _rows(self) -> list[int]:
        conn = await asyncpg.connect(self.database_url)
        try:
            exists = await conn.fetchval("SELECT to_regclass('public.shiplog_migrations') IS NOT NULL")
            if not exists:
                return []
            return [int(r["version"]) for r in await conn.fetch("SELECT version FROM shiplog_migrations")]
        finally:
            await conn.close()

    async def observe(self) -> str | None:
        rows = await self._rows()
        return f"{max(rows):04d}" if rows else None

    async def effects(self) -> object:
        conn = await asyncpg.connect(self.database_url)
        try:
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        finally:
            await conn.close()
        return (sorted(await self._rows()), [r["tablename"] for r in tables])

    async def close(self) -> None:
        return None
