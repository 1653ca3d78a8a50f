"""Alembic projects as migration sets: each revision's SQL, rendered by Alembic itself.

A team that already uses Alembic keeps its ``alembic.ini``, ``env.py`` and revision
scripts; the release's ``migrations`` setting names the project directory (or its
``alembic.ini``). Alembic's offline mode (``alembic upgrade A:B --sql``) renders each
revision's upgrade and downgrade as the SQL Alembic would run — including its own
``alembic_version`` bookkeeping, so the project's tooling still sees where the
database is — and the dbmigrate target runs that SQL like a SQL-file set: under the
advisory lock, each revision in its own transaction, with a checksum (of the
rendered upgrade) recorded so an edited revision is refused before anything runs.

The revisions must form one line (one head, no merges), and a revision must render
offline: one that reads the database while migrating (``op.get_bind()``) cannot.
A docstring line ``shiplog: contract`` marks a contract revision.

Rendering runs the project's ``env.py`` in a child Python (``python -m
adapters.targets.dbmigrate.alembic_render INI``), as ``alembic`` itself would, so the
project's imports never load into shiplog's process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from events.errors import InvalidInput

RENDER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    doc: str
    path: Path
    up_sql: str
    down_sql: str
    contract: bool


def ini_of(location: Path) -> Path | None:
    """The ``alembic.ini`` of a migrations setting, if it names an Alembic project."""
    if location.is_file() and location.suffix == ".ini":
        return location
    candidate = location / "alembic.ini"
    return candidate if candidate.is_file() else None


def render_project(ini: Path, *, python: str = sys.executable) -> list[Revision]:
    """Every revision of the project, oldest first, with its SQL; ``InvalidInput`` when
    the project cannot be rendered (branches, an error in a revision, no alembic)."""
    try:
        done = subprocess.run(
            [python, "-m", "adapters.targets.dbmigrate.alembic_render", str(ini)],
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT_S,
            cwd=ini.parent,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidInput(f"rendering the Alembic project {ini} took over {RENDER_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidInput(f"cannot render the Alembic project {ini}: {tail}")
    return [
        Revision(
            revision=r["revision"],
            down_revision=r["down_revision"],
            doc=r["doc"],
            path=Path(r["path"]),
            up_sql=r["up_sql"],
            down_sql=r["down_sql"],
            contract=r["contract"],
        )
        for r in json.loads(done.stdout)
    ]
