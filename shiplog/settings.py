"""Settings, from the environment (and, for CLI commands, a running ``shiplog dev``).

Defaults live here as named constants, in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from events.errors import InvalidInput

DEFAULT_LOG_SCHEMA = "shiplog"
#: /metrics of each process; 0 (the default, so processes on one host never clash)
#: disables it. Compose and Kubernetes set 9464.
DEFAULT_METRICS_PORT = 0
RUNTIME_FILE = "dev.json"
LOCK_FILE = "dev.lock"
#: the command API: where `shiplog dev` and `shiplog run api` listen by default
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8765
#: roles that may promote, pause, resume, abort, schedule and roll back
DEFAULT_API_OPERATOR_ROLES = "admin,operator"
#: under SHIPLOG_HOME: the command-signing key (when SHIPLOG_COMMAND_KEY is unset),
#: and the admin API token `shiplog dev` issues for the person running it
COMMAND_KEY_FILE = "command.key"
DEV_TOKEN_FILE = "admin.token"


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
    #: the consumers' group session timeout (aiokafka's default; Kafka accepts 6000 and
    #: up). The embedded broker holds a new member's join for half of it, so `shiplog
    #: dev` uses 6000: its consumers are ready 2 s sooner
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000)
    #: consumers in one process hand each other what they append at once (Kafka
    #: still delivers it, as the durable path; the second arrival is a duplicate)
    local_dispatch: bool = True
    #: the pipelines directory (one <service>.yaml each); default: the examples
    config: Path = EXAMPLE_CONFIG

    # -- the command API and identity
    api_host: str = DEFAULT_API_HOST
    #: a port that is taken fails `shiplog dev` / `shiplog run api` (0: any free one)
    api_port: int = DEFAULT_API_PORT
    #: where the CLI finds the API (default: that of the running `shiplog dev`)
    api_url: str | None = None
    #: take the client address from X-Forwarded-For (only behind a proxy you run)
    api_trust_proxy: bool = False
    #: comma-separated; empty: any authenticated principal may operate deployments
    api_operator_roles: str = DEFAULT_API_OPERATOR_ROLES
    #: the CLI's bearer token (default: the admin token of the running `shiplog dev`)
    token: SecretStr | None = None
    #: the key the API signs commands with and the consumers verify them by; unset: a
    #: random one in SHIPLOG_HOME/command.key, made by whichever process needs it first
    command_key: SecretStr | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    #: where the roles are in a JWT's claims (a dotted path: realm_access.roles)
    oidc_roles_claim: str = "roles"
    #: which claim names the principal: sub, preferred_username or email
    oidc_principal_claim: str = "sub"

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
