"""The ``ssh`` target: a service on plain hosts reached over SSH (asyncssh).

Releases live in ``<root>/<service>/releases/<version>`` on each host, ``current``
is switched atomically, hosts are rolled in batches; with ``ports`` every host has
two slots (blue-green). See ``target.py`` for the steps, ``layout.py`` for what a
host holds and ``config.SshSettings`` for the release settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.ssh.config import HostSpec, Inventory, SshSettings, SshTargetConfig
from adapters.targets.ssh.target import SshTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> SshTarget:
    try:
        return SshTarget(SshTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"ssh target config: {exc}") from exc


register_target(SshTarget.TYPE, _create)

__all__ = ["HostSpec", "Inventory", "SshSettings", "SshTarget", "SshTargetConfig"]
