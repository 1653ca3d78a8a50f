"""What both benchmark scripts share: output, the machine's description, and the
database to measure against (DATABASE_URL, else an embedded PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console

from shiplog.embedded import EmbeddedPostgres


def make_console(width: int) -> Console:
    """Wide tables on a pipe too (``width`` columns), the terminal's width on a terminal."""
    import sys

    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else width)


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


def machine_env() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@contextlib.contextmanager
def bench_database(
    workdir: Path, env: dict[str, str], progress: Callable[[str], None]
) -> Iterator[tuple[str, EmbeddedPostgres | None]]:
    """``(dsn, embedded server or None)``: DATABASE_URL if set, else an embedded
    PostgreSQL in ``workdir``, stopped afterwards. Notes which in ``env``."""
    if dsn := os.environ.get("DATABASE_URL"):
        env["database"] = f"DATABASE_URL={redact(dsn)}"
        yield dsn, None
        return
    progress(f"DATABASE_URL is not set: starting an embedded PostgreSQL in {workdir}")
    pg = EmbeddedPostgres.start(workdir / "pgdata")
    env["database"] = "embedded (temp dir)"
    try:
        yield pg.dsn, pg
    finally:
        pg.stop()
