"""``SshTarget``: a service on plain hosts over SSH.

On each host a release lives in ``<root>/<service>/releases/<version>`` (uploaded
by SFTP and checked against its sha256) and ``<root>/<service>/current`` says what
serves, switched atomically (a temp link renamed over it). Two layouts, chosen by
the release settings (``config.SshSettings``):

- one release at a time (no ``ports``): ``current -> releases/<v>``. ``rolling``
  goes through the hosts in batches of ``min(batch_size, max_unavailable)``:
  install, pre hooks, switch, restart, health, post hooks.
- two slots (``ports: {blue: 8080, green: 8081}``): ``slots/{blue,green}`` name a
  release each and ``current -> slots/<active>``; ``{slot}``/``{port}`` fill the
  templates. ``preview`` starts the release in the inactive slot on every host and
  checks its health, traffic unchanged; ``switch`` moves ``current`` to it in
  batches and runs ``switch_command`` (e.g. reload a proxy); ``scale_down`` stops
  the other slot with ``stop_command``. ``rolling`` does all three per host.
  Which slots run is kept in a marker beside each slot (see ``layout.py``).

A host that fails stops the step after its batch, and the hosts the step changed
are put back as they were before it (``detail.rolled_back``); the step fails
naming the host. ``preview`` and ``scale_down`` move no traffic and put nothing back.

``snapshot`` and ``status`` read the hosts the release settings they are given name
(as ``apply`` would); without them, the settings of the last release applied (kept
in the state dir), else the config's inventory for the environment. ``restore`` acts
on the hosts and settings its snapshot recorded; the settings it is given only lend a
stop command to a snapshot whose settings have none (before the last applied ones).

``snapshot`` records every host's layout (``current``, slot links, which slots
run) with the settings; ``restore`` converges each host to it: start what ran,
move ``current``, stop what did not run. A host that cannot be reached does not
stop the others; the restore then fails naming it, is not recorded as applied,
and the same restore (same step id or another) converges once the host is back.

Every step and restore is idempotent by id: the target records applied ids in
its state dir and returns the recorded result (``already_applied``); a failed
one is not recorded, so re-driving it retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import ValidationError

from adapters.targets import Capabilities, Release, Snapshot, Step, StepResult, TargetStatus, Track
from adapters.targets.ssh.config import SLOTS, HostSpec, Slot, SshSettings, SshTargetConfig
from adapters.targets.ssh.host import HostFailed, connect
from adapters.targets.ssh.hostops import Artifact, HostOps, template_values
from adapters.targets.ssh.layout import Layout, service_dir, version_of
from events.errors import AdapterUnavailable, InvalidInput

FORMAT = 2
BLUE_GREEN = ("preview", "switch", "scale_down")
T = TypeVar("T")


class StepRefused(Exception):
    """The step cannot run as given (e.g. a digest mismatch); nothing was changed."""


class StepFailed(Exception):
    """The step failed on some hosts; ``detail`` says which and what was put back."""

    def __init__(self, error: str, detail: dict[str, Any]) -> None:
        self.detail = detail
        super().__init__(error)


class SshTarget:
    TYPE = "ssh"
    capabilities = Capabilities(traffic_split=False, two_colours=True)

    def __init__(self, config: SshTargetConfig) -> None:
        self.config = config
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """Every host's layout (``current``, slots, which run) with the settings,
        enough for ``restore``; ``AdapterUnavailable`` naming any host not reached."""
        placed = self._settings_of(service, environment, settings)
        layouts, failed = await self._layouts(placed, service)
        if failed:
            raise AdapterUnavailable("; ".join(str(e) for e in failed))
        versions = {version_of(s) for s in (layout.serving() for layout in layouts.values()) if s}
        return Snapshot(
            service=service,
            environment=environment,
            version=versions.pop() if len(versions) == 1 else None,
            state={
                "format": FORMAT,
                "settings": placed.model_dump(mode="json"),
                "hosts": {name: layout.to_json() for name, layout in layouts.items()},
            },
        )

    async def apply(self, step: Step) -> StepResult:
        """Bring the hosts to the step's state; a step id already applied returns its
        recorded result with ``already_applied=True``."""
        if step.kind not in ("rolling", *BLUE_GREEN):
            raise InvalidInput(
                f"ssh target: step kind {step.kind!r} is not supported "
                "(rolling, preview, switch, scale_down; no traffic split)"
            )
        settings = _parse(step.release.settings)
        if step.kind in BLUE_GREEN and not settings.slotted:
            raise InvalidInput(f"ssh target: {step.kind} needs two slots: set ports {{blue, green}}")
        release = step.release
        return await self._once(
            release.service,
            release.environment,
            key=f"{step.deployment_id}/{step.step_id}",
            step_id=step.step_id,
            action=lambda: self._step(step, settings),
        )

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """The versions ``current`` leads to, weighted by their share of hosts (role
        ``active`` with slots, else ``stable``), and releases running only in an
        inactive slot as ``preview`` at 0; ``reachable`` is whether every host answered."""
        placed = self._settings_of(service, environment, settings)
        layouts, failed = await self._layouts(placed, service)
        specs = {spec.name: spec for spec in placed.all_hosts()}
        hosts_of: Counter[str] = Counter()
        serving: dict[str, list[str]] = {}  # version: urls
        idle: dict[str, list[str]] = {}
        for name, layout in layouts.items():
            active = layout.active_slot()
            release = layout.serving()
            if release:
                hosts_of[version_of(release)] += 1
                serving.setdefault(version_of(release), []).extend(
                    self._urls(placed, specs[name], service, environment, release, active)
                )
            for slot in SLOTS:
                state = layout.slot(slot)
                if slot != active and state.running and state.release and state.release != release:
                    idle.setdefault(version_of(state.release), []).extend(
                        self._urls(placed, specs[name], service, environment, state.release, slot)
                    )
        total = sum(hosts_of.values()) or 1
        role: Literal["active", "stable"] = "active" if placed.slotted else "stable"
        tracks = [
            Track(version=v, role=role, weight=round(100 * hosts_of[v] / total), urls=serving[v])
            for v in sorted(serving)
        ]
        tracks += [Track(version=v, role="preview", urls=idle[v]) for v in sorted(idle) if v not in serving]
        return TargetStatus(service=service, environment=environment, reachable=not failed, tracks=tracks)

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Converge every host to the snapshot's layout, restarting what changed;
        idempotent by ``step_id`` and harmless twice. A host not reached fails the
        restore (the others are restored) and nothing is recorded, so it can be retried.
        The snapshot's hosts and settings win over ``settings`` (it was taken there)."""
        key = f"restore/{step_id}/{_digest(snapshot.model_dump(mode='json'))}"
        return await self._once(
            snapshot.service,
            snapshot.environment,
            key=key,
            step_id=step_id,
            action=lambda: self._restore(snapshot, settings),
        )

    # -- steps -------------------------------------------------------------------------

    async def _step(self, step: Step, settings: SshSettings) -> dict[str, Any]:
        release = step.release
        self._remember(release.service, release.environment, settings)
        hosts = settings.all_hosts()
        batch = min(settings.batch_size or step.batch_size, settings.max_unavailable or len(hosts))
        if step.kind == "scale_down":
            stopped = await self._across(
                settings, release, None, hosts, len(hosts), lambda ops: ops.scale_down(release.version)
            )
            return {"version": release.version, "stopped": {n: s for n, s in stopped.items() if s}}
        artifact = await _local_artifact(release.artifact)
        try:
            digest = _file_sha256(artifact.path)
            if settings.artifact_sha256 is not None and digest != settings.artifact_sha256:
                raise StepRefused(
                    "artifact digest mismatch: "
                    f"expected sha256:{settings.artifact_sha256}, got sha256:{digest}"
                )
            art = Artifact(artifact.path, digest)
            version = release.version
            if step.kind == "preview":
                slots = await self._across(
                    settings, release, art, hosts, len(hosts), lambda o: o.preview(version)
                )
                return {"version": version, "hosts": list(slots), "slots": slots, "sha256": digest}
            if step.kind == "switch":
                moved = await self._across(
                    settings, release, art, hosts, batch, lambda o: o.switch(version), roll_back=True
                )
                return {
                    "version": version,
                    "hosts": list(moved),
                    "switched": [n for n, m in moved.items() if m],
                }
            deploy: Callable[[HostOps], Awaitable[None]] = (
                (lambda o: o.rolling_slotted(version))
                if settings.slotted
                else (lambda o: o.deploy_single(version))
            )
            done = await self._across(settings, release, art, hosts, batch, deploy, roll_back=True)
            return {"version": version, "hosts": list(done), "sha256": digest}
        finally:
            artifact.cleanup()

    async def _across(
        self,
        settings: SshSettings,
        release: Release,
        artifact: Artifact | None,
        hosts: list[HostSpec],
        size: int,
        op: Callable[[HostOps], Awaitable[T]],
        *,
        roll_back: bool = False,
    ) -> dict[str, T]:
        """``op`` on the hosts, ``size`` at a time; after a batch with a failure stop,
        put back the hosts touched (``roll_back``) and raise ``StepFailed``."""
        before: dict[str, Layout] = {}

        async def on_host(spec: HostSpec) -> T:
            async with self._connect(spec) as host:
                ops = self._ops(host, settings, release.service, release.environment, artifact)
                before[spec.name] = await ops.layout()
                return await op(ops)

        done: dict[str, T] = {}
        for start in range(0, len(hosts), size):
            outcomes = await _gather(hosts[start : start + size], on_host)
            failed = [o for o in outcomes.values() if isinstance(o, HostFailed)]
            done |= {n: o for n, o in outcomes.items() if not isinstance(o, HostFailed)}
            if failed:
                detail: dict[str, Any] = {"failed_hosts": [e.host for e in failed], "switched": list(done)}
                errors = [str(e) for e in failed]
                if roll_back:
                    back, broken = await self._converge(
                        settings, release.service, release.environment, before
                    )
                    detail |= {"rolled_back": back, "rollback_failed": [e.host for e in broken]}
                    errors += [f"rollback: {e}" for e in broken]
                raise StepFailed("; ".join(errors), detail)
        return done

    # -- restore ---------------------------------------------------------------------

    async def _restore(self, snapshot: Snapshot, given: Mapping[str, Any] | None) -> dict[str, Any]:
        state = _upcast_snapshot_state(snapshot.state)
        settings = SshSettings.model_validate(state["settings"])
        service, environment = snapshot.service, snapshot.environment
        wanted = {
            spec.name: Layout.from_json(
                service_dir(settings.root_of(spec), service), state["hosts"].get(spec.name, {})
            )
            for spec in settings.all_hosts()
        }
        restored, failed = await self._converge(settings, service, environment, wanted, given)
        if failed:
            names = ", ".join(e.host for e in failed)
            raise StepFailed(
                f"restore incomplete, not restored: {names}: " + "; ".join(str(e) for e in failed),
                {"restored": restored, "failed_hosts": [e.host for e in failed]},
            )
        return {"restored": restored, "version": snapshot.version}

    async def _converge(
        self,
        settings: SshSettings,
        service: str,
        environment: str,
        wanted: dict[str, Layout],
        given: Mapping[str, Any] | None = None,
    ) -> tuple[list[str], list[HostFailed]]:
        """Every host of ``wanted`` to its layout, in batches, all of them whatever
        fails: the hosts changed and the failures."""
        stop_settings = self._stop_settings(settings, service, environment, given)

        async def on_host(spec: HostSpec) -> bool:
            async with self._connect(spec) as host:
                ops = self._ops(host, settings, service, environment, None, stop_settings)
                return await ops.converge(wanted[spec.name])

        hosts = [spec for spec in settings.all_hosts() if spec.name in wanted]
        size = min(settings.batch_size or 1, settings.max_unavailable or len(hosts))
        changed: list[str] = []
        failed: list[HostFailed] = []
        for start in range(0, len(hosts), size):
            outcomes = await _gather(hosts[start : start + size], on_host)
            changed += [n for n, o in outcomes.items() if o is True]
            failed += [o for o in outcomes.values() if isinstance(o, HostFailed)]
        return changed, failed

    def _stop_settings(
        self, settings: SshSettings, service: str, environment: str, given: Mapping[str, Any] | None
    ) -> SshSettings | None:
        """Settings that can stop a slot when ``settings`` (an older snapshot's) cannot:
        the release settings ``given``, else the last applied."""
        if settings.stop_command is not None:
            return None
        try:
            latest = self._settings_of(service, environment, given)
        except InvalidInput:  # a target that never deployed this service
            return None
        return latest if latest.stop_command is not None else None

    # -- hosts -------------------------------------------------------------------------

    async def _layouts(
        self, settings: SshSettings, service: str
    ) -> tuple[dict[str, Layout], list[HostFailed]]:
        async def read(spec: HostSpec) -> Layout:
            async with self._connect(spec) as host:
                return await host.read_layout(service_dir(settings.root_of(spec), service))

        outcomes = await _gather(settings.all_hosts(), read)
        layouts = {n: o for n, o in outcomes.items() if not isinstance(o, HostFailed)}
        return layouts, [o for o in outcomes.values() if isinstance(o, HostFailed)]

    def _urls(
        self,
        settings: SshSettings,
        spec: HostSpec,
        service: str,
        environment: str,
        release: str,
        slot: Slot | None,
    ) -> list[str]:
        if settings.url is None:
            return []
        values = template_values(settings, spec, service, environment, version_of(release), slot)
        try:
            return [settings.url.format(**values)]
        except KeyError:  # a host still on one release while the settings have slots
            return []

    def _ops(
        self,
        host: Any,
        settings: SshSettings,
        service: str,
        environment: str,
        artifact: Artifact | None,
        stop_settings: SshSettings | None = None,
    ) -> HostOps:
        return HostOps(
            host,
            settings,
            service=service,
            environment=environment,
            health_interval=self.config.health_interval,
            artifact=artifact,
            stop_settings=stop_settings,
        )

    def _connect(self, spec: HostSpec) -> Any:
        return connect(
            spec, connect_timeout=self.config.connect_timeout, command_timeout=self.config.command_timeout
        )

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
        """Run ``action`` unless ``key`` is recorded; only a success is recorded."""
        async with self._locks.setdefault((service, environment), asyncio.Lock()):
            record = self._load(service, environment)
            recorded = record["applied"].get(key)
            if recorded is not None:
                return StepResult.model_validate({**recorded, "already_applied": True})
            try:
                detail = await action()
            except StepRefused as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc), detail={"changed": []})
            except StepFailed as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc), detail=exc.detail)
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
            return {"format": FORMAT, "applied": {}, "settings": None}
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
        record["settings"] = settings.model_dump(mode="json")
        self._save(service, environment, record)

    def _settings_of(
        self, service: str, environment: str, given: Mapping[str, Any] | None = None
    ) -> SshSettings:
        """The release settings ``given``, parsed as ``apply`` parses them; without them
        the settings of the last release applied (format 1 records kept only the
        inventory and restart), else the config's inventory for the environment."""
        if given is not None:
            return _parse(given)
        record = self._load(service, environment)
        if record.get("settings"):
            return SshSettings.model_validate(record["settings"])
        if record.get("inventory"):
            return SshSettings.model_validate({**record["inventory"], "restart": record["restart"]})
        if environment in self.config.environments:
            return SshSettings.model_validate(self.config.environments[environment].model_dump(mode="json"))
        raise InvalidInput(f"ssh target: no inventory for {service}/{environment}")


