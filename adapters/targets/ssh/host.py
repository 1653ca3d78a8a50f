"""One host over SSH: run a command, upload a file, read the layout, switch a link.

Every failure becomes ``HostFailed`` naming the host; key material never appears
in a message (only the path of the key file is known here).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh

from adapters.targets.ssh.config import HostSpec
from adapters.targets.ssh.layout import Layout, SlotState


class HostFailed(Exception):
    """Something went wrong on one host; ``host`` is its name."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"host {host}: {message}")


class HostSession:
    def __init__(self, spec: HostSpec, conn: asyncssh.SSHClientConnection, *, timeout: float) -> None:
        self.spec = spec
        self.conn = conn
        self.timeout = timeout

    async def run(self, command: str, *, what: str) -> str:
        """Run ``command`` under ``sh``; its stdout, or ``HostFailed`` on a non-zero exit."""
        try:
            result = await self.conn.run(command, check=False, timeout=self.timeout)
        except (OSError, asyncssh.Error) as exc:
            raise HostFailed(self.spec.name, f"{what}: {type(exc).__name__}: {exc}") from exc
        if result.exit_status != 0:
            stderr = str(result.stderr or "").strip()[-500:]
            raise HostFailed(self.spec.name, f"{what} exited {result.exit_status}: {stderr}")
        return str(result.stdout or "")

    async def succeeds(self, command: str) -> bool:
        try:
            result = await self.conn.run(command, check=False, timeout=self.timeout)
        except (OSError, asyncssh.Error):
            return False
        return result.exit_status == 0

    async def upload(self, local: Path, remote: str) -> None:
        try:
            async with self.conn.start_sftp_client() as sftp:
                await sftp.put(str(local), remote)
        except (OSError, asyncssh.Error) as exc:
            raise HostFailed(self.spec.name, f"upload: {type(exc).__name__}: {exc}") from exc

    async def read_layout(self, base: str) -> Layout:
        """``current``, both slot links and their running markers, in one round trip."""
        script = (
            f"b={q(base)}; for l in current slots/blue slots/green; do"
            ' if [ -L "$b/$l" ]; then readlink "$b/$l"; else echo; fi; done;'
            ' for s in blue green; do if [ -e "$b/slots/$s.running" ]; then echo 1; else echo 0; fi; done'
        )
        lines = (await self.run(script, what="read layout")).split("\n")
        if len(lines) < 5:
            raise HostFailed(self.spec.name, f"read layout: unexpected output {lines!r}")
        current, blue, green, blue_running, green_running = lines[:5]
        return Layout(
            base=base,
            current=current or None,
            blue=SlotState(release=blue or None, running=blue_running == "1"),
            green=SlotState(release=green or None, running=green_running == "1"),
        )

    async def switch(self, link: str, target: str | None) -> None:
        """Point ``link`` at ``target`` atomically (a temp link renamed over it);
        ``None`` removes the link."""
        if target is None:
            await self.run(f"rm -f {q(link)}", what=f"remove {link.rsplit('/', 1)[-1]}")
            return
        tmp = f"{link}.tmp-{uuid.uuid4().hex[:8]}"
        parent = link.rsplit("/", 1)[0]
        await self.run(
            f"mkdir -p {q(parent)} && ln -sfn {q(target)} {q(tmp)} && mv -T {q(tmp)} {q(link)}",
            what=f"switch {link.rsplit('/', 1)[-1]}",
        )


def q(value: str) -> str:
    return shlex.quote(value)


@asynccontextmanager
async def connect(
    spec: HostSpec, *, connect_timeout: float, command_timeout: float
) -> AsyncIterator[HostSession]:
    """A session on the host, its key pinned by ``spec.known_hosts``."""
    try:
        conn = await asyncssh.connect(
            spec.host,
            port=spec.port,
            username=spec.user,
            client_keys=[str(spec.key_file)],
            known_hosts=str(spec.known_hosts),
            agent_path=None,
            connect_timeout=connect_timeout,
        )
    except (OSError, asyncssh.Error) as exc:
        raise HostFailed(
            spec.name, f"unreachable ({spec.host}:{spec.port}): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield HostSession(spec, conn, timeout=command_timeout)
    finally:
        conn.close()
        await conn.wait_closed()
