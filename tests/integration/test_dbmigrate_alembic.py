"""The dbmigrate target on an Alembic project (tests/fixtures/alembic: three
revisions, the last a contract one) against the real PostgreSQL: the SQL Alembic
renders runs under shiplog's lock and checksums, Alembic's own ``alembic_version``
follows, contract revisions wait for promote, restore runs the downgrades, an edited
revision is refused before anything runs, and a database Alembic migrated before is
picked up where it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from adapters.targets.dbmigrate.alembic_project import render_project
from tests.integration.test_dbmigrate_target import (  # noqa: F401 (fixtures)
    columns,
    database_url,
    make_target,
    pg_tools,
    query,
    release,
    step,
    tables,
)

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "alembic"
FIRST, SECOND, THIRD = "a1b2c3d4e5f6", "b2c3d4e5f6a7", "c3d4e5f6a7b8"

pytestmark = pytest.mark.timeout(90)


async def alembic_version(url: str) -> str | None:
    rows = await query(url, "SELECT version_num FROM alembic_version")
    return rows[0]["version_num"] if rows else None


async def test_revisions_run_in_order_with_alembic_version_and_contract_waits_for_promote(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    target = make_target(tmp_path, pg_tools)
    rel = release(database_url, PROJECT)

    expanded = await target.apply(step(rel, "expand"))
    assert expanded.ok, expanded.error
    assert expanded.detail["ran"] == [f"{FIRST}_create_accounts.py", f"{SECOND}_add_display_name.py"]
    assert await alembic_version(database_url) == SECOND
    assert {"id", "email", "display_name"} <= await columns(database_url, "accounts")

    before = await target.snapshot(rel.service, rel.environment)
    promoted = await target.apply(step(rel, "contract", kind="promote"))
    assert promoted.ok, promoted.error
    assert promoted.detail["ran"] == [f"{THIRD}_drop_email.py"]
    assert "email" not in await columns(database_url, "accounts")
    assert await alembic_version(database_url) == THIRD

    restored = await target.restore(before, step_id="restore-1")
    assert restored.ok, restored.error
    assert restored.detail["method"] == "down"
    assert "email" in await columns(database_url, "accounts")
    assert await alembic_version(database_url) == SECOND


async def test_an_edited_revision_is_refused_before_anything_runs(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    target = make_target(tmp_path, pg_tools)
    assert (await target.apply(step(release(database_url, project), "expand"))).ok

    first = project / "versions" / f"{FIRST}_create_accounts.py"
    first.write_text(first.read_text().replace("sa.String(200)", "sa.String(300)"))
    (project / "versions" / "d4e5f6a7b8c9_add_orders.py").write_text(
        '"""add orders"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "d4e5f6a7b8c9"\ndown_revision = "{THIRD}"\n\n\n'
        "def upgrade() -> None:\n"
        '    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_table("orders")\n'
    )
    refused = await target.apply(step(release(database_url, project), "again", kind="promote"))
    assert not refused.ok
    assert "refused, nothing ran" in (refused.error or "")
    assert f"{FIRST}_create_accounts.py was edited" in (refused.error or "")
    assert "orders" not in await tables(database_url)
    assert await alembic_version(database_url) == SECOND


async def test_a_database_alembic_migrated_before_is_baselined_where_it_is(
    tmp_path: Path, pg_tools: tuple[str, str], database_url: str
) -> None:
    # the team ran `alembic upgrade a1b2c3d4e5f6` before adopting shiplog
    [first, *_] = render_project(PROJECT / "alembic.ini")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(first.up_sql)
    finally:
        await conn.close()
    target = make_target(tmp_path, pg_tools)

    result = await target.apply(step(release(database_url, PROJECT), "adopt"))

    assert result.ok, result.error
    assert result.detail["ran"] == [f"{SECOND}_add_display_name.py"]
    assert await alembic_version(database_url) == SECOND
    history = await query(database_url, "SELECT version, name FROM shiplog_migrations ORDER BY version")
    assert [r["version"] for r in history] == [1, 2]


def test_a_project_with_two_heads_is_refused_with_the_reason(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    (project / "versions" / "e5f6a7b8c9d0_other_branch.py").write_text(
        f'"""other branch"""\n\nrevision = "e5f6a7b8c9d0"\ndown_revision = "{FIRST}"\n\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    from events.errors import InvalidInput

    with pytest.raises(InvalidInput, match="2 heads"):
        render_project(project / "alembic.ini")
