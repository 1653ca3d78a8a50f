"""Settings, from the environment (and, for CLI commands, a running ``shiplog dev``).

Defaults live here as named constants, in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.errors import InvalidInput

DEFAULT_LOG_SCHEMA = "shiplog"
DEFAULT_METRICS_PORT = 9464
RUNTIME_FILE = "dev.json"
LOCK_FILE = "dev.lock"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("shiplog", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPLOG_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SHIPLOG_KAFKA")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "SHIPLOG_DATABASE_URL")
    )
    home: Path = Field(default_factory=default_home)
    log_schema: str = DEFAULT_LOG_SCHEMA
    topic_prefix: str = ""
    topic_replication: int = 1
    metrics_port: int = DEFAULT_METRICS_PORT
    log_level: str = "INFO"

    @property
    def runtime_file(self) -> Path:
        return self.home / RUNTIME_FILE

    def with_running_dev(self) -> Settings:
        """Fill unset servers from a running ``shiplog dev`` under ``home``."""
        if self.kafka_bootstrap_servers and self.database_url:
            return self
        runtime = read_runtime(self.home)
        if runtime is None:
            missing = [
                name
                for name, value in (
                    ("KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers),
                    ("DATABASE_URL", self.database_url),
                )
                if not value
            ]
            raise InvalidInput(
                f"{' and '.join(missing)} not set and no running `shiplog dev` found under "
                f"{self.home} (SHIPLOG_HOME): start `shiplog dev`, or set the variables"
            )
        return self.model_copy(
            update={
                "kafka_bootstrap_servers": self.kafka_bootstrap_servers or runtime["kafka"],
                "database_url": self.database_url or runtime["database"],
                "log_schema": runtime.get("log_schema", self.log_schema),
                "topic_prefix": runtime.get("topic_prefix", self.topic_prefix),
            }
        )


def read_runtime(home: Path) -> dict[str, str] | None:
    """The runtime file of a live ``shiplog dev``, or None (also for a stale one)."""
    path = home / RUNTIME_FILE
    try:
        runtime = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = int(runtime.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return runtime
