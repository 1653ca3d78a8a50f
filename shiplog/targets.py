"""Targets as the consumers get them: one instance per type, configured here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# importing a target's package registers its type
import adapters.targets.aws  # ecs
import adapters.targets.azure
import adapters.targets.dbmigrate
import adapters.targets.gcp
import adapters.targets.kubernetes
import adapters.targets.local
import adapters.targets.serverless  # lambda
import adapters.targets.ssh  # noqa: F401
from adapters.targets import Target, create_target


class TargetPool:
    """``pool(type, settings) -> Target``: per-release settings travel in each step's
    ``Release.settings``; what is configured here is where each type keeps its state."""

    def __init__(self, home: Path, workdir: Path | None = None):
        self._home = home
        self._workdir = workdir
        self._targets: dict[str, Target] = {}

    def _config(self, type_: str) -> dict[str, Any]:
        if type_ == "local":
            return {"state_dir": self._home / "targets" / "local", "workdir": self._workdir}
        if type_ in ("ssh", "dbmigrate"):
            return {"state_dir": self._home / "targets" / type_}
        if type_ == "kubernetes":
            return {"kubeconfig": os.environ.get("KUBECONFIG")}
        if type_ in ("ecs", "lambda"):
            # None leaves each to the AWS SDK's standard chain (AWS_REGION, profile, role)
            return {
                "region": os.environ.get("SHIPLOG_AWS_REGION") or None,
                "endpoint_url": os.environ.get("SHIPLOG_AWS_ENDPOINT_URL") or None,
                "profile": os.environ.get("SHIPLOG_AWS_PROFILE") or None,
            }
        if type_ == "cloud_run":
            return {
                "project": os.environ.get("GOOGLE_CLOUD_PROJECT"),
                "region": os.environ.get("SHIPLOG_GCP_REGION"),
            }
        if type_ == "azure_container_apps":
            return {
                "subscription_id": os.environ.get("AZURE_SUBSCRIPTION_ID"),
                "resource_group": os.environ.get("SHIPLOG_AZURE_RESOURCE_GROUP"),
            }
        return {}

    def __call__(self, type_: str, settings: Mapping[str, Any] | None = None) -> Target:
        if type_ not in self._targets:
            self._targets[type_] = create_target(type_, self._config(type_))
        return self._targets[type_]

    async def close(self, *, stop_processes: bool) -> None:
        for target in self._targets.values():
            close = getattr(target, "close", None)
            if close is not None:
                await close(stop_processes=stop_processes)