def _upcast_snapshot_state(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept ``inventory``, ``restart`` and ``current`` per host."""
    if state.get("format", 1) == 1:
        return {
            "format": 2,
            "settings": {**state["inventory"], "restart": state["restart"]},
            "hosts": {name: {"current": target} for name, target in state["current"].items()},
        }
    return state


async def _gather(
    hosts: list[HostSpec], action: Callable[[HostSpec], Awaitable[T]]
) -> dict[str, T | HostFailed]:
    """``action`` on every host at once: each host's result or its ``HostFailed``;
    any other exception propagates."""
    outcomes = await asyncio.gather(*(action(spec) for spec in hosts), return_exceptions=True)
    out: dict[str, T | HostFailed] = {}
    for spec, outcome in zip(hosts, outcomes, strict=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, HostFailed):
            raise outcome
        out[spec.name] = outcome
    return out


class _LocalArtifact:
    def __init__(self, path: Path, tmpdir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.path = path
        self._tmpdir = tmpdir

    def cleanup(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


async def _local_artifact(artifact: str) -> _LocalArtifact:
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
        return _LocalArtifact(path, tmpdir)
    path = Path(artifact.removeprefix("file://"))
    if not path.is_file():
        raise StepRefused(f"artifact not found: {artifact}")
    return _LocalArtifact(path)


def _parse(settings: Mapping[str, Any]) -> SshSettings:
    try:
        return SshSettings.model_validate(dict(settings))
    except ValidationError as exc:
        raise InvalidInput(f"ssh target settings: {exc}") from exc


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
