"""Configuration shared by the AWS targets (``ecs`` here, ``lambda`` in
``adapters.targets.serverless``) and the release settings of the ``ecs`` target.

Defaults live here as named constants. The composition root builds an
``AwsTargetConfig`` and passes it in; the target never reads the environment itself.
Without ``credentials`` the AWS SDK's standard chain finds them (environment,
shared config and credentials files, SSO, container and instance roles) — that
lookup is botocore's, not ours.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from adapters.targets import settings_error

#: botocore's retry mode: ``standard`` retries throttling, 5xx and connection errors
#: with exponential backoff and jitter (at most 20 s a pause) within a retry quota
RETRY_MODE = "standard"
#: attempts per API call, the first included (botocore's own default is 3)
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 30.0
#: how long a rollout (ECS deployment, Lambda code update) may take before the step
#: gives up with ``RolloutTimeout``
DEFAULT_ROLLOUT_TIMEOUT_S = 900.0
#: between two looks at a rollout in progress
DEFAULT_POLL_INTERVAL_S = 5.0
#: how many applied step results a resource's tags keep (AWS allows 50 tags)
DEFAULT_APPLIED_KEEP = 20
SNAPSHOT_FORMAT = 1
#: where a version is named on AWS resources shiplog creates
VERSION_TAG = "shiplog:version"


class AwsCredentials(BaseModel):
    """Static credentials, resolved by the caller; ``SecretStr`` keeps the secret
    parts out of reprs, dumps and logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: str = Field(min_length=1)
    secret_access_key: SecretStr
    session_token: SecretStr | None = None

    def secrets(self) -> list[str]:
        """Every value that must never appear in a result, an event or a log."""
        out = [self.secret_access_key.get_secret_value()]
        if self.session_token is not None:
            out.append(self.session_token.get_secret_value())
        return [s for s in out if s]


class AwsTargetConfig(BaseModel):
    """Where the AWS API answers and how hard to try; a release's settings may name
    another ``region``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: None: the SDK's chain (``AWS_REGION``, the profile's region)
    region: str | None = None
    #: e.g. a VPC endpoint, LocalStack or moto; None: AWS's own
    endpoint_url: str | None = None
    #: a named profile of the shared config files; None: the default chain
    profile: str | None = None
    credentials: AwsCredentials | None = None
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=10)
    connect_timeout_s: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    read_timeout_s: float = Field(default=DEFAULT_READ_TIMEOUT_S, gt=0)
    rollout_timeout_s: float = Field(default=DEFAULT_ROLLOUT_TIMEOUT_S, gt=0)
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, gt=0)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1, le=40)


class EcsSettings(BaseModel):
    """The release settings the ``ecs`` target reads (``Release.settings``).

    Rolling needs only the service; blue-green and canary need the two colour
    services and target groups and the listener whose default action forwards to
    them with weights (all created beforehand, e.g. by Terraform)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    region: str | None = None
    #: default: the environment's name
    cluster: str | None = None
    #: default: the service's name
    service: str | None = None
    #: the container whose image and environment are set; default: the service's name
    container: str | None = None
    #: blue-green / canary: the listener whose default forward action is weighted
    listener_arn: str | None = None
    #: blue-green / canary: colour -> ECS service name, and colour -> target group ARN
    colour_services: dict[str, str] | None = None
    target_groups: dict[str, str] | None = None

    @classmethod
    def of(cls, settings: dict[str, Any]) -> EcsSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise settings_error("ecs", exc) from None
