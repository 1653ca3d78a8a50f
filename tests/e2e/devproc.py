"""A `shiplog dev` process, as a user starts it, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from shiplog.embedded import free_port

SHIPLOG = [sys.executable, "-m", "shiplog"]


class Dev:
    """A `shiplog dev` process and the environment its neighbours use."""

    def __init__(self, home: Path, metrics_port: int, config: Path | None = None):
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
        }
        # the command API on a port of its own (two tests, or a developer's `shiplog dev`
        # on the default 8765, must not meet)
        self.env.update(
            SHIPLOG_HOME=str(home), SHIPLOG_METRICS_PORT=str(metrics_port), SHIPLOG_API_PORT=str(free_port())
        )
        if config is not None:
            self.env["SHIPLOG_CONFIG"] = str(config)
        self.home = home
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> None:
        self.output = []
        self.proc = subprocess.Popen(
            [*SHIPLOG, "dev"],
            env=self.env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stderr
            for line in self.proc.stderr:
                self.output.append(line)
                if "shiplog is running" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise AssertionError("shiplog dev did not start:\n" + "".join(self.output))

    def stop(self) -> int:
        assert self.proc
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def cli(
        self, *args: str, check: bool = True, token: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI beside this dev; commands go to its API with ``token`` (default:
        the admin token `shiplog dev` keeps under its home)."""
        env = self.env if token is None else {**self.env, "SHIPLOG_TOKEN": token}
        result = subprocess.run([*SHIPLOG, *args], env=env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"shiplog {' '.join(args)}: {result.returncode}\n{result.stderr}")
        return result

    def replay(self, *types: str) -> list[dict]:
        out = self.cli("audit", "replay", "--json", *(a for t in types for a in ("--type", t))).stdout
        return [json.loads(line) for line in out.splitlines()]

    def wait_for_events(self, n: int, *types: str, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.replay(*types)
            if len(events) >= n or time.monotonic() > deadline:
                return events
            time.sleep(0.2)

    def token(self, user: str, *roles: str) -> str:
        """An API token for ``user`` (what an administrator issues)."""
        return self.cli("token", "create", "--user", user, "--roles", ",".join(roles)).stdout.strip()

    @property
    def runtime(self) -> dict[str, str]:
        return json.loads((self.home / "dev.json").read_text())


def running_dev(tmp_path: Path, config: Path | None = None) -> Iterator[Dev]:
    d = Dev(tmp_path / "home", free_port(), config)
    try:
        yield d
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGINT)
            try:
                d.proc.wait(30)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
