"""Configuration of the ``azure_container_apps`` target and the release settings it reads.

Defaults live here as named constants; the composition root builds an
``AzureContainerAppsTargetConfig`` (and, in real use, leaves ``credential`` unset so
the target uses azure-identity's ``DefaultAzureCredential``) — the target never reads
the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.targets import settings_error

DEFAULT_BASE_URL = "https://management.azure.com"
#: seconds between two polls of an ARM long-running operation
DEFAULT_POLLING_INTERVAL_S = 5.0
#: how long a new revision may take to be provisioned and running
DEFAULT_REVISION_TIMEOUT_S = 600.0
DEFAULT_REVISION_POLL_S = 2.0
#: the SDK retry policy for 408/429/5xx and connection errors (exponential backoff)
DEFAULT_RETRY_TOTAL = 5
DEFAULT_RETRY_BACKOFF_FACTOR = 0.8
DEFAULT_RETRY_BACKOFF_MAX = 30.0
#: how many applied step ids the app's tag keeps (a tag value holds 256 characters)
DEFAULT_APPLIED_KEEP = 18
DEFAULT_PREVIEW_LABEL = "preview"
DEFAULT_ACTIVE_LABEL = "active"
#: tag: space-separated digests of the applied step ids
APPLIED_TAG = "shiplog-applied"
#: tag: revision name -> the release version it runs (a suffix cannot hold every version)
VERSIONS_TAG = "shiplog-versions"
TAG_VALUE_MAX = 256
SNAPSHOT_FORMAT = 1
LABEL_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"


class AzureContainerAppsTargetConfig(BaseModel):
    """Defaults for every release; a release's settings override them."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    subscription_id: str | None = None
    resource_group: str | None = None
    base_url: str = DEFAULT_BASE_URL
    #: an azure-core ``AsyncTokenCredential``; ``None`` = ``DefaultAzureCredential()``
    credential: Any = Field(default=None, repr=False, exclude=True)
    polling_interval: float = Field(default=DEFAULT_POLLING_INTERVAL_S, ge=0)
    revision_timeout: float = Field(default=DEFAULT_REVISION_TIMEOUT_S, gt=0)
    revision_poll: float = Field(default=DEFAULT_REVISION_POLL_S, gt=0)
    retry_total: int = Field(default=DEFAULT_RETRY_TOTAL, ge=0)
    retry_backoff_factor: float = Field(default=DEFAULT_RETRY_BACKOFF_FACTOR, ge=0)
    retry_backoff_max: float = Field(default=DEFAULT_RETRY_BACKOFF_MAX, gt=0)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1, le=18)


class AzureContainerAppsSettings(BaseModel):
    """The release settings the target reads (``Release.settings``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subscription_id: str | None = None
    resource_group: str | None = None
    #: the container app; default: the service's name
    container_app: str | None = None
    #: the container whose image and env are set; default: the first one
    container: str | None = None
    #: to create the app when it does not exist (else a missing app is refused)
    managed_environment_id: str | None = None
    location: str | None = None
    target_port: int | None = Field(default=None, ge=1, le=65535)
    preview_label: str = Field(default=DEFAULT_PREVIEW_LABEL, pattern=LABEL_PATTERN)
    active_label: str = Field(default=DEFAULT_ACTIVE_LABEL, pattern=LABEL_PATTERN)

    @classmethod
    def of(cls, settings: dict[str, Any]) -> AzureContainerAppsSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise settings_error("azure_container_apps", exc) from None
