"""The pool the consumers get targets from (shiplog/targets.py): a database URL kept
as a secret reference in the pipeline reaches the dbmigrate target resolved, while
the plan and the results only ever hold the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.targets import Release, Step
from shiplog.targets import TargetPool
from tests.integration.test_dbmigrate_target import FIXTURES, database_url, tables  # noqa: F401

pytestmark = pytest.mark.timeout(60)


async def test_a_secret_reference_in_target_settings_is_resolved_for_the_target_only(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DATABASE_URL", database_url)
    settings = {
        "database_url": {"secret": {"env": "SHOP_DATABASE_URL"}},
        "migrations": str(FIXTURES / "basic"),
    }
    pool = TargetPool(tmp_path / "home", workdir=tmp_path)
    target = pool("dbmigrate", settings)
    release = Release(
        service="shop", environment="production", version="2.0.0", artifact="a", settings=settings
    )

    result = await target.apply(Step(step_id="s1", deployment_id="d1", kind="rolling", release=release))
    status = await target.status("shop", "production", settings)

    assert result.ok, result.error
    assert {"accounts", "orders"} <= await tables(database_url)
    assert status.reachable and status.tracks[0].version == "0003"
    for shown in (result.model_dump_json(), status.model_dump_json(), json.dumps(release.settings)):
        assert database_url not in shown

    monkeypatch.delenv("SHOP_DATABASE_URL")
    with pytest.raises(Exception, match="SHOP_DATABASE_URL"):
        await target.status("shop", "production", settings)
    await pool.close(stop_processes=True)
