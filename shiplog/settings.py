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
#: /metrics of each process; 0 (the default, so processes on one host never clash)
#: disables it. Compose and Kubernetes set 9464.
DEFAULT_METRICS_PORT = 0
RUNTIME_FILE = "dev.json"
LOCK_FILE = "dev.lock"


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("shiplog", appauthor=False))


#: the example pipelines shipped beside the code: what `shiplog dev` and `shiplog
#: demo` deploy when no SHIPLOG_CONFIG is given
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "pipelines"


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
    #: partitions of each topic shiplog creates (0: the catalogue's, 6 per topic);
    #: `shiplog dev` on its embedded broker uses 1 — one process reads them all, and
    #: every idle fetch costs the broker work per partition
    topic_partitions: int = 0
    metrics_port: int = DEFAULT_METRICS_PORT
    log_level: str = "INFO"
    #: how long an idle consumer's fetch may wait at the broker (Kafka answers as soon as
    #: data arrives; the embedded broker waits this out, so `shiplog dev` lowers it)
    kafka_fetch_max_wait_ms: int = 500
    #: consumers in one process hand each other what they append at once (Kafka
    #: still delivers it, as the durable path; the second arrival is a duplicate)
    local_dispatch: bool = True
    #: the pipelines directory (one <service>.yaml each); default: the examples
    config: Path = EXAMPLE_CONFIG

    @property
    def runtime_file(self) -> Path:
        return self.home / RUNTIME_FILE

    def with_running_dev(self, *, kafka: bool = True, database: bool = True) -> Settings:
        """Fill unset servers from a running ``shiplog dev`` under ``home``; the
        flags say which servers the caller needs."""
        missing = [
            name
            for name, needed, value in (
                ("KAFKA_BOOTSTRAP_SERVERS", kafka, self.kafka_bootstrap_servers),
                ("DATABASE_URL", database, self.database_url),
            )
            if needed and not value
        ]
        if not missing:
            return self
        runtime = read_runtime(self.home)
        if runtime is None:
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
