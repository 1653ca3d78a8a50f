"""The ``lambda`` target: a service as an AWS Lambda function behind an alias.

Each release is a published version; traffic moves with the alias — all at once, or
by weighted routing (``RoutingConfig.AdditionalVersionWeights``) for canaries, in
shapes like CodeDeploy's predefined configurations (``shapes``). See ``target.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.aws.config import AwsCredentials, AwsTargetConfig, config_errors
from adapters.targets.serverless.config import LambdaSettings
from adapters.targets.serverless.shapes import SHAPES, canary_steps
from adapters.targets.serverless.target import LambdaTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> LambdaTarget:
    try:
        return LambdaTarget(AwsTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"lambda target config: {config_errors(exc)}") from None


register_target(LambdaTarget.TYPE, _create)

__all__ = ["SHAPES", "AwsCredentials", "AwsTargetConfig", "LambdaSettings", "LambdaTarget", "canary_steps"]
