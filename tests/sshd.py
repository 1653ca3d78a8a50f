"""Real OpenSSH servers for the SSH target's tests: several sshd on free ports,
each with its own root directory, i.e. several "hosts".

openssh-server is installed with apt-get when ``/usr/sbin/sshd`` is missing; when
that fails the fixture fails loudly (never skips). Keys are generated per session.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SshdHost:
    """One sshd: its port, its directory, the releases root the tests deploy into."""

    name: str
    dir: Path
    client_key: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

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
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.hostkey}",
                    f"PidFile {self.dir / 'pid'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    def known_hosts_line(self) -> str:
        key = (self.hostkey.with_suffix(".pub")).read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"

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
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
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
        self.hosts = [SshdHost(f"h{i + 1}", base / f"h{i + 1}", self.client_key) for i in range(count)]
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
                "host": "127.0.0.1",
                "port": h.port,
                "user": self.user,
                "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "root": str(h.root),
            }
            for h in self.hosts
        ]
