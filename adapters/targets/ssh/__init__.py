"""The ``ssh`` target: a service on plain hosts reached over SSH (asyncssh).

Releases live in ``<root>/<service>/releases/<version>`` on each host, ``current``
is switched atomically, hosts are rolled in batches; with ``ports`` every host has
two slots (blue-green). See ``target.py`` for the steps, ``layout.py`` for what a
host holds and ``config.SshSettings`` for the release settings.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.ssh.config import HostSpec, Inventory, SshSettings, SshTargetConfig
from adapters.targets.ssh.target import SshTarget

register_target(SshTarget.TYPE, configured(SshTarget, SshTargetConfig), SshSettings)

__all__ = ["HostSpec", "Inventory", "SshSettings", "SshTarget", "SshTargetConfig"]
