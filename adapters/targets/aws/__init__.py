"""The ``ecs`` target: a service as an Amazon ECS service (or two colour services
behind a load balancer listener with weighted target groups).

Talks to ECS and ELBv2 with aioboto3; region, credentials and endpoint from
``AwsTargetConfig`` (the AWS SDK's standard chain when it names none). The Lambda
target, which shares ``config`` and ``api``, is ``adapters.targets.serverless``. See
``ecs.py``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.aws.config import AwsCredentials, AwsTargetConfig, EcsSettings
from adapters.targets.aws.ecs import EcsTarget

register_target(EcsTarget.TYPE, configured(EcsTarget, AwsTargetConfig), EcsSettings)

__all__ = ["AwsCredentials", "AwsTargetConfig", "EcsSettings", "EcsTarget"]
