"""Starting, recognising and stopping the local target's processes.

Every process is started in its own session (``start_new_session=True``), so the
death of the driving process does not take it down, and is stopped as a process
group (SIGTERM, then SIGKILL). A process is recognised by pid *and* start time, so
a pid the kernel has handed to someone else is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Mapping
from pathlib import Path

import aiohttp

_POLL_S = 0.02
_PROBE_TIMEOUT_S = 1.0

#: Popen handles of the children this process started, shared by every target in the
#: process, so a child that exits is reaped (no zombie that looks alive) whichever
#: target instance notices it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class ProcessFailed(Exception):
    """A process could not be started, died early, or never became healthy."""


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if unknown."""
    stat = _read_stat(pid)
    return stat[1] if stat else None


def _read_stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether the process we started as ``pid`` (started at ``ticks``) still runs."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    if not Path("/proc/self/stat").exists():  # no procfs: trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _read_stat(pid)
    if stat is None:
        return False
    state, now_ticks = stat
    if state in ("Z", "X"):
        return False
    return ticks is None or now_ticks == ticks


def exit_code(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return child.returncode if child is not None else None


def spawn(argv: list[str], *, env: Mapping[str, str], cwd: str | None, log: Path) -> tuple[int, int | None]:
    """Start ``argv`` in a new session, output appended to ``log``; returns (pid, start ticks)."""
    try:
        with open(log, "ab") as out:
            child = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise ProcessFailed(f"cannot start {argv[0]!r}: {exc}") from exc
    _CHILDREN[child.pid] = child
    return child.pid, start_ticks(child.pid)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


async def stop(pid: int, ticks: int | None, *, grace: float) -> None:
    """Stop the process group of ``pid``: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if not is_alive(pid, ticks):
        _CHILDREN.pop(pid, None)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while is_alive(pid, ticks):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        await asyncio.sleep(_POLL_S)
    _CHILDREN.pop(pid, None)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, *, avoid: Collection[int] = (), within: tuple[int, int] | None = None) -> int:
    """A port nobody listens on (and not in ``avoid``), from ``within`` or the OS's range."""
    if within is not None:
        for port in range(within[0], within[1] + 1):
            if port not in avoid and port_is_free(host, port):
                return port
        raise ProcessFailed(f"no free port in {within[0]}..{within[1]}")
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise ProcessFailed("no free port")


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


async def wait_healthy(
    session: aiohttp.ClientSession,
    url: str,
    *,
    pid: int,
    ticks: int | None,
    limit: float,
    log: Path,
) -> None:
    """Wait until ``url`` answers 200; raise ProcessFailed if the process dies or time runs out."""
    deadline = time.monotonic() + limit
    last = "no answer"
    while True:
        if not is_alive(pid, ticks):
            code = exit_code(pid)
            raise ProcessFailed(
                f"process {pid} exited (code {code}) before {url} answered 200; log: {log_tail(log)}"
            )
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = type(exc).__name__
        if time.monotonic() > deadline:
            raise ProcessFailed(f"{url} did not answer 200 within {limit:g}s (last: {last})")
        await asyncio.sleep(0.05)
