"""The ``azure_container_apps`` target: a service as an Azure Container App in
multiple-revision mode, one revision per version, traffic weights across revisions
(canary) and labels (blue-green).

Talks to Azure Resource Manager with the official azure-mgmt-appcontainers aio
client; see ``target.py`` and ``config.AzureContainerAppsSettings``.
"""

from __future__ import annotations

from adapters.targets import configured, register_target
from adapters.targets.azure.config import AzureContainerAppsSettings, AzureContainerAppsTargetConfig
from adapters.targets.azure.target import AzureContainerAppsTarget

register_target(
    AzureContainerAppsTarget.TYPE,
    configured(AzureContainerAppsTarget, AzureContainerAppsTargetConfig),
    AzureContainerAppsSettings,
)

__all__ = ["AzureContainerAppsSettings", "AzureContainerAppsTarget", "AzureContainerAppsTargetConfig"]
