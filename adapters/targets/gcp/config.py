"""Configuration of the ``cloud_run`` target and the release settings it reads.

Defaults live here as named constants; the composition root builds a
``CloudRunTargetConfig`` (and, in real use, leaves ``credentials`` unset so the
client finds Application Default Credentials) — the target never reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.targets import settings_error

#: the Cloud Run Admin API v2
DEFAULT_API_ENDPOINT = "https://run.googleapis.com"
#: how long one long-running operation (a revision becoming ready) may take
DEFAULT_OPERATION_TIMEOUT_S = 600.0
#: first and longest pause between two polls of a long-running operation
DEFAULT_POLL_INITIAL_S = 1.0
DEFAULT_POLL_MAXIMUM_S = 10.0
#: retries of a request answered 5xx / 429: first pause, longest pause, total budget
DEFAULT_RETRY_INITIAL_S = 1.0
DEFAULT_RETRY_MAXIMUM_S = 10.0
DEFAULT_RETRY_TIMEOUT_S = 60.0
#: how many applied step results the service's annotation keeps
DEFAULT_APPLIED_KEEP = 20
#: the traffic tag of a blue-green preview revision (its own URL, no traffic)
DEFAULT_PREVIEW_TAG = "preview"
APPLIED_ANNOTATION = "shiplog.io/applied-steps"
#: revision name -> the release version it runs (a revision name cannot hold every version)
VERSIONS_ANNOTATION = "shiplog.io/versions"
VERSION_ANNOTATION = "shiplog.io/version"
SNAPSHOT_FORMAT = 1


class CloudRunTargetConfig(BaseModel):
    """Defaults for every release; a release's settings override project and region."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    project: str | None = None
    region: str | None = None
    api_endpoint: str = DEFAULT_API_ENDPOINT
    #: a ``google.auth.credentials.Credentials``; ``None`` = Application Default Credentials
    credentials: Any = Field(default=None, repr=False, exclude=True)
    operation_timeout: float = Field(default=DEFAULT_OPERATION_TIMEOUT_S, gt=0)
    poll_initial: float = Field(default=DEFAULT_POLL_INITIAL_S, gt=0)
    poll_maximum: float = Field(default=DEFAULT_POLL_MAXIMUM_S, gt=0)
    retry_initial: float = Field(default=DEFAULT_RETRY_INITIAL_S, gt=0)
    retry_maximum: float = Field(default=DEFAULT_RETRY_MAXIMUM_S, gt=0)
    retry_timeout: float = Field(default=DEFAULT_RETRY_TIMEOUT_S, gt=0)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1)


class CloudRunSettings(BaseModel):
    """The release settings the target reads (``Release.settings``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project: str | None = None
    region: str | None = None
    #: the Cloud Run service; default: the service's name
    service_name: str | None = None
    #: the container whose image and env are set; default: the first one
    container: str | None = None
    #: container port, used when the target creates the service
    port: int | None = Field(default=None, ge=1, le=65535)
    preview_tag: str = Field(default=DEFAULT_PREVIEW_TAG, pattern=r"^[a-z][a-z0-9-]{0,45}$")

    @classmethod
    def of(cls, settings: dict[str, Any]) -> CloudRunSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise settings_error("cloud_run", exc) from None
