"""The ``lambda`` target: a service as an AWS Lambda function behind an alias.

Each release is a published version; traffic moves with the alias — all at once, or
by weighted routing (``RoutingConfig.AdditionalVersionWeights``) for canaries, in
shapes like CodeDeploy's predefined configurations (``shapes``). See ``target.py``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.aws.config import AwsCredentials, AwsTargetConfig
from adapters.targets.serverless.config import LambdaSettings
from adapters.targets.serverless.shapes import SHAPES, canary_steps
from adapters.targets.serverless.target import LambdaTarget

register_target(LambdaTarget.TYPE, configured(LambdaTarget, AwsTargetConfig), LambdaSettings)

__all__ = ["SHAPES", "AwsCredentials", "AwsTargetConfig", "LambdaSettings", "LambdaTarget", "canary_steps"]
