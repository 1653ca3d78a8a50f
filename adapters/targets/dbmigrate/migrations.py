"""Migration sets on disk, read and checked without touching a database.

A set is a directory of ``NNNN_name.up.sql`` files, each with an optional
``NNNN_name.down.sql``. A line ``-- shiplog: contract`` in an up file marks a
*contract* migration: it runs only once the new version is fully promoted
(expand/contract); every other migration is an *expand* one.

Checksums are the sha256 of the up file with line endings normalised, so a
checkout on another OS does not look like edited history.

A directory holding an ``alembic.ini`` is an Alembic project instead: its revisions,
oldest first, become the set, with the SQL Alembic renders for them (``alembic_project.py``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from adapters.targets.dbmigrate import alembic_project
from events.errors import InvalidInput

MigrationKind = Literal["expand", "contract"]

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.(?P<direction>up|down)\.sql$")
_CONTRACT = re.compile(r"^\s*--\s*shiplog:\s*contract\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_file: Path
    down_file: Path | None
    up_sql: str
    checksum: str
    kind: MigrationKind
    down_sql: str | None = None
    #: the Alembic revision id, for a set rendered from an Alembic project
    alembic_revision: str | None = None

    @property
    def label(self) -> str:
        return self.up_file.name


@dataclass(frozen=True)
class Applied:
    """One row of the history table."""

    version: int
    name: str
    checksum: str
    kind: str


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.replace("\r\n", "\n").encode()).hexdigest()


def load_set(directory: Path) -> list[Migration]:
    """The migrations of ``directory`` in version order; raises ``InvalidInput`` on a
    missing directory or a duplicate version; a down file without its up file is ignored."""
    ini = alembic_project.ini_of(directory)
    if ini is not None:
        return _alembic_set(ini)
    if not directory.is_dir():
        raise InvalidInput(f"migrations directory {directory} does not exist")
    ups: dict[int, tuple[str, Path]] = {}
    downs: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if match is None:
            continue
        version = int(match["version"])
        if match["direction"] == "up":
            if version in ups:
                raise InvalidInput(
                    f"two up migrations with version {version}: {ups[version][1].name}, {path.name}"
                )
            ups[version] = (match["name"], path)
        else:
            downs[version] = path
    migrations = []
    for version in sorted(ups):
        name, path = ups[version]
        sql = path.read_text()
        migrations.append(
            Migration(
                version=version,
                name=name,
                up_file=path,
                down_file=downs.get(version),
                up_sql=sql,
                checksum=checksum(sql),
                kind="contract" if _CONTRACT.search(sql) else "expand",
                down_sql=downs[version].read_text() if version in downs else None,
            )
        )
    return migrations


def _alembic_set(ini: Path) -> list[Migration]:
    out = []
    for index, rev in enumerate(alembic_project.render_project(ini), start=1):
        slug = re.sub(r"[^a-z0-9]+", "_", rev.doc.lower()).strip("_")[:40] or "revision"
        out.append(
            Migration(
                version=index,
                name=f"{rev.revision}_{slug}",
                up_file=rev.path,
                down_file=rev.path,
                up_sql=rev.up_sql,
                checksum=checksum(rev.up_sql),
                kind="contract" if rev.contract else "expand",
                down_sql=rev.down_sql,
                alembic_revision=rev.revision,
            )
        )
    return out


def validate(applied: list[Applied], migrations: list[Migration]) -> list[str]:
    """What is wrong with the applied history given the set on disk (Flyway's
    ``validate``): an applied migration edited or missing. Empty when all is well."""
    by_version = {m.version: m for m in migrations}
    problems = []
    for row in applied:
        migration = by_version.get(row.version)
        if migration is None:
            problems.append(f"applied migration {row.version:04d}_{row.name} is missing from the set")
        elif migration.checksum != row.checksum:
            problems.append(
                f"applied migration {migration.label} was edited after it ran "
                f"(checksum {row.checksum[:12]}… recorded, {migration.checksum[:12]}… on disk)"
            )
    return problems


def pending(
    applied: list[Applied], migrations: list[Migration], *, contract: bool
) -> tuple[list[Migration], list[Migration]]:
    """``(to_run, held_back)``: the migrations not yet applied, in order. Without
    ``contract`` the run stops before the first pending contract migration, so the
    history always stays in version order; that one and the rest are held back."""
    done = {row.version for row in applied}
    todo = [m for m in migrations if m.version not in done]
    if contract:
        return todo, []
    for index, migration in enumerate(todo):
        if migration.kind == "contract":
            return todo[:index], todo[index:]
    return todo, []


def to_undo(applied: list[Applied], version: int | None) -> list[Applied]:
    """The applied migrations newer than ``version``, newest first."""
    floor = -1 if version is None else version
    return sorted((row for row in applied if row.version > floor), key=lambda r: r.version, reverse=True)
