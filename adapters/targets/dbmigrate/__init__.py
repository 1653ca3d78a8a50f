"""The ``dbmigrate`` target: a release's SQL migrations applied to PostgreSQL.

See ``target.py`` for what a step does and ``config.py`` for the settings; SQL-file
sets are read by ``migrations.py``, Alembic projects rendered by ``alembic_project.py``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.dbmigrate.config import DbMigrateTargetConfig, MigrationSettings
from adapters.targets.dbmigrate.target import DbMigrateTarget

register_target(DbMigrateTarget.TYPE, configured(DbMigrateTarget, DbMigrateTargetConfig), MigrationSettings)

__all__ = ["DbMigrateTarget", "DbMigrateTargetConfig", "MigrationSettings"]
