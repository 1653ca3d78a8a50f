"""The release settings of the ``lambda`` target; the target's own configuration is
the AWS one (``adapters.targets.aws.config.AwsTargetConfig``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adapters.targets import settings_error

#: a published version's description names the release it was published for
DESCRIPTION_PREFIX = "shiplog "


class LambdaSettings(BaseModel):
    """What the ``lambda`` target reads from ``Release.settings``. The function
    exists beforehand (created by Terraform, SAM, CDK...); shiplog publishes its
    versions and moves its alias."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    region: str | None = None
    #: default: the service's name
    function: str | None = None
    #: the alias callers invoke; default: the environment's name
    alias: str | None = None

    @classmethod
    def of(cls, settings: dict[str, Any]) -> LambdaSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise settings_error("lambda", exc) from None


def description(version: str) -> str:
    return f"{DESCRIPTION_PREFIX}{version}"[:256]


def version_of(description_text: str | None) -> str | None:
    """The release version a published version's description names, if shiplog wrote it."""
    if description_text and description_text.startswith(DESCRIPTION_PREFIX):
        return description_text[len(DESCRIPTION_PREFIX) :]
    return None
