"""Targets: where a deployment lands, behind one small protocol.

A step is declarative and idempotent — "canary at weight 25", never "add 5" — and
carries a ``step_id`` unique within the deployment; a target keeps its own record
of the step ids it applied, so a step re-driven after a crash is not applied twice
(``apply`` returns the recorded result instead).

Implementations are ``<Vendor>Target`` with a ``TYPE``; ``create_target`` maps a
type to its class and raises on an unknown one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from events.errors import InvalidInput

StepKind = Literal[
    "rolling",  # replace instances with `version`, `batch_size` at a time
    "preview",  # blue-green: start the new colour beside the active one, no traffic
    "switch",  # blue-green: send all traffic to the new colour
    "scale_down",  # blue-green / canary: stop the instances of everything but `version`
    "set_weight",  # canary: start the canary if needed; send `weight`% to it
    "promote",  # canary: the canary becomes stable at 100%, old stable stopped
]


class Release(BaseModel):
    """What to run: one version of one service, rendered for one environment."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    version: str
    artifact: str
    #: rendered configuration (environment values overlay); secrets already resolved
    #: by the caller and never logged.
    config: dict[str, str] = Field(default_factory=dict)
    #: target-specific settings from the pipeline (e.g. the local command template)
    settings: dict[str, Any] = Field(default_factory=dict)


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str = Field(min_length=1, description="unique within the deployment")
    deployment_id: str
    kind: StepKind
    release: Release
    weight: int | None = Field(default=None, ge=0, le=100)
    batch_size: int = Field(default=1, ge=1)
    replicas: int = Field(default=1, ge=1)


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str
    ok: bool
    #: True when the target had already applied this step id: nothing was done again.
    already_applied: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Snapshot(BaseModel):
    """Enough to restore what ran before: the target fills ``state`` with its own
    description (versions, commands, config, weights) and ``restore`` takes it back."""

    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    version: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)


class Track(BaseModel):
    """One version serving: where to reach it and where its metrics are. A
    ``baseline`` runs the stable version fresh beside a canary (its own instances)."""

    model_config = ConfigDict(frozen=True)

    version: str
    role: Literal["stable", "canary", "preview", "active", "baseline"]
    weight: int = 0
    urls: list[str] = Field(default_factory=list)


class TargetStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    environment: str
    reachable: bool
    tracks: list[Track] = Field(default_factory=list)
    #: the URL users reach (through the traffic split, if any)
    endpoint: str | None = None
    #: Prometheus text-format endpoint with per-version request/error/latency metrics
    metrics_url: str | None = None


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    traffic_split: bool = False
    two_colours: bool = False
    #: versions run on instances with URLs to probe; False for serverless, whose health
    #: is the platform's (no health check is planned; a restore is healthy when it serves)
    instances: bool = True
    #: restore brings back a newer snapshot as well as an older one; False where restore
    #: only goes back (down migrations): a rollback drill could not roll forward again
    reversible: bool = True


