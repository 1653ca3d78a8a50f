"""Targets as the consumers get them: one instance per type, configured here.

Settings travel in plans as configured — secret references (``{"secret": {"env":
NAME}}``, e.g. a dbmigrate ``database_url``) and all — so the log never holds a
secret; the pool hands each target its settings with those references resolved, at
the last moment, in every call (``SecretsResolved``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

# importing a target's package registers its type
import adapters.targets.aws  # ecs
import adapters.targets.azure
import adapters.targets.dbmigrate
import adapters.targets.gcp
import adapters.targets.kubernetes
import adapters.targets.local
import adapters.targets.serverless  # lambda
import adapters.targets.ssh  # noqa: F401
from adapters.targets import Snapshot, Step, StepResult, Target, TargetStatus, create_target
from consumers.secrets import resolve_settings


class SecretsResolved:
    """A target whose every settings argument (a step's ``Release.settings``, the
    ``settings`` of snapshot/status/restore) has its secret references resolved — and
    whose answers have them taken out again: a snapshot (which goes into the log) holds
    the reference where the target recorded a resolved value, and a restore resolves it
    back; any other appearance in a snapshot, a result or a status reads ``***``."""

    def __init__(self, target: Target, base_dir: Path | None) -> None:
        self._target = target
        self._base_dir = base_dir

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def _resolved(self, settings: Mapping[str, Any] | None, secrets: dict[str, dict[str, Any]]) -> Any:
        """``settings`` resolved (None stays None), noting each secret in ``secrets``."""
        return None if settings is None else resolve_settings(settings, self._base_dir, secrets)

    async def apply(self, step: Step) -> StepResult:
        secrets: dict[str, dict[str, Any]] = {}
        release = step.release.model_copy(update={"settings": self._resolved(step.release.settings, secrets)})
        result = await self._target.apply(step.model_copy(update={"release": release}))
        return _hidden(result, secrets)

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        secrets: dict[str, dict[str, Any]] = {}
        taken = await self._target.snapshot(service, environment, self._resolved(settings, secrets))
        return _hidden(taken, secrets)

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        secrets: dict[str, dict[str, Any]] = {}
        found = await self._target.status(service, environment, self._resolved(settings, secrets))
        return _hidden(found, secrets)

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        secrets: dict[str, dict[str, Any]] = {}
        state = self._resolved(snapshot.state, secrets)
        result = await self._target.restore(
            snapshot.model_copy(update={"state": state}),
            step_id=step_id,
            settings=self._resolved(settings, secrets),
        )
        return _hidden(result, secrets)


M = TypeVar("M", bound=BaseModel)


def _hidden(model: M, secrets: Mapping[str, dict[str, Any]]) -> M:
    """``model`` with each secret value masked (``***``) — except in a snapshot's
    ``state``, where a whole value goes back to being its reference, for restore."""
    if not secrets:
        return model

    def hide(value: Any, *, as_reference: bool) -> Any:
        if isinstance(value, str):
            if as_reference and value in secrets:
                return secrets[value]
            for secret in secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, Mapping):
            return {k: hide(v, as_reference=as_reference) for k, v in value.items()}
        if isinstance(value, list):
            return [hide(v, as_reference=as_reference) for v in value]
        return value

    dumped = model.model_dump(mode="json")
    return type(model).model_validate({k: hide(v, as_reference=k == "state") for k, v in dumped.items()})


class TargetPool:
    """``pool(type, settings) -> Target``: per-release settings travel in each step's
    ``Release.settings``; what is configured here is where each type keeps its state."""

    def __init__(self, home: Path, workdir: Path | None = None):
        self._home = home
        self._workdir = workdir
        self._targets: dict[str, SecretsResolved] = {}

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

    def __call__(self, type_: str, settings: Mapping[str, Any] | None = None) -> Any:
        if type_ not in self._targets:
            self._targets[type_] = SecretsResolved(create_target(type_, self._config(type_)), self._workdir)
        return self._targets[type_]

    async def close(self, *, stop_processes: bool) -> None:
        for target in self._targets.values():
            close = getattr(target, "close", None)
            if close is not None:
                await close(stop_processes=stop_processes)
