"""The ``azure_container_apps`` target: a service as an Azure Container App in
multiple-revision mode, one revision per version, traffic weights across revisions
(canary) and labels (blue-green).

Talks to Azure Resource Manager with the official azure-mgmt-appcontainers aio
client; see ``target.py`` and ``config.AzureContainerAppsSettings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters.targets import register_target
from adapters.targets.azure.config import AzureContainerAppsSettings, AzureContainerAppsTargetConfig
from adapters.targets.azure.target import AzureContainerAppsTarget
from events.errors import InvalidInput


def _create(config: Mapping[str, Any]) -> AzureContainerAppsTarget:
    try:
        return AzureContainerAppsTarget(AzureContainerAppsTargetConfig.model_validate(dict(config)))
    except ValidationError as exc:
        raise InvalidInput(f"azure_container_apps target config: {exc}") from exc


register_target(AzureContainerAppsTarget.TYPE, _create)

__all__ = ["AzureContainerAppsSettings", "AzureContainerAppsTarget", "AzureContainerAppsTargetConfig"]