class Target(Protocol):
    """Where a service lives (namespace, function, hosts, database...) comes from the
    release's target settings. ``snapshot``, ``status`` and ``restore`` take them as
    ``settings``: callers pass the plan's ``target.settings`` — the same
    ``Release.settings`` that ``apply`` gets — so a new instance (after a process
    restart) acts where ``apply`` acts, and invalid settings raise as ``apply`` would
    (``InvalidInput``). ``None`` is for callers that have none: the target uses what
    the last ``apply`` of the service used, else its config and defaults. A target
    whose record does not depend on them (``local``: one record per service and
    environment) may ignore them.

    ``restore`` puts a snapshot back where it was taken, so what the snapshot records
    of its placement wins over ``settings`` (a rollback acts on what was snapshotted,
    even if the settings moved since); ``settings`` supply only what it does not record:

    - ``kubernetes`` (kubeconfig, context, namespace, names), ``ecs`` (region, cluster,
      services, listener), ``lambda`` (region, function, alias), ``cloud_run`` and
      ``azure_container_apps`` (the full resource name), ``ssh`` (hosts and settings):
      ``settings`` place a snapshot taken before it recorded that, and give what is
      never recorded (Cloud Run's preview tag, Azure's labels, the stop command an
      older SSH snapshot lacks);
    - ``dbmigrate``: the database URL (a secret) and the migrations path are never
      written to a snapshot; ``settings`` name them and win over the config's
      ``databases`` and the last ``apply``'s;
    - ``local``: the snapshot carries each track's command; ``settings`` are ignored."""

    TYPE: str
    capabilities: Capabilities

    async def snapshot(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> Snapshot:
        """What runs now, enough to restore it exactly; placed by ``settings``."""
        ...

    async def apply(self, step: Step) -> StepResult:
        """Bring the target to the state the step declares; idempotent by step_id."""
        ...

    async def status(
        self, service: str, environment: str, settings: Mapping[str, Any] | None = None
    ) -> TargetStatus:
        """What serves now, where, with which weights; ``reachable`` is the ping;
        placed by ``settings``."""
        ...

    async def restore(
        self, snapshot: Snapshot, *, step_id: str, settings: Mapping[str, Any] | None = None
    ) -> StepResult:
        """Put back exactly what the snapshot describes, where it was taken (``settings``
        fill in what it does not record); idempotent by step_id."""
        ...


TargetFactory = Callable[[Mapping[str, Any]], Target]
_FACTORIES: dict[str, TargetFactory] = {}
#: type -> the model of the settings a pipeline gives it (None: not checked ahead)
_SETTINGS: dict[str, type[BaseModel] | None] = {}
#: the targets shiplog ships, each registering itself when imported
BUILTIN = ("local", "ssh", "kubernetes", "dbmigrate", "aws", "serverless", "gcp", "azure")
#: settings shiplog reads beside any target (the health path a rollback checks)
COMMON_SETTINGS = frozenset({"health_path"})


def register_target(type_: str, factory: TargetFactory, settings: type[BaseModel] | None = None) -> None:
    _FACTORIES[type_] = factory
    _SETTINGS[type_] = settings


def settings_error(type_: str, exc: Exception) -> InvalidInput:
    """Bad release settings of a ``type_`` target, naming each field but never its value
    (a setting may be a resolved secret, e.g. a database URL with its password)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in errors)
    else:
        problems = str(exc)
    return InvalidInput(f"{type_} release settings: {problems}")


def configured(target_class: Callable[[Any], Target], config_model: type[BaseModel]) -> TargetFactory:
    """The factory of a target built from its config model: the composition root's
    config validated, a bad one refused naming each field — never its value, which
    may be a credential."""
    type_ = getattr(target_class, "TYPE", "target")

    def create(config: Mapping[str, Any]) -> Target:
        try:
            return target_class(config_model.model_validate(dict(config)))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            raise InvalidInput(f"{type_} target config: {problems}") from None

    return create


def load_builtin() -> None:
    for name in BUILTIN:
        importlib.import_module(f"adapters.targets.{name}")


def check_settings(type_: str, settings: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """What is wrong with an environment's target as a pipeline configures it, each as
    (path under ``target``, message): an unknown type, an unknown setting (a typo would
    otherwise be ignored), a missing or bad value. A secret reference stands for a
    string. Empty: nothing found."""
    load_builtin()
    if type_ not in _FACTORIES:
        return [(("type",), f"unknown target type {type_!r}; known: {', '.join(sorted(_FACTORIES))}")]
    model = _SETTINGS.get(type_)
    if model is None:
        return []
    names = {n for name, f in model.model_fields.items() for n in (name, f.alias) if n}
    problems: list[tuple[tuple[str | int, ...], str]] = [
        (("settings", key), f"unknown setting {key!r} for a {type_} target")
        for key in settings
        if key not in names and key not in COMMON_SETTINGS
    ]
    known = {k: _secrets_as_strings(v) for k, v in settings.items() if k in names}
    try:
        model.model_validate(known)
    except ValidationError as exc:
        problems += [(("settings", *err["loc"]), err["msg"]) for err in exc.errors(include_url=False)]
    return problems


def _secrets_as_strings(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"secret"}:
        return "secret"
    if isinstance(value, dict):
        return {k: _secrets_as_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_secrets_as_strings(v) for v in value]
    return value


def create_target(type_: str, config: Mapping[str, Any]) -> Target:
    """The target of this type; raises on an unknown type (never a silent fallback)."""
    if type_ not in _FACTORIES:
        load_builtin()
    try:
        factory = _FACTORIES[type_]
    except KeyError:
        raise InvalidInput(
            f"unknown target type {type_!r}; known: {', '.join(sorted(_FACTORIES)) or 'none'}"
        ) from None
    return factory(config)
