"""What the SSH target does on one host for one release: install it, start or stop
a slot, move ``current``, and converge to a recorded ``Layout`` (restore and the
rollback of a stopped batch). Every failure is ``HostFailed`` naming the host.

Each operation reads the host's layout first and does only what is missing, so a
step re-driven after a crash finds the hosts it already did and leaves them be.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from adapters.targets.ssh.config import SLOTS, HostSpec, Slot, SshSettings
from adapters.targets.ssh.host import HostFailed, HostSession, q
from adapters.targets.ssh.layout import Layout, other, release_dir, service_dir, slot_dir, version_of

DIGEST_FILE = ".shiplog-sha256"


@dataclass(frozen=True)
class Artifact:
    """The artifact of the release being deployed, checked against ``sha256``."""

    path: Path
    sha256: str


class HostOps:
    def __init__(
        self,
        host: HostSession,
        settings: SshSettings,
        *,
        service: str,
        environment: str,
        health_interval: float,
        artifact: Artifact | None = None,
        stop_settings: SshSettings | None = None,
    ) -> None:
        self.host = host
        self.spec: HostSpec = host.spec
        self.settings = settings
        self.service, self.environment = service, environment
        self.health_interval = health_interval
        self.artifact = artifact
        #: the settings that know how to stop a slot, when ``settings`` (e.g. an old
        #: snapshot's, from before two slots) do not
        self.stop_settings = stop_settings if stop_settings is not None else settings
        self.root = settings.root_of(self.spec)
        self.base = service_dir(self.root, service)
        self.link = f"{self.base}/current"
        #: the layout as last read, dropped by every change this object makes
        self._layout: Layout | None = None

    # -- steps -------------------------------------------------------------------------

    async def layout(self) -> Layout:
        if self._layout is None:
            self._layout = await self.host.read_layout(self.base)
        return self._layout

    async def deploy_single(self, version: str) -> None:
        """One release at a time (no slots): install, pre hooks, switch, restart,
        health, post hooks."""
        directory = await self.install(version)
        values = self.values(version)
        await self.hooks(self.settings.pre, directory, values, "pre")
        await self.relink(self.link, directory)
        await self.host.run(_cd(directory, self.fmt(self.settings.restart, values)), what="restart")
        await self.health(values)
        await self.hooks(self.settings.post, directory, values, "post")

    async def preview(self, version: str) -> Slot:
        """The release running in a slot, started in the inactive one if needed."""
        directory = release_dir(self.root, self.service, version)
        have = await self.layout()
        found = have.slot_of(directory)
        if found is not None:
            return found
        active = have.active_slot()
        slot: Slot = other(active) if active is not None else "blue"
        await self.install(version)
        old = have.slot(slot)
        if old.running and old.release is not None:  # an old colour not scaled down yet
            await self.stop(slot, old.release)
        await self.hooks(self.settings.pre, directory, self.values(version, slot), "pre")
        await self.relink(slot_dir(self.base, slot), directory)
        await self.start(slot, directory)
        return slot

    async def switch(self, version: str) -> bool:
        """``current`` to the slot running the release (previewed first if needed);
        False when it already pointed there."""
        slot = await self.preview(version)
        if (await self.layout()).active_slot() == slot:
            return False
        directory = release_dir(self.root, self.service, version)
        await self.move_current(slot, directory)
        await self.hooks(self.settings.post, directory, self.values(version, slot), "post")
        return True

    async def rolling_slotted(self, version: str) -> None:
        """Preview, switch and stop the old slot: a zero-downtime rolling per host."""
        await self.switch(version)
        await self.scale_down(version)

    async def scale_down(self, version: str) -> Slot | None:
        """Stop the slot that is not the release's; refused where the release is not
        the active slot (that would stop what serves)."""
        directory = release_dir(self.root, self.service, version)
        have = await self.layout()
        active = have.active_slot()
        if active is None or have.slot(active).release != directory:
            raise HostFailed(
                self.spec.name,
                f"{version} is not the active slot (current -> {have.current}); not stopping the other",
            )
        old = other(active)
        state = have.slot(old)
        if not state.running:
            return None
        await self.stop(old, state.release)
        return old

    async def converge(self, wanted: Layout) -> bool:
        """Bring the host to ``wanted``: start what it ran first, then move
        ``current``, then stop what it did not run. False when nothing differed."""
        have = await self.layout()
        if have == wanted:
            return False
        for slot in SLOTS:
            w, h = wanted.slot(slot), have.slot(slot)
            if w.running and w.release is not None and (w.release != h.release or not h.running):
                if h.running and h.release is not None and h.release != w.release:
                    await self.stop(slot, h.release)
                await self.relink(slot_dir(self.base, slot), w.release)
                await self.start(slot, w.release)
        if have.current != wanted.current:
            active = wanted.active_slot()
            if active is not None:
                await self.move_current(active, wanted.slot(active).release)
            else:
                await self.relink(self.link, wanted.current)
                if wanted.current is not None:
                    restart = self.fmt(self.settings.restart, self.values(version_of(wanted.current)))
                    await self.host.run(_cd(wanted.current, restart), what="restart")
        for slot in SLOTS:
            w, h = wanted.slot(slot), have.slot(slot)
            if h.running and not w.running:
                await self.stop(slot, h.release)
            if w.release != h.release and not w.running:
                await self.relink(slot_dir(self.base, slot), w.release)
        return True

    # -- pieces --------------------------------------------------------------------------

    async def install(self, version: str) -> str:
        """The release directory, uploaded and unpacked unless its digest matches."""
        directory = release_dir(self.root, self.service, version)
        if self.artifact is None:
            raise HostFailed(self.spec.name, f"release {version} is not running here and no artifact given")
        local, digest = self.artifact.path, self.artifact.sha256
        marker, partial = f"{directory}/{DIGEST_FILE}", f"{directory}.partial"
        # one round trip: installed already, or a clean partial directory to upload into
        probe = (
            f'if [ "$(cat {q(marker)} 2>/dev/null)" = {q(digest)} ]; then echo installed;'
            f" else rm -rf {q(partial)} && mkdir -p {q(partial)}; fi"
        )
        if (await self.host.run(probe, what="read release digest")).strip() == "installed":
            return directory
        remote = f"{partial}/{local.name}"
        await self.host.upload(local, remote)
        unpack = (
            f"tar -xf {q(remote)} -C {q(partial)} && rm -f {q(remote)}"
            if _is_tarball(local.name)
            else f"chmod +x {q(remote)}"
        )
        finish = (
            f"got=$(sha256sum {q(remote)} | cut -d' ' -f1);"
            f' if [ "$got" != {q(digest)} ]; then'
            f' echo "uploaded artifact digest sha256:$got != sha256:{digest}" >&2; exit 3; fi;'
            f" {unpack} && printf %s {q(digest)} > {q(partial + '/' + DIGEST_FILE)}"
            f" && rm -rf {q(directory)} && mv -T {q(partial)} {q(directory)}"
        )
        await self.host.run(finish, what="install release")
        return directory

    async def start(self, slot: Slot, directory: str) -> None:
        """Restart the slot on its port, mark it running, wait until healthy."""
        values = self.values(version_of(directory), slot)
        restart = self.fmt(self.settings.restart, values)
        self._layout = None
        await self.host.run(
            f"cd {q(directory)} && {{ {restart}\n}} && touch {q(self._marker(slot))}", what=f"restart {slot}"
        )
        await self.health(values)

    async def stop(self, slot: Slot, directory: str | None) -> None:
        settings = self.stop_settings
        unmark = f"rm -f {q(self._marker(slot))}"
        self._layout = None
        if directory is not None and settings.stop_command is not None:
            values = self.values(version_of(directory), slot, settings)
            stop = self.fmt(settings.stop_command, values)
            await self.host.run(f"cd {q(directory)} && {{ {stop}\n}} && {unmark}", what=f"stop {slot}")
        else:
            await self.host.run(unmark, what=f"mark {slot} stopped")

    async def relink(self, link: str, target: str | None) -> None:
        self._layout = None
        await self.host.switch(link, target)

    async def move_current(self, slot: Slot, directory: str | None) -> None:
        await self.relink(self.link, slot_dir(self.base, slot))
        if self.settings.switch_command is not None and directory is not None:
            values = self.values(version_of(directory), slot)
            await self.host.run(_cd(directory, self.fmt(self.settings.switch_command, values)), what="switch")

    async def hooks(self, hooks: list[str], directory: str, values: dict[str, str], when: str) -> None:
        for hook in hooks:
            await self.host.run(_cd(directory, self.fmt(hook, values)), what=f"{when} hook {hook!r}")

    async def health(self, values: dict[str, str]) -> None:
        settings = self.settings
        if settings.health_command is None and settings.health_url is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.health_timeout
        while not await self._healthy(values):
            if loop.time() >= deadline:
                raise HostFailed(self.spec.name, f"not healthy within {settings.health_timeout}s")
            await asyncio.sleep(self.health_interval)

    async def _healthy(self, values: dict[str, str]) -> bool:
        command, url = self.settings.health_command, self.settings.health_url
        if command is not None and not await self.host.succeeds(self.fmt(command, values)):
            return False
        if url is not None:
            try:
                timeout = aiohttp.ClientTimeout(total=5)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.get(self.fmt(url, values)) as response:
                        return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False
        return True

    def values(
        self, version: str, slot: Slot | None = None, settings: SshSettings | None = None
    ) -> dict[str, str]:
        return template_values(
            settings or self.settings, self.spec, self.service, self.environment, version, slot
        )

    def fmt(self, template: str, values: dict[str, str]) -> str:
        try:
            return template.format(**values)
        except (KeyError, IndexError) as exc:  # e.g. {port} where the host has no slots
            raise HostFailed(self.spec.name, f"template {template!r}: no value for {exc}") from exc

    def _marker(self, slot: Slot) -> str:
        return f"{slot_dir(self.base, slot)}.running"


def template_values(
    settings: SshSettings, spec: HostSpec, service: str, environment: str, version: str, slot: Slot | None
) -> dict[str, str]:
    root = settings.root_of(spec)
    values = {
        "root": root,
        "service": service,
        "environment": environment,
        "version": version,
        "release_dir": release_dir(root, service, version),
        "host": spec.host,
        "name": spec.name,
    }
    if slot is not None and settings.ports is not None:
        values |= {
            "slot": slot,
            "port": str(settings.ports[slot]),
            "slot_dir": slot_dir(service_dir(root, service), slot),
        }
    return values


def _cd(directory: str, command: str) -> str:
    return f"cd {q(directory)} && {command}"


def _is_tarball(name: str) -> bool:
    return name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))
