"""The local target's own durable record, one JSON file per (service, environment).

The file says which processes run (pid, port, version, command, config hash), which
versions serve with which weights, where the proxy listens, and which steps were
applied with what result. It is written atomically (temporary file, then
``os.replace``) and is also what the proxy reads its routing table from, so it
outlives the process that drives the target.

Rendered configuration may hold resolved secrets: it is kept out of the record and
out of snapshots, in ``configs/<hash>.json`` (mode 0600), named by its hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field

FORMAT = 1
_LOCK_POLL_S = 0.02

Role = Literal["stable", "canary", "preview", "active", "baseline"]
#: a second track of a version beside its main one: ``baseline`` is the stable
#: version started fresh beside a canary, so both are equally warm
Variant = Literal["baseline"]
InstanceStatus = Literal["starting", "ready", "stopping"]


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Spec(BaseModel):
    """How to run one version: enough to start an identical instance again."""

    version: str
    artifact: str = ""
    #: the command template, placeholders not yet filled
    command: list[str]
    config_hash: str
    health_path: str
    cwd: str
    health_timeout: float | None = None
    #: None: the version's main track; a variant's instances are told apart by spec id
    variant: Variant | None = None

    @property
    def spec_id(self) -> str:
        # the variant only when set, so the ids (and snapshots) of main tracks stay as they were
        return digest(self.model_dump(exclude={"health_timeout", "variant"}) | self._variant())

    def _variant(self) -> dict[str, Any]:
        return {"variant": self.variant} if self.variant is not None else {}

    def record(self) -> dict[str, Any]:
        """The spec as snapshots and the record keep it (no ``variant`` key unless set)."""
        return self.model_dump(exclude={"variant"}) | self._variant()

    def as_variant(self, variant: Variant) -> Spec:
        return self.model_copy(update={"variant": variant})


class TrackState(BaseModel):
    """One version the (service, environment) should run: how many, with which share."""

    spec: Spec
    role: Role
    weight: int = 0
    replicas: int = 1

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def variant(self) -> Variant | None:
        return self.spec.variant


class Instance(BaseModel):
    pid: int
    #: the process's start time (``/proc/<pid>/stat``), so a reused pid is not mistaken for it
    start_ticks: int | None = None
    port: int
    version: str
    spec_id: str
    config_hash: str
    #: the command as run, placeholders filled
    command: list[str]
    started_at: str
    status: InstanceStatus = "starting"
    log: str = ""
    variant: Variant | None = None


class ProxyProcess(BaseModel):
    pid: int
    start_ticks: int | None = None
    port: int
    started_at: str


class Backend(BaseModel):
    """What the proxy reads: per track its weight and the instances to send to.

    ``role`` labels the track's requests in the proxy's metrics; a ``variant`` (the
    baseline) is routed apart from the version's main track."""

    version: str
    weight: int
    urls: list[str] = Field(default_factory=list)
    role: str | None = None
    variant: Variant | None = None


class AppliedStep(BaseModel):
    key: str
    kind: str
    applied_at: str
    result: dict[str, Any]


class ServiceState(BaseModel):
    format: int = FORMAT
    service: str
    environment: str
    #: bumped on every write; the proxy reports the generation it has loaded
    generation: int = 0
    proxy: ProxyProcess | None = None
    tracks: list[TrackState] = Field(default_factory=list)
    instances: list[Instance] = Field(default_factory=list)
    #: derived from tracks and ready instances on every write, for the proxy
    routing: list[Backend] = Field(default_factory=list)
    applied: list[AppliedStep] = Field(default_factory=list)

    def track(self, version: str) -> TrackState | None:
        """The version's main track (not a variant such as the baseline)."""
        return next((t for t in self.tracks if t.version == version and t.variant is None), None)

    def instances_of(self, track: TrackState) -> list[Instance]:
        """The instances of the track's version and variant (any spec, any status)."""
        return [i for i in self.instances if i.version == track.version and i.variant == track.variant]

    def applied_result(self, key: str) -> dict[str, Any] | None:
        return next((a.result for a in self.applied if a.key == key), None)

    def derive_routing(self, host: str) -> list[Backend]:
        return [
            Backend(
                version=t.version,
                weight=t.weight,
                urls=[f"http://{host}:{i.port}" for i in self.instances_of(t) if i.status == "ready"],
                role=t.role,
                variant=t.variant,
            )
            for t in self.tracks
        ]


def _file_stem(service: str, environment: str) -> str:
    # quote(safe="") never leaves an "@" or a "/", so the name is unambiguous
    return f"{quote(service, safe='')}@{quote(environment, safe='')}"


class StateStore:
    """Reads and writes the records under one state directory."""

    def __init__(self, state_dir: Path, *, host: str, keep: int) -> None:
        self.root = state_dir
        self._host = host
        self._keep = keep
        for sub in ("", "configs", "logs", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "configs", 0o700)

    def path(self, service: str, environment: str) -> Path:
        return self.root / f"{_file_stem(service, environment)}.json"

    def log_path(self, service: str, environment: str, name: str) -> Path:
        safe = quote(name, safe="")
        return self.root / "logs" / f"{_file_stem(service, environment)}.{safe}.log"

    def load(self, service: str, environment: str) -> ServiceState:
        path = self.path(service, environment)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return ServiceState(service=service, environment=environment)
        return ServiceState.model_validate_json(raw)

    def load_all(self) -> list[ServiceState]:
        return [ServiceState.model_validate_json(p.read_bytes()) for p in sorted(self.root.glob("*@*.json"))]

    def save(self, state: ServiceState) -> int:
        """Write the record atomically; returns the new generation."""
        state.generation += 1
        state.routing = state.derive_routing(self._host)
        state.applied = state.applied[-self._keep :]
        _write_atomic(self.path(state.service, state.environment), state.model_dump_json(indent=1).encode())
        return state.generation

    def put_config(self, config: dict[str, str]) -> str:
        """Keep a rendered configuration by its hash (idempotent); returns the hash."""
        config_hash = digest(config)
        path = self.root / "configs" / f"{config_hash}.json"
        if not path.exists():
            _write_atomic(path, json.dumps(config, sort_keys=True).encode(), mode=0o600)
        return config_hash

    def get_config(self, config_hash: str) -> dict[str, str] | None:
        try:
            data = json.loads((self.root / "configs" / f"{config_hash}.json").read_bytes())
        except FileNotFoundError:
            return None
        return {str(k): str(v) for k, v in data.items()}

    @contextlib.asynccontextmanager
    async def locked(self, service: str, environment: str) -> AsyncIterator[None]:
        """Exclusive use of one (service, environment), across processes too (flock);
        the OS releases it if the holder dies."""
        path = self.root / "locks" / f"{_file_stem(service, environment)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
