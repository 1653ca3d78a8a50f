"""Configuration of the SSH target and the shape of its release settings.

``SshTargetConfig`` is built by the composition root; ``SshSettings`` is what a
release's ``settings`` hold for this target. Defaults live here as named constants.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_COMMAND_TIMEOUT_S = 300.0
DEFAULT_HEALTH_TIMEOUT_S = 30.0
DEFAULT_HEALTH_INTERVAL_S = 0.5
DEFAULT_APPLIED_KEEP = 1000
DEFAULT_RESTART = "{root}/{service}/current/run.sh restart"

Slot = Literal["blue", "green"]
SLOTS: tuple[Slot, Slot] = ("blue", "green")
#: what every template may use; ``SLOT_FIELDS`` only with two slots (``ports`` set)
FIELDS = frozenset({"root", "service", "environment", "version", "release_dir", "host", "name"})
SLOT_FIELDS = frozenset({"slot", "port", "slot_dir"})


class HostSpec(BaseModel):
    """One host. ``key_file`` is a path to the private key, never the key itself;
    ``known_hosts`` pins the host key (required: no trust on first use)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(default=DEFAULT_PORT, gt=0, lt=65536)
    user: str = Field(min_length=1)
    key_file: Path
    known_hosts: Path
    #: this host's releases root, when it differs from the inventory's ``root``
    root: str | None = None

    def label(self) -> str:
        return f"{self.name} ({self.user}@{self.host}:{self.port})"


class Inventory(BaseModel):
    """The hosts of one environment: a flat ``hosts`` list or named ``groups``
    (deployed in the order given; ``group`` picks one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str = Field(min_length=1)
    hosts: list[HostSpec] = Field(default_factory=list)
    groups: dict[str, list[HostSpec]] = Field(default_factory=dict)
    group: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Inventory:
        if not self.root.startswith("/"):
            raise ValueError(f"root must be an absolute path, got {self.root!r}")
        if self.group is not None and self.group not in self.groups:
            raise ValueError(f"unknown host group {self.group!r}; known: {sorted(self.groups)}")
        names = [h.name for h in self.all_hosts()]
        if not names:
            raise ValueError("the inventory names no host")
        if len(set(names)) != len(names):
            raise ValueError(f"host names must be unique, got {names}")
        return self

    def root_of(self, spec: HostSpec) -> str:
        return spec.root or self.root

    def all_hosts(self) -> list[HostSpec]:
        if self.group is not None:
            return list(self.groups[self.group])
        return [*self.hosts, *(h for members in self.groups.values() for h in members)]


class SshSettings(Inventory):
    """Release settings of the ``ssh`` target: the inventory plus how to deploy.

    Templates (``restart``, hooks, ``health_command``, ``health_url``, ``url``,
    ``stop_command``, ``switch_command``) take ``{root}``, ``{service}``,
    ``{environment}``, ``{version}``, ``{release_dir}``, ``{host}`` (address) and
    ``{name}`` (host name); with ``ports`` also ``{slot}``, ``{port}`` and
    ``{slot_dir}`` (``<root>/<service>/slots/<slot>``).

    ``ports`` turns on two slots per host (blue-green): each slot is a symlink to a
    release, ``current`` points at the active slot, and every step (``rolling``
    too) starts the new version in the other slot before ``current`` moves."""

    restart: str = DEFAULT_RESTART
    pre: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)
    health_command: str | None = None
    health_url: str | None = None
    health_timeout: float = Field(default=DEFAULT_HEALTH_TIMEOUT_S, gt=0)
    #: hex sha256 of the artifact (``sha256:`` prefix allowed); checked before any change
    artifact_sha256: str | None = None
    batch_size: int | None = Field(default=None, ge=1)
    max_unavailable: int | None = Field(default=None, ge=1)
    #: the port of each slot, e.g. ``{blue: 8080, green: 8081}``; None: one release at a time
    ports: dict[Slot, int] | None = None
    #: stops one slot (required with ``ports``)
    stop_command: str | None = None
    #: run on a host after its ``current`` moved to another slot (e.g. reload a proxy)
    switch_command: str | None = None
    #: an instance's URL, reported by ``status`` per host (e.g. ``http://{host}:{port}``)
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _strip_digest(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("artifact_sha256"), str):
            value = data["artifact_sha256"].lower().removeprefix("sha256:")
            data = {**data, "artifact_sha256": value}
        return data

    @model_validator(mode="after")
    def _check_slots(self) -> SshSettings:
        if self.ports is not None:
            if set(self.ports) != set(SLOTS) or self.ports["blue"] == self.ports["green"]:
                raise ValueError(f"ports needs two different ports for blue and green, got {self.ports}")
            if self.stop_command is None:
                raise ValueError("two slots (ports) need a stop_command to stop the old one")
        known = FIELDS | SLOT_FIELDS if self.ports is not None else FIELDS
        for name, template in self.templates().items():
            unknown = _fields(template) - known
            if unknown:
                hint = " (slot fields need ports)" if unknown & SLOT_FIELDS else ""
                raise ValueError(f"{name}: unknown template field(s) {sorted(unknown)}{hint}")
        return self

    @property
    def slotted(self) -> bool:
        return self.ports is not None

    def templates(self) -> dict[str, str]:
        named = {
            "restart": self.restart,
            "health_command": self.health_command,
            "health_url": self.health_url,
            "stop_command": self.stop_command,
            "switch_command": self.switch_command,
            "url": self.url,
        }
        named |= {f"pre[{i}]": hook for i, hook in enumerate(self.pre)}
        named |= {f"post[{i}]": hook for i, hook in enumerate(self.post)}
        return {name: t for name, t in named.items() if t is not None}

    def inventory(self) -> Inventory:
        return Inventory.model_validate(self.model_dump(include={"root", "hosts", "groups", "group"}))


def _fields(template: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from exc
    return {f.split(".", 1)[0].split("[", 1)[0] for _, f, _, _ in parsed if f is not None}


class SshTargetConfig(BaseModel):
    """Everything the SSH target needs; built by the caller, validated here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: where the target keeps its record (applied step ids, last inventory per service)
    state_dir: Path
    #: inventories per environment; a release's settings may name their own
    environments: dict[str, Inventory] = Field(default_factory=dict)
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    command_timeout: float = Field(default=DEFAULT_COMMAND_TIMEOUT_S, gt=0)
    health_interval: float = Field(default=DEFAULT_HEALTH_INTERVAL_S, gt=0)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1)
