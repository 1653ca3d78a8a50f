"""Real OpenSSH servers for the SSH target's tests: several sshd on free ports,
each with its own root directory and its own loopback address (127.0.0.N), i.e.
several "hosts": a service can listen on the same port on each of them.

openssh-server is installed with apt-get when ``/usr/sbin/sshd`` is missing; when
that fails the fixture fails loudly (never skips). Keys are generated per session.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

SSHD = Path("/usr/sbin/sshd")
READY_TIMEOUT_S = 10.0


def ensure_sshd() -> Path:
    """The sshd binary, installing openssh-server if needed; raises if impossible."""
    if SSHD.exists():
        return SSHD
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if not SSHD.exists():
        raise RuntimeError(f"cannot install openssh-server (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return SSHD


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass
class SshdHost:
    """One sshd: its port, its directory, the releases root the tests deploy into."""

    name: str
    dir: Path
    client_key: Path
    address: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.address)

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def hostkey(self) -> Path:
        return self.dir / "hostkey"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True)
        self.root.mkdir()
        keygen(self.hostkey)
        shutil.copy(self.client_key.with_suffix(".pub"), self.dir / "authorized_keys")
        (self.dir / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.hostkey}",
                    f"PidFile {self.dir / 'pid'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    # bash sources ~/.bashrc for a command sent over ssh unless it is
                    # nested (SHLVL >= 1); this machine's ~/.bashrc costs ~100 ms a command
                    "SetEnv SHLVL=1",
                    "",
                ]
            )
        )

    def known_hosts_line(self) -> str:
        key = (self.hostkey.with_suffix(".pub")).read_text().split()
        return f"[{self.address}]:{self.port} {key[0]} {key[1]}\n"

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.dir / "sshd_config")], stdout=log, stderr=log
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd {self.name} exited: {(self.dir / 'sshd.log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex((self.address, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd {self.name} not listening on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class SshdCluster:
    """``count`` sshd hosts sharing one client key and one known_hosts file."""

    def __init__(self, base: Path, count: int) -> None:
        ensure_sshd()
        base.mkdir(parents=True, exist_ok=True)
        self.client_key = base / "clientkey"
        keygen(self.client_key)
        self.user = getpass.getuser()
        self.hosts = [
            SshdHost(f"h{i + 1}", base / f"h{i + 1}", self.client_key, address=f"127.0.0.{i + 1}")
            for i in range(count)
        ]
        self.known_hosts = base / "known_hosts"
        for host in self.hosts:
            host.prepare()
        self.known_hosts.write_text("".join(h.known_hosts_line() for h in self.hosts))

    def start(self) -> None:
        for host in self.hosts:
            host.start()

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()

    def inventory(self) -> list[dict[str, object]]:
        return [
            {
                "name": h.name,
                "host": h.address,
                "port": h.port,
                "user": self.user,
                "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "root": str(h.root),
            }
            for h in self.hosts
        ]


# -- a sample service with two slots -------------------------------------------------

RUN_SH = """#!/bin/sh
# run.sh restart|stop SLOT HOST PORT BASE: the {version} server of one slot on
# HOST:PORT, its pid in BASE/run/SLOT.pid; every call is logged in BASE/restarts.log
set -e
command=$1 slot=$2 host=$3 port=$4 base=$5
mkdir -p "$base/run"
pidfile="$base/run/$slot.pid"
if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    i=0  # until gone, or a zombie nobody reaps (its port is free then)
    while [ $i -lt 250 ] && [ -e /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null; do
        sleep 0.02; i=$((i + 1))
    done
    rm -f "$pidfile"
fi
echo "{version} $command $slot" >> "$base/restarts.log"
if [ "$command" = restart ]; then
    setsid {python} -IS "$(dirname "$0")/server.py" "$host" "$port" {version} </dev/null >/dev/null 2>&1 &
    echo $! > "$pidfile"
fi
"""

#: a bare socket server: python starts in ~30 ms, ~200 ms with http.server imported
SERVER_PY = """import socket, sys

host, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = version.encode()
head = f"HTTP/1.1 200 OK\\r\\nx-shiplog-version: {version}\\r\\ncontent-length: {len(body)}\\r\\n"
response = (head + "connection: close\\r\\n\\r\\n").encode() + body
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
server.listen(16)
while True:
    conn, _ = server.accept()
    with conn:
        conn.recv(65536)
        conn.sendall(response)
"""


def slotted_artifact(directory: Path, version: str) -> Path:
    """A tarball whose ``run.sh`` starts and stops an HTTP server answering
    ``version`` (body and ``x-shiplog-version``) for one slot."""
    path = directory / f"slotted-{version}.tar.gz"
    files = {
        "run.sh": (RUN_SH.format(python=sys.executable, version=version), 0o755),
        "server.py": (SERVER_PY, 0o644),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, (text, mode) in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return path


def slotted_settings(cluster: SshdCluster, ports: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """Release settings for ``slotted_artifact``: two slots, the switch writes the
    active port where a proxy would read it (``<service>/proxy-port``)."""
    return {
        "root": "/nonexistent-default-root",
        "hosts": cluster.inventory(),
        "ports": {"blue": ports[0], "green": ports[1]},
        "restart": "{release_dir}/run.sh restart {slot} {host} {port} {root}/{service}",
        "stop_command": "{release_dir}/run.sh stop {slot} {host} {port} {root}/{service}",
        "switch_command": "echo {port} > {root}/{service}/proxy-port",
        "health_url": "http://{host}:{port}/",
        "url": "http://{host}:{port}/",
        "batch_size": 1,
        **extra,
    }


async def version_at(address: str, port: int) -> str | None:
    """The version a server answers on ``address:port``, None if nothing does."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async with session.get(f"http://{address}:{port}/") as resp:
                return resp.headers.get("x-shiplog-version", f"status {resp.status}")
    except (aiohttp.ClientError, TimeoutError):
        return None


async def served(cluster: SshdCluster, service: str) -> list[str | None]:
    """Per host, what answers where its proxy sends traffic (``proxy-port``), if
    ``current`` leads to the slot of that port; a mismatch is reported as such."""
    out: list[str | None] = []
    for host in cluster.hosts:
        base = host.root / service
        proxy = base / "proxy-port"
        if not proxy.exists():
            out.append(None)
            continue
        port = int(proxy.read_text())
        version = await version_at(host.address, port)
        current = base / "current"
        slot = current.readlink().name if current.is_symlink() else None
        served_dir = current.resolve().name if current.is_symlink() else None
        if served_dir != version:
            version = f"proxy to :{port} answers {version}, current -> {slot} ({served_dir})"
        out.append(version)
    return out


def stop_services(cluster: SshdCluster, service: str) -> None:
    """Stop the servers ``slotted_artifact`` started for ``service``, by their pids."""
    for host in cluster.hosts:
        for pidfile in (host.root / service / "run").glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
