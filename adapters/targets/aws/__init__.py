"""The ``ecs`` target: a service as an Amazon ECS service (or two colour services
behind a load balancer listener with weighted target groups).

Talks to ECS and ELBv2 with aioboto3; region, credentials and endpoint from
``AwsTargetConfig`` (the AWS SDK's standard chain when it names none). The Lambda
target, which shares ``config`` and ``api``, is ``adapters.targets.serverless``. See
``ecs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.aws.config import AwsCredentials, AwsTargetConfig, EcsSettings, config_errors
from adapters.targets.aws.ecs import EcsTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> EcsTarget:
    try:
        return EcsTarget(AwsTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"ecs target config: {config_errors(exc)}") from None


register_target(EcsTarget.TYPE, _create)

__all__ = ["AwsCredentials", "AwsTargetConfig", "EcsSettings", "EcsTarget"]
