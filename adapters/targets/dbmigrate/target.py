"""``DbMigrateTarget``: a release's SQL migrations applied to its PostgreSQL database.

Release settings (``Release.settings``, see ``MigrationSettings``): ``database_url``
(resolved by the caller from a secret reference), ``migrations`` (the directory of
``NNNN_name.up.sql`` / ``.down.sql`` files), optional ``history_schema`` and
``contract_on`` (step kinds that run contract migrations, default ``promote``).

Every apply or restore, in order: take the advisory lock of (database, history
schema) — waiting up to ``lock_timeout`` for another deployment —, return the
recorded result if the step id was already applied, verify the checksums of every
applied migration (nothing runs when one was edited), then run each migration in its
own transaction together with its history row. Step results are recorded in the
database itself (``shiplog_migration_steps``), beside the history they describe.

Which database: ``snapshot``, ``status`` and ``restore`` use the release settings they
are given (validated as ``apply`` validates them); without them, the settings of the
last step applied to the service by this process, else the config's ``databases``.
A snapshot never holds the database URL, so a process that restarted between the
snapshot and its restore needs the settings (or ``databases``) to restore it.

``migrations`` may also name an Alembic project (a directory with ``alembic.ini``):
its revisions run as the SQL Alembic renders for them (see ``alembic_project.py``); a
database Alembic migrated before is baselined from its ``alembic_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from adapters.targets import (
    Capabilities,
    Release,
    Snapshot,
    Step,
    StepResult,
    TargetStatus,
    Track,
    settings_error,
)
from adapters.targets.dbmigrate import migrations as ms
from adapters.targets.dbmigrate.config import DbMigrateTargetConfig, MigrationSettings
from events.errors import AdapterUnavailable, InvalidInput

FORMAT = 1
_LOCK_POLL_S = 0.1


class StepFailed(Exception):
    """The step cannot be done as asked; becomes ``StepResult(ok=False)``."""


def lock_key(database: str, schema: str) -> int:
    """The advisory lock key of one history: a signed 64-bit hash of database and schema."""
    digest = hashlib.sha256(f"shiplog-migrate:{database}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _version_label(version: int | None) -> str | None:
    return None if version is None else f"{version:04d}"


class DbMigrateTarget:
    TYPE = "dbmigrate"
    capabilities = Capabilities(reversible=False)

    def __init__(self, config: DbMigrateTargetConfig) -> None:
        self.config = config
        #: settings seen on applied releases, in memory only (they hold the database URL)
        self._known: dict[str, MigrationSettings] = dict(config.databases)

    # -- the Target protocol ---------------------------------------------------------

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """The schema version now (the newest applied migration) plus, when the database
        is no larger than ``dump_limit_bytes``, a custom-format pg_dump in the state dir;
        when no dump is taken the snapshot says why."""
        database = self._settings(service, environment, settings)
        async with self._connected(database) as conn:
            applied = await self._applied(conn, database.history_schema)
            size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        version = max((row.version for row in applied), default=None)
        dump = await self._dump(database, service, environment, size, version)
        return Snapshot(
            service=service,
            environment=environment,
            version=_version_label(version),
            state={
                "format": FORMAT,
                "schema_version": version,
                "applied": [row.version for row in applied],
                "database_size": size,
                "dump": dump,
            },
        )

    async def apply(self, step: Step) -> StepResult:
        """Run the pending migrations: expand ones only, or contract ones too when the
        step's kind promotes (``contract_on``); a step id already applied returns its
        recorded result with ``already_applied=True``."""
        settings = self._remember(step.release)
        contract = step.kind in settings.contract_on

        async def action(conn: asyncpg.Connection, migrations: list[ms.Migration]) -> dict[str, Any]:
            applied = await self._applied(conn, settings.history_schema)
            to_run, held_back = ms.pending(applied, migrations, contract=contract)
            ran = []
            for migration in to_run:
                await self._run_up(conn, settings.history_schema, migration)
                ran.append(migration.label)
            version = max([m.version for m in to_run] + [r.version for r in applied], default=None)
            return {"ran": ran, "held_back": [m.label for m in held_back], "schema_version": version}

        return await self._step(
            settings, key=f"{step.deployment_id}/{step.step_id}", step_id=step.step_id, action=action
        )

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """One ``stable`` track whose version is the schema version (``"0003"``, or
        ``"none"`` before the first migration); ``reachable`` is whether the database
        answers."""
        database = self._settings(service, environment, settings)
        try:
            async with self._connected(database) as conn:
                applied = await self._applied(conn, database.history_schema)
        except AdapterUnavailable:
            return TargetStatus(service=service, environment=environment, reachable=False)
        version = max((row.version for row in applied), default=None)
        track = Track(version=_version_label(version) or "none", role="stable", weight=100)
        return TargetStatus(service=service, environment=environment, reachable=True, tracks=[track])

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Back to the snapshot's schema version: the down-migrations of everything
        applied since, newest first, each in its own transaction; when one of them has
        no down file, the snapshot's dump is restored instead (``pg_restore --clean``
        after dropping the database's schemas — data written since is lost). Restoring
        an already-restored snapshot does nothing. The snapshot names no database (its
        URL is a secret): ``settings`` do, as for ``snapshot``."""
        database = self._settings(snapshot.service, snapshot.environment, settings)
        state = snapshot.state
        version = state.get("schema_version")
        dump = state.get("dump") or {}
        snapshot_key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]

        async def action(conn: asyncpg.Connection, migrations: list[ms.Migration]) -> dict[str, Any]:
            applied = await self._applied(conn, database.history_schema)
            undo = ms.to_undo(applied, version)
            by_version = {m.version: m for m in migrations}
            missing = [row for row in undo if by_version[row.version].down_sql is None]
            if not missing:
                for row in undo:
                    await self._run_down(conn, database.history_schema, by_version[row.version])
                return {
                    "method": "down",
                    "undone": [by_version[r.version].label for r in undo],
                    "schema_version": version,
                }
            if not dump.get("path"):
                raise StepFailed(
                    f"no down migration for {', '.join(by_version[r.version].label for r in missing)} "
                    f"and the snapshot has no dump ({dump.get('skipped', 'none taken')})"
                )
            await self._restore_dump(conn, database, Path(dump["path"]))
            return {"method": "dump", "dump": dump["path"], "schema_version": version}

        return await self._step(
            database, key=f"restore/{step_id}/{snapshot_key}", step_id=step_id, action=action
        )

    # -- one step under the lock -------------------------------------------------------

    async def _step(
        self,
        settings: MigrationSettings,
        *,
        key: str,
        step_id: str,
        action: Callable[[asyncpg.Connection, list[ms.Migration]], Awaitable[dict[str, Any]]],
    ) -> StepResult:
        migrations = await asyncio.to_thread(ms.load_set, settings.migrations)
        schema = settings.history_schema
        async with self._connected(settings) as conn:
            try:
                await self._lock(conn, schema)
            except StepFailed as exc:
                return StepResult(step_id=step_id, ok=False, error=str(exc))
            try:
                await self._ensure_tables(conn, schema)
                recorded = await conn.fetchval(
                    f'SELECT result FROM "{schema}".shiplog_migration_steps WHERE key = $1', key
                )
                if recorded is not None:
                    return StepResult.model_validate({**json.loads(recorded), "already_applied": True})
                await self._baseline(conn, schema, migrations)
                problems = ms.validate(await self._applied(conn, schema), migrations)
                if problems:
                    return StepResult(
                        step_id=step_id, ok=False, error="refused, nothing ran: " + "; ".join(problems)
                    )
                try:
                    detail = await action(conn, migrations)
                except StepFailed as exc:
                    return StepResult(step_id=step_id, ok=False, error=str(exc))
                except asyncpg.PostgresError as exc:
                    return StepResult(step_id=step_id, ok=False, error=f"migration failed: {exc}")
                result = StepResult(step_id=step_id, ok=True, detail=detail)
                # a dump restore may have replaced the tables: make sure they exist
                await self._ensure_tables(conn, schema)
                await conn.execute(
                    f'INSERT INTO "{schema}".shiplog_migration_steps (key, result) VALUES ($1, $2) '
                    "ON CONFLICT (key) DO NOTHING",
                    key,
                    json.dumps(result.model_dump(mode="json")),
                )
                return result
            finally:
                # closing the connection would release it too; a broken one must not mask the cause
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await conn.execute("SELECT pg_advisory_unlock_all()")

    async def _lock(self, conn: asyncpg.Connection, schema: str) -> None:
        database = await conn.fetchval("SELECT current_database()")
        key = lock_key(database, schema)
        deadline = time.monotonic() + self.config.lock_timeout
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if time.monotonic() >= deadline:
                raise StepFailed(
                    f"another deployment is migrating database {database!r} (schema {schema!r}, "
                    f"advisory lock {key}); gave up after {self.config.lock_timeout:g}s"
                )
            await asyncio.sleep(_LOCK_POLL_S)

    # -- the database --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connected(self, settings: MigrationSettings) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await asyncpg.connect(settings.database_url)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise AdapterUnavailable(f"dbmigrate: cannot connect to the database: {exc}") from exc
        try:
            yield conn
        finally:
            await conn.close()

    @classmethod
    async def _baseline(cls, conn: asyncpg.Connection, schema: str, migrations: list[ms.Migration]) -> None:
        """A database Alembic migrated before shiplog did: its ``alembic_version`` says
        where it is, and the revisions up to there are recorded as applied (Flyway's
        baseline), so they are neither run again nor mistaken for missing."""
        if not migrations or migrations[0].alembic_revision is None or await cls._applied(conn, schema):
            return
        if await conn.fetchval("SELECT to_regclass('alembic_version')") is None:
            return
        current = await conn.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
        upto = next((m.version for m in migrations if m.alembic_revision == current), None)
        if upto is None:
            return  # validate() reports nothing applied; the first revision's SQL will fail loudly
        async with conn.transaction():
            for m in migrations:
                if m.version <= upto:
                    await conn.execute(
                        f'INSERT INTO "{schema}".shiplog_migrations (version, name, checksum, kind)'
                        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        m.version,
                        m.name,
                        m.checksum,
                        m.kind,
                    )

    @staticmethod
    async def _ensure_tables(conn: asyncpg.Connection, schema: str) -> None:
        await conn.execute(
            f'CREATE SCHEMA IF NOT EXISTS "{schema}";'
            f'CREATE TABLE IF NOT EXISTS "{schema}".shiplog_migrations ('
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL);"
            f'CREATE TABLE IF NOT EXISTS "{schema}".shiplog_migration_steps ('
            " key text PRIMARY KEY, result text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
        )

    @staticmethod
    async def _applied(conn: asyncpg.Connection, schema: str) -> list[ms.Applied]:
        exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".shiplog_migrations')
        if exists is None:
            return []
        rows = await conn.fetch(
            f'SELECT version, name, checksum, kind FROM "{schema}".shiplog_migrations ORDER BY version'
        )
        return [ms.Applied(r["version"], r["name"], r["checksum"], r["kind"]) for r in rows]

    @staticmethod
    async def _run_up(conn: asyncpg.Connection, schema: str, migration: ms.Migration) -> None:
        async with conn.transaction():
            await conn.execute(migration.up_sql)
            await conn.execute(
                f'INSERT INTO "{schema}".shiplog_migrations (version, name, checksum, kind)'
                " VALUES ($1, $2, $3, $4)",
                migration.version,
                migration.name,
                migration.checksum,
                migration.kind,
            )

    @staticmethod
    async def _run_down(conn: asyncpg.Connection, schema: str, migration: ms.Migration) -> None:
        assert migration.down_sql is not None
        async with conn.transaction():
            await conn.execute(migration.down_sql)
            await conn.execute(
                f'DELETE FROM "{schema}".shiplog_migrations WHERE version = $1', migration.version
            )

    # -- dumps -------------------------------------------------------------------------

    async def _dump(
        self, settings: MigrationSettings, service: str, environment: str, size: int, version: int | None
    ) -> dict[str, Any]:
        if size > self.config.dump_limit_bytes:
            return {
                "skipped": f"database is {size} bytes, over the dump limit of {self.config.dump_limit_bytes}"
            }
        pg_dump = shutil.which(self.config.pg_dump)
        if pg_dump is None:
            return {"skipped": f"{self.config.pg_dump} not found on PATH"}
        directory = self.config.state_dir / service / environment
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = directory / f"{stamp}-{_version_label(version) or 'empty'}.dump"
        error = await self._run_tool(
            pg_dump, "--format=custom", f"--file={path}", database_url=settings.database_url
        )
        if error is not None:
            path.unlink(missing_ok=True)
            return {"skipped": f"pg_dump failed: {error}"}
        return {"path": str(path), "bytes": path.stat().st_size}

    async def _restore_dump(self, conn: asyncpg.Connection, settings: MigrationSettings, path: Path) -> None:
        pg_restore = shutil.which(self.config.pg_restore)
        if pg_restore is None:
            raise StepFailed(f"{self.config.pg_restore} not found on PATH; cannot restore {path}")
        if not await asyncio.to_thread(path.is_file):
            raise StepFailed(f"snapshot dump {path} is gone")
        # objects created since the dump are not in it: drop every user schema first
        schemas = await conn.fetch(
            "SELECT nspname FROM pg_namespace"
            " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
        )
        async with conn.transaction():
            for row in schemas:
                await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
            await conn.execute("CREATE SCHEMA public")
        error = await self._run_tool(
            pg_restore, "--clean", "--if-exists", "--no-owner", str(path), database_url=settings.database_url
        )
        if error is not None:
            raise StepFailed(f"pg_restore of {path} failed: {error}")

    async def _run_tool(self, program: str, *args: str, database_url: str) -> str | None:
        """Run pg_dump / pg_restore on the database; the error text, or ``None`` on
        success. The password goes in ``PGPASSWORD``, never on the command line."""
        url = urlsplit(database_url)
        env = dict(os.environ)
        if url.password:
            env["PGPASSWORD"] = unquote(url.password)
            userinfo, host = url.netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]  # still percent-encoded, as in the URL
            url = url._replace(netloc=f"{user}@{host}" if user else host)
        proc = await asyncio.create_subprocess_exec(
            program,
            *args,
            f"--dbname={urlunsplit(url)}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), self.config.dump_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"timed out after {self.config.dump_timeout:g}s"
        if proc.returncode != 0:
            return stderr.decode(errors="replace").strip()[-2000:] or f"exit status {proc.returncode}"
        return None

    # -- settings ------------------------------------------------------------------------

    def _remember(self, release: Release) -> MigrationSettings:
        settings = _validated(release.settings)
        self._known[f"{release.service}/{release.environment}"] = settings
        return settings

    def _settings(
        self, service: str, environment: str, given: Mapping[str, Any] | None = None
    ) -> MigrationSettings:
        """The release settings ``given``, validated as ``apply`` validates them; without
        them the last applied (or configured) ones for the service."""
        if given is not None:
            return _validated(given)
        try:
            return self._known[f"{service}/{environment}"]
        except KeyError:
            raise InvalidInput(
                f"dbmigrate: no database configured for {service}/{environment} "
                "(set it in the target config's databases or apply a step first)"
            ) from None


def _validated(settings: Mapping[str, Any]) -> MigrationSettings:
    from pydantic import ValidationError

    try:
        return MigrationSettings.model_validate(dict(settings))
    except ValidationError as exc:
        raise settings_error("dbmigrate", exc) from None
