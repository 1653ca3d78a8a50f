"""Configuration of the kubernetes target and the release settings it reads.

Defaults live here as named constants; the composition root builds a
``KubernetesTargetConfig`` and passes it in — the target never reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.targets import settings_error

FIELD_MANAGER = "shiplog"
#: how long a rollout may take before the step gives up (beyond the Deployment's own
#: progressDeadlineSeconds, which fails it earlier with ProgressDeadlineExceeded)
DEFAULT_ROLLOUT_TIMEOUT_S = 900.0
#: server-side timeout of one watch request; the watch is re-opened until the rollout ends
DEFAULT_WATCH_TIMEOUT_S = 60
#: how many applied step results the Deployment's annotation keeps
DEFAULT_APPLIED_KEEP = 20
#: the least time between a blue-green switch and stopping the old colour, counted from
#: the switch. 0 by default: the pipeline's ``scale_down_delay_s`` already schedules a
#: durable pause before ``scale_down`` (consumers/planning/strategy.py); this setting is a
#: floor for when the target is driven otherwise, and never adds to that pause
DEFAULT_SCALE_DOWN_DELAY_S = 0.0
VERSION_LABEL = "app.kubernetes.io/version"
APPLIED_ANNOTATION = "shiplog.io/applied-steps"
#: on a colour Deployment: when traffic was switched to it (epoch seconds)
SWITCHED_ANNOTATION = "shiplog.io/switched-at"
SNAPSHOT_FORMAT = 2


class RouteRef(BaseModel):
    """A Gateway API ``HTTPRoute`` whose backendRefs split canary traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    #: default: the service's namespace
    namespace: str | None = None


class KubernetesTargetConfig(BaseModel):
    """Defaults for every release; a release's settings override the cluster ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: kubeconfig file; ``None`` and no ``kubeconfig`` setting = in-cluster config
    kubeconfig: Path | None = None
    context: str | None = None
    #: environment -> namespace, for environments not named like their namespace
    namespaces: dict[str, str] = Field(default_factory=dict)
    rollout_timeout: float = Field(default=DEFAULT_ROLLOUT_TIMEOUT_S, gt=0)
    watch_timeout: int = Field(default=DEFAULT_WATCH_TIMEOUT_S, ge=1)
    applied_keep: int = Field(default=DEFAULT_APPLIED_KEEP, ge=1)


class KubernetesSettings(BaseModel):
    """The release settings the target reads (``Release.settings``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kubeconfig: Path | None = None
    context: str | None = None
    #: default: the environment's name
    namespace: str | None = None
    #: default: the service's name
    deployment: str | None = None
    #: the container whose image and env are set; default: the service's name
    container: str | None = None
    #: Services whose selectors a snapshot records and a restore puts back; the first is
    #: the active one (blue-green switches it; the route's stable backend). Default: a
    #: Service named like the Deployment
    services: list[str] | None = Field(default=None, min_length=1)
    #: container port, used when the target creates the Deployment
    port: int | None = Field(default=None, ge=1, le=65535)
    progress_deadline_seconds: int | None = Field(default=None, ge=1)
    #: canary traffic split by this route's backend weights instead of replica ratio
    route: RouteRef | None = None
    #: blue-green: how long after the switch ``scale_down`` stops the old colour
    scale_down_delay_seconds: float = Field(default=DEFAULT_SCALE_DOWN_DELAY_S, ge=0)

    @classmethod
    def of(cls, settings: dict[str, Any]) -> KubernetesSettings:
        try:
            return cls.model_validate(settings)
        except ValueError as exc:
            raise settings_error("kubernetes", exc) from None
