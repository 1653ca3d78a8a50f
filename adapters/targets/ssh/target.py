"""``SshTarget``: a service on plain hosts over SSH.

On each host a release lives in ``<root>/<service>/releases/<version>`` and
``<root>/<service>/current`` points at the one that runs, switched atomically.
A ``rolling`` step goes through the hosts in batches of ``min(batch_size,
max_unavailable)``: upload and check the artifact, pre hooks, switch, restart,
health check, post hooks. A host that fails stops the step; the hosts already
switched stay switched for ``restore``. Settings: see ``config.SshSettings``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError

from adapters.targets import Capabilities, Release, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.ssh.config import HostSpec, Inventory, SshSettings, SshTargetConfig
from adapters.targets.ssh.host import HostFailed, HostSession, connect, q
from events.errors import AdapterUnavailable, InvalidInput

FORMAT = 1
DIGEST_FILE = ".shiplog-sha256"


class StepRefused(Exception):
    """The step cannot run as given (e.g. a digest mismatch); nothing was changed."""


class SshTarget:
    TYPE = "ssh"
    capabilities = Capabilities(traffic_split=False, two_colours=False)

    def __init__(self, config: SshTargetConfig) -> None:
        self.config = config
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(self, service: str, environment: str) -> Snapshot:
        """The ``current`` target of every host (``None`` where there is none), with
        the inventory and restart command, enough for ``restore``."""
        inventory, restart = self._inventory(service, environment)
        current: dict[str, str | None] = {}
        for spec in inventory.all_hosts():
            try:
                async with self._connect(spec) as host:
                    current[spec.name] = await host.read_current(_link(inventory.root_of(spec), service))
            except HostFailed as exc:
                raise AdapterUnavailable(str(exc)) from exc
        versions = {Path(t).name for t in current.values() if t}
        return Snapshot(
            service=service,
            environment=environment,
            version=versions.pop() if len(versions) == 1 else None,
            state={
                "format": FORMAT,
                "inventory": inventory.model_dump(mode="json"),
                "restart": restart,
                "current": current,
            },
        )

    async def apply(self, step: Step) -> StepResult:
        """Roll the release across the hosts; a step id already applied returns its
        recorded result with ``already_applied=True``."""
        if step.kind != "rolling":
            raise InvalidInput(f"ssh target: step kind {step.kind!r} is not supported (only 'rolling')")
        release = step.release
        return await self._once(
            release.service,
            release.environment,
            key=f"{step.deployment_id}/{step.step_id}",
            step_id=step.step_id,
            action=lambda: self._rolling(step),
        )

    async def status(self, service: str, environment: str) -> TargetStatus:
        """The versions ``current`` points at, weighted by their share of hosts;
        ``reachable`` is whether every host answered."""
        inventory, _ = self._inventory(service, environment)
        counts: dict[str, int] = {}
        reachable = True
        for spec in inventory.all_hosts():
            try:
                async with self._connect(spec) as host:
                    target = await host.read_current(_link(inventory.root_of(spec), service))
            except HostFailed:
                reachable = False
                continue
            if target:
                counts[Path(target).name] = counts.get(Path(target).name, 0) + 1
        total = sum(counts.values()) or 1
        tracks = [
            Track(version=v, role="stable", weight=round(100 * n / total)) for v, n in sorted(counts.items())
        ]
        return TargetStatus(service=service, environment=environment, reachable=reachable, tracks=tracks)

    async def restore(self, snapshot: Snapshot, *, step_id: str) -> StepResult:
        """Point ``current`` on every host back where the snapshot saw it and restart
        where it changed; idempotent by ``step_id`` and harmless twice."""
        key = f"restore/{step_id}/{_digest(snapshot.model_dump(mode='json'))}"
        return await self._once(
            snapshot.service,
            snapshot.environment,
            key=key,
            step_id=step_id,
            action=lambda: self._restore(snapshot),
        )

    # -- rolling ---------------------------------------------------------------------

    async def _rolling(self, step: Step) -> dict[str, Any]:
        release = step.release
        settings = _settings(release)
        self._remember(release.service, release.environment, settings)
        artifact = await _local_artifact(release.artifact)
        try:
            digest = _file_sha256(artifact.path)
            if settings.artifact_sha256 is not None and digest != settings.artifact_sha256:
                raise StepRefused(
                    "artifact digest mismatch: "
                    f"expected sha256:{settings.artifact_sha256}, got sha256:{digest}"
                )
            hosts = settings.all_hosts()
            size = min(settings.batch_size or step.batch_size, settings.max_unavailable or len(hosts))
            done: list[str] = []
            for start in range(0, len(hosts), size):
                batch = hosts[start : start + size]
                outcomes = await asyncio.gather(
                    *(self._deploy_host(spec, release, settings, artifact.path, digest) for spec in batch),
                    return_exceptions=True,
                )
                done += [spec.name for spec, o in zip(batch, outcomes, strict=True) if o is True]
                failed: list[HostFailed] = []
                for outcome in outcomes:
                    if isinstance(outcome, HostFailed):
                        failed.append(outcome)
                    elif isinstance(outcome, BaseException):
                        raise outcome
                if failed:
                    raise _RollingStopped(failed, done)
            return {"version": release.version, "hosts": done, "sha256": digest}
        finally:
            artifact.cleanup()

    async def _deploy_host(
        self, spec: HostSpec, release: Release, settings: SshSettings, artifact: Path, digest: str
    ) -> bool:
        root = settings.root_of(spec)
        release_dir = f"{root}/{release.service}/releases/{release.version}"
        values = _values(root, release.service, release.environment, release.version, spec)
        async with self._connect(spec) as host:
            marker = f"{release_dir}/{DIGEST_FILE}"
            have = await host.run(f"cat {q(marker)} 2>/dev/null || true", what="read release digest")
            if have.strip() != digest:
                await self._upload(host, artifact, release_dir, digest)
            for hook in settings.pre:
                await host.run(_cd(release_dir, hook.format(**values)), what=f"pre hook {hook!r}")
            link = _link(root, release.service)
            await host.switch(link, release_dir)
            await host.run(_cd(release_dir, settings.restart.format(**values)), what="restart")
            await self._health(host, settings, values)
            for hook in settings.post:
                await host.run(_cd(release_dir, hook.format(**values)), what=f"post hook {hook!r}")
        return True

    async def _upload(self, host: HostSession, artifact: Path, release_dir: str, digest: str) -> None:
        partial = f"{release_dir}.partial"
        await host.run(f"rm -rf {q(partial)} && mkdir -p {q(partial)}", what="prepare release dir")
        remote = f"{partial}/{artifact.name}"
        await host.upload(artifact, remote)
        got = (await host.run(f"sha256sum {q(remote)}", what="digest")).split()[:1]
        if got != [digest]:
            raise HostFailed(host.spec.name, f"uploaded artifact digest {got} != sha256:{digest}")
        if _is_tarball(artifact.name):
            unpack = f"tar -xf {q(remote)} -C {q(partial)} && rm -f {q(remote)}"
            await host.run(unpack, what="unpack artifact")
        else:
            await host.run(f"chmod +x {q(remote)}", what="chmod artifact")
        finish = (
            f"printf %s {q(digest)} > {q(partial + '/' + DIGEST_FILE)}"
            f" && rm -rf {q(release_dir)} && mv -T {q(partial)} {q(release_dir)}"
        )
        await host.run(finish, what="install release")

    async def _health(self, host: HostSession, settings: SshSettings, values: dict[str, str]) -> None:
        if settings.health_command is None and settings.health_url is None:
            return
        deadline = asyncio.get_running_loop().time() + settings.health_timeout
        while True:
            if await _healthy(host, settings, values):
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise HostFailed(host.spec.name, f"not healthy within {settings.health_timeout}s")
            await asyncio.sleep(self.config.health_interval)

    # -- restore ---------------------------------------------------------------------

    async def _restore(self, snapshot: Snapshot) -> dict[str, Any]:
        inventory = Inventory.model_validate(snapshot.state["inventory"])
        restart: str = snapshot.state["restart"]
        current: dict[str, str | None] = snapshot.state["current"]
        restored: list[str] = []
        for spec in inventory.all_hosts():
            wanted = current.get(spec.name)
            root = inventory.root_of(spec)
            link = _link(root, snapshot.service)
            async with self._connect(spec) as host:
                if await host.read_current(link) == wanted:
                    continue
                await host.switch(link, wanted)
                if wanted is not None:
                    version = Path(wanted).name
                    values = _values(root, snapshot.service, snapshot.environment, version, spec)
                    await host.run(_cd(wanted, restart.format(**values)), what="restart")
                restored.append(spec.name)
        return {"restored": restored, "version": snapshot.version}

    # -- record ------------------------------------------------------------------------

    async def _once(
        self,
        service: str,
        environment: str,
        *,
        key: str,
        step_id: str,
        action: Callable[[], Awaitable[dict[str, Any]]],
    ) -> StepResult:
        async with self._locks.setdefault((service, environment), asyncio.Lock()):
            record = self._load(service, environment)
            recorded = record["applied"].get(key)
            if recorded is not None:
                return StepResult.model_validate({**recorded, "already_applied": True})
            try:
                detail = await action()
            except StepRefused as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc), detail={"changed": []})
            except _RollingStopped as exc:
                return StepResult(
                    step_id=step_id,
                    ok=False,
                    error="; ".join(str(e) for e in exc.failed),
                    detail={"failed_hosts": [e.host for e in exc.failed], "switched": exc.done},
                )
            except HostFailed as exc:
                return StepResult(
                    step_id=step_id, ok=False, error=str(exc), detail={"failed_hosts": [exc.host]}
                )
            result = StepResult(step_id=step_id, ok=True, detail=detail)
            record = self._load(service, environment)
            record["applied"][key] = {**result.model_dump(mode="json"), "applied_at": _now()}
            keep = list(record["applied"].items())[-self.config.applied_keep :]
            record["applied"] = dict(keep)
            self._save(service, environment, record)
            return StepResult.model_validate(result.model_dump())

    def _path(self, service: str, environment: str) -> Path:
        return self.config.state_dir / f"{service}--{environment}.json"

    def _load(self, service: str, environment: str) -> dict[str, Any]:
        path = self._path(service, environment)
        if not path.exists():
            return {"format": FORMAT, "applied": {}, "inventory": None, "restart": None}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _save(self, service: str, environment: str, record: dict[str, Any]) -> None:
        path = self._path(service, environment)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        os.replace(tmp, path)

    def _remember(self, service: str, environment: str, settings: SshSettings) -> None:
        record = self._load(service, environment)
        record["inventory"] = settings.inventory().model_dump(mode="json")
        record["restart"] = settings.restart
        self._save(service, environment, record)

    def _inventory(self, service: str, environment: str) -> tuple[Inventory, str]:
        """The environment's inventory: the last one a release named, else the config's."""
        record = self._load(service, environment)
        if record.get("inventory"):
            return Inventory.model_validate(record["inventory"]), record["restart"]
        if environment in self.config.environments:
            return self.config.environments[environment], SshSettings.model_fields["restart"].default
        raise InvalidInput(f"ssh target: no inventory for {service}/{environment}")

    def _connect(self, spec: HostSpec) -> Any:
        return connect(
            spec, connect_timeout=self.config.connect_timeout, command_timeout=self.config.command_timeout
        )


class _RollingStopped(Exception):
    def __init__(self, failed: list[HostFailed], done: list[str]) -> None:
        self.failed = failed
        self.done = done
        super().__init__("; ".join(str(e) for e in failed))


class _Artifact:
    def __init__(self, path: Path, tmpdir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.path = path
        self._tmpdir = tmpdir

    def cleanup(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


async def _local_artifact(artifact: str) -> _Artifact:
    """The artifact as a local file: a path as is, a URL downloaded to a temp dir."""
    if artifact.startswith(("http://", "https://")):
        tmpdir = tempfile.TemporaryDirectory(prefix="shiplog-ssh-")
        name = artifact.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "artifact"
        path = Path(tmpdir.name) / name
        try:
            async with aiohttp.ClientSession() as session, session.get(artifact) as response:
                response.raise_for_status()
                path.write_bytes(await response.read())
        except aiohttp.ClientError as exc:
            tmpdir.cleanup()
            raise StepRefused(f"artifact download failed: {exc}") from exc
        return _Artifact(path, tmpdir)
    path = Path(artifact.removeprefix("file://"))
    if not path.is_file():
        raise StepRefused(f"artifact not found: {artifact}")
    return _Artifact(path)


async def _healthy(host: HostSession, settings: SshSettings, values: dict[str, str]) -> bool:
    command = settings.health_command
    if command is not None and not await host.succeeds(command.format(**values)):
        return False
    if settings.health_url is not None:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(settings.health_url.format(**values)) as response:
                    return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
    return True


def _settings(release: Release) -> SshSettings:
    try:
        return SshSettings.model_validate(release.settings)
    except ValidationError as exc:
        raise InvalidInput(f"ssh target settings: {exc}") from exc


def _values(root: str, service: str, environment: str, version: str, spec: HostSpec) -> dict[str, str]:
    return {
        "root": root,
        "service": service,
        "environment": environment,
        "version": version,
        "release_dir": f"{root}/{service}/releases/{version}",
        "host": spec.host,
        "name": spec.name,
    }


def _link(root: str, service: str) -> str:
    return f"{root}/{service}/current"


def _cd(directory: str, command: str) -> str:
    return f"cd {q(directory)} && {command}"


def _is_tarball(name: str) -> bool:
    return name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()
