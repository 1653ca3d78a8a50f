"""The ``dbmigrate`` target: a release's SQL migrations applied to PostgreSQL.

See ``target.py`` for what a step does and ``config.py`` for the settings; SQL-file
sets are read by ``migrations.py``, Alembic projects rendered by ``alembic_project.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.dbmigrate.config import DbMigrateTargetConfig, MigrationSettings
from adapters.targets.dbmigrate.target import DbMigrateTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> DbMigrateTarget:
    try:
        return DbMigrateTarget(DbMigrateTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"dbmigrate target config: {exc}") from exc


register_target(DbMigrateTarget.TYPE, _create)

__all__ = ["DbMigrateTarget", "DbMigrateTargetConfig", "MigrationSettings"]
