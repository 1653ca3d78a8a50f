"""What one host holds for one service, as data: where ``current`` and the two
slots point and which slots run. Pure: read by ``host.HostSession.read_layout``,
compared and recorded by the target, stored in snapshots.

On disk, under ``<root>/<service>``::

    releases/<version>/          one per version, its digest in .shiplog-sha256
    current -> releases/<v>      one release at a time (no ``ports``), or
    current -> slots/<slot>      two slots (blue-green)
    slots/blue -> releases/<v>   each slot names a release...
    slots/blue.running           ...and runs while this marker exists

The marker is written by the target after a slot's restart and removed after its
stop: a host cannot tell the target which processes serve, so the target keeps
that fact beside the links it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from adapters.targets.ssh.config import SLOTS, Slot


@dataclass(frozen=True)
class SlotState:
    release: str | None = None
    running: bool = False


@dataclass(frozen=True)
class Layout:
    base: str
    current: str | None = None
    blue: SlotState = SlotState()
    green: SlotState = SlotState()

    def slot(self, slot: Slot) -> SlotState:
        return self.blue if slot == "blue" else self.green

    def active_slot(self) -> Slot | None:
        """The slot ``current`` points at, or None (no link, or a release itself)."""
        return next((s for s in SLOTS if self.current == slot_dir(self.base, s)), None)

    def slot_of(self, release_dir: str) -> Slot | None:
        """The running slot holding ``release_dir``, the active one first."""
        active = self.active_slot()
        order = sorted(SLOTS, key=lambda s: s != active)
        return next((s for s in order if self.slot(s).release == release_dir and self.slot(s).running), None)

    def serving(self) -> str | None:
        """The release directory that ``current`` leads to."""
        active = self.active_slot()
        return self.slot(active).release if active is not None else self.current

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "slots": {s: {"release": self.slot(s).release, "running": self.slot(s).running} for s in SLOTS},
        }

    @classmethod
    def from_json(cls, base: str, data: dict[str, Any]) -> Layout:
        slots = data.get("slots") or {}
        states = {s: SlotState(**slots[s]) if s in slots else SlotState() for s in SLOTS}
        return cls(base=base, current=data.get("current"), blue=states["blue"], green=states["green"])


def other(slot: Slot) -> Slot:
    return "green" if slot == "blue" else "blue"


def service_dir(root: str, service: str) -> str:
    return f"{root}/{service}"


def release_dir(root: str, service: str, version: str) -> str:
    return f"{root}/{service}/releases/{version}"


def slot_dir(base: str, slot: Slot) -> str:
    return f"{base}/slots/{slot}"


def version_of(release: str) -> str:
    return PurePosixPath(release).name
