"""Configuration of the dbmigrate target and the release settings it reads.

Defaults are named constants here; the composition root builds the config and
passes it in — the target never reads the environment.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_HISTORY_SCHEMA = "public"
#: how long a deployment waits for another one migrating the same database
DEFAULT_LOCK_TIMEOUT_S = 60.0
#: databases up to this size get a pg_dump in their snapshot
DEFAULT_DUMP_LIMIT_BYTES = 512 * 1024 * 1024
#: how long pg_dump / pg_restore may run
DEFAULT_DUMP_TIMEOUT_S = 600.0
#: the step kinds that mean "the new version is fully promoted": they run contract migrations
DEFAULT_CONTRACT_ON = ("promote",)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class MigrationSettings(BaseModel):
    """A release's settings for this target (``Release.settings``), validated.

    ``database_url`` comes already resolved by the caller from a secret reference;
    it is never written to a snapshot, a result or a log."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    database_url: str = Field(min_length=1, repr=False)
    migrations: Path
    #: the schema holding ``shiplog_migrations`` (and the step record); part of the lock key
    history_schema: str = DEFAULT_HISTORY_SCHEMA
    contract_on: tuple[str, ...] = DEFAULT_CONTRACT_ON

    @field_validator("history_schema")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _IDENT.match(value):
            raise ValueError(f"history_schema must be a plain lower-case identifier, got {value!r}")
        return value


class DbMigrateTargetConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: where snapshot dumps are written (``<state_dir>/<service>/<environment>/``)
    state_dir: Path
    lock_timeout: float = Field(default=DEFAULT_LOCK_TIMEOUT_S, gt=0)
    dump_limit_bytes: int = Field(default=DEFAULT_DUMP_LIMIT_BYTES, ge=0)
    dump_timeout: float = Field(default=DEFAULT_DUMP_TIMEOUT_S, gt=0)
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    #: settings per ``"<service>/<environment>"``, for ``snapshot``/``status``/``restore``
    #: before any step of that release has been applied by this process
    databases: dict[str, MigrationSettings] = Field(default_factory=dict)
