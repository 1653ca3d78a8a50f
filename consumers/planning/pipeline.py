"""Pipelines as configuration: one YAML file per service (``<service>.yaml``).

A file is a ``PipelineFile``: the service, its pipeline's name, and the ordered
environments a release walks through, each with its target, values overlay,
strategy, schedule, gate and analysis. Every model is frozen and refuses unknown
fields, so a typo is an error with a line number (``loader``), never a setting
silently ignored. ``shiplog pipeline schema`` prints
``PipelineFile.model_json_schema()`` for editors, hence the descriptions.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Defaults, in one place.
DEFAULT_PIPELINE = "default"
DEFAULT_REPLICAS = 1
DEFAULT_SCALE_DOWN_DELAY_S = 30
#: canary weights when a canary has no steps of its own (or is chosen by ``auto``):
#: each weight is followed by an analysis, and the canary is promoted after the last.
DEFAULT_CANARY_WEIGHTS = (20, 50)
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_HEALTH_TIMEOUT_S = 2.0
DEFAULT_HEALTH_SUCCESSES = 3
DEFAULT_HEALTH_INTERVAL_S = 1.0
DEFAULT_ANALYSIS_INTERVAL_S = 10.0
DEFAULT_ANALYSIS_COUNT = 3
DEFAULT_FAILURE_LIMIT = 0
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_TIMEZONE = "UTC"
#: approval levels supported today; the list shape is ready for more.
MAX_APPROVAL_LEVELS = 1

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _type_required(schema: dict[str, Any]) -> None:
    # `type` has a default for building strategies in code, but a YAML file must say it.
    schema["required"] = ["type", *schema.get("required", [])]


# --- values and secrets -------------------------------------------------------------


class SecretSource(_Config):
    """Where a secret's value lives: exactly one of an environment variable or a file.
    The value itself never appears in the configuration, in events or in logs."""

    model_config = ConfigDict(
        title="Secret source",
        json_schema_extra={"oneOf": [{"required": ["env"]}, {"required": ["file"]}]},
    )

    env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable (of the planning process) holding the value",
        examples=["CHECKOUT_DB_PASSWORD"],
    )
    file: str | None = Field(
        default=None,
        min_length=1,
        description="path of a file holding the value; relative paths are relative to the "
        "config directory; one trailing newline is dropped",
        examples=["/run/secrets/checkout-db-password"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret names exactly one of `env` or `file`")
        return self

    def __str__(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class SecretRef(_Config):
    """A value that is a secret, given only as a reference: ``{secret: {env: NAME}}``
    or ``{secret: {file: PATH}}``."""

    model_config = ConfigDict(title="Secret reference")

    secret: SecretSource = Field(description="where the value lives")


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `port: 8080` and `debug: true` as int and bool; values are strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(
            "a value is a text, a number, a boolean or {secret: {env: NAME}} / {secret: {file: PATH}}"
        )
    return value


PlainValue = Annotated[
    str,
    BeforeValidator(_scalar_to_str),
    WithJsonSchema(
        {
            "type": ["string", "number", "boolean"],
            "description": "a plain value, rendered as a string (numbers as written, "
            "booleans as true / false)",
        }
    ),
]


def _value_kind(value: Any) -> str:
    return "secret-ref" if isinstance(value, dict | SecretRef) else "plain"


#: A plain value or a secret reference. The tag names are not YAML keys, so the
#: loader can tell them from fields in an error's location.
Value = Annotated[
    Annotated[PlainValue, Tag("plain")] | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_value_kind),
]


# --- target -------------------------------------------------------------------------


class TargetSpec(_Config):
    """Where a deployment of this environment lands."""

    model_config = ConfigDict(title="Target")

    type: str = Field(
        min_length=1,
        description="the target type; the planning consumer refuses an unknown one",
        examples=["local", "kubernetes", "aws", "ssh"],
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="type-specific settings, passed to the target as given (for `local`: "
        "`command`, a list with {port} and {version} placeholders)",
    )


# --- strategies ---------------------------------------------------------------------

Replicas = Annotated[int, Field(ge=1, description="instances to run of the new version")]


class RollingStrategy(_Config):
    """Replace instances with the new version a batch at a time."""

    model_config = ConfigDict(title="Rolling strategy", json_schema_extra=_type_required)

    type: Literal["rolling"] = Field(default="rolling", description="rolling")
    replicas: Replicas = DEFAULT_REPLICAS
    batch_size: int = Field(default=1, ge=1, description="instances replaced at a time")
    max_unavailable: int = Field(
        default=0, ge=0, description="instances that may be down at once during the roll"
    )

    @model_validator(mode="after")
    def _fits_replicas(self) -> RollingStrategy:
        if self.batch_size > self.replicas:
            raise ValueError(f"batch_size {self.batch_size} is more than replicas {self.replicas}")
        if self.max_unavailable > self.replicas:
            raise ValueError(f"max_unavailable {self.max_unavailable} is more than replicas {self.replicas}")
        return self


class BlueGreenStrategy(_Config):
    """Start the new colour beside the active one (preview), switch all traffic to it,
    stop the old colour after a delay."""

    model_config = ConfigDict(title="Blue-green strategy", json_schema_extra=_type_required)

    type: Literal["blue_green"] = Field(default="blue_green", description="blue-green")
    replicas: Replicas = DEFAULT_REPLICAS
    scale_down_delay_s: int = Field(
        default=DEFAULT_SCALE_DOWN_DELAY_S,
        ge=0,
        description="seconds the old colour keeps running after the switch (a quick way back)",
    )
    preview_analysis: bool = Field(
        default=True, description="run the analysis against the preview before switching"
    )


class PauseSpec(_Config):
    model_config = ConfigDict(title="Pause")

    duration_s: int | None = Field(
        default=None,
        ge=1,
        description="seconds to wait; absent: wait until someone runs `shiplog promote`",
    )


class AnalysisStepSpec(_Config):
    """Run the environment's analysis and go on only when it is Successful."""

    model_config = ConfigDict(title="Analysis step")


class CanaryStep(_Config):
    """One canary step: exactly one of `set_weight`, `pause` or `analysis`."""

    model_config = ConfigDict(title="Canary step", json_schema_extra={"minProperties": 1, "maxProperties": 1})

    set_weight: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="percent of traffic to the canary; 100 promotes it (only as the last step)",
    )
    pause: PauseSpec | None = Field(default=None, description="wait, for a time or until promoted")
    analysis: AnalysisStepSpec | None = Field(
        default=None, description="analyse the canary against the stable version"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        given = [n for n in ("set_weight", "pause", "analysis") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "a canary step is exactly one of `set_weight`, `pause` or `analysis`"
                + (f", not {' and '.join(given)}" if given else "")
            )
        return self


def default_canary_steps() -> list[CanaryStep]:
    """20% -> analysis -> 50% -> analysis (then promote)."""
    steps: list[CanaryStep] = []
    for weight in DEFAULT_CANARY_WEIGHTS:
        steps += [CanaryStep(set_weight=weight), CanaryStep(analysis=AnalysisStepSpec())]
    return steps


class CanaryStrategy(_Config):
    """Run the new version beside the stable one and shift traffic to it step by step;
    the canary is promoted after the last step."""

    model_config = ConfigDict(title="Canary strategy", json_schema_extra=_type_required)

    type: Literal["canary"] = Field(default="canary", description="canary")
    replicas: Replicas = DEFAULT_REPLICAS
    steps: list[CanaryStep] = Field(
        default_factory=default_canary_steps,
        min_length=1,
        description="in order; default: set_weight 20, analysis, set_weight 50, analysis "
        "(promotion follows the last step)",
    )

    @field_validator("steps")
    @classmethod
    def _full_weight_last(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        for i, step in enumerate(steps[:-1]):
            if step.set_weight == 100:
                raise ValueError(
                    f"set_weight 100 promotes the canary: it can only be the last step, not step {i}"
                )
        return steps


class AutoStrategy(_Config):
    """Let shiplog choose: canary where the target can split traffic and the analysis
    has metrics, blue-green where it can run two colours, rolling otherwise."""

    model_config = ConfigDict(title="Automatic strategy", json_schema_extra=_type_required)

    type: Literal["auto"] = Field(default="auto", description="chosen by shiplog")
    replicas: Replicas = DEFAULT_REPLICAS


Strategy = Annotated[
    RollingStrategy | BlueGreenStrategy | CanaryStrategy | AutoStrategy,
    Field(discriminator="type"),
]


# --- schedule -----------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``"8h"``, ``"1h30m"``, ``"14d"``, ``"90s"`` -> timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration like 8h, 1h30m, 14d or 90s")
    parts = {k: int(v) for k, v in match.groupdict(default="0").items()}
    delta = timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    if delta <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    return delta


class Window(_Config):
    """A deploy window (allow) or a freeze (deny): it opens at each time the cron
    expression names, in its time zone, and lasts `duration` on that zone's wall clock.
    With no allow window an environment is always open except in a deny window; with
    allow windows it is open only inside one of them. Deny wins."""

    model_config = ConfigDict(title="Window")

    kind: Literal["allow", "deny"] = Field(description="allow: a deploy window; deny: a freeze")
    cron: str = Field(
        description="when the window opens: five fields (minute hour day-of-month month "
        "day-of-week) or a macro like @daily",
        examples=["0 9 * * 1-5", "0 0 20 12 *"],
    )
    duration: str = Field(
        description="how long it stays open, on the wall clock: days, hours, minutes, seconds",
        examples=["8h", "1h30m", "14d"],
        json_schema_extra={"pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"},
    )
    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="IANA time zone the cron expression is read in",
        examples=["Europe/Berlin", "America/New_York", "UTC"],
    )
    name: str | None = Field(default=None, description="shown in reasons and in the plan")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        expr = cron.strip()
        if not expr.startswith("@") and len(expr.split()) != 5:
            raise ValueError(f"{cron!r} is not a cron expression of five fields")
        if not croniter.is_valid(expr):
            raise ValueError(f"{cron!r} is not a valid cron expression")
        try:
            croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
        except ValueError:  # croniter's CroniterBadDateError: e.g. "0 0 30 2 *"
            raise ValueError(f"{cron!r} never fires") from None
        return expr

    @field_validator("duration")
    @classmethod
    def _valid_duration(cls, duration: str) -> str:
        parse_duration(duration)
        return duration

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone (like Europe/Berlin or UTC)") from None
        return name

    @property
    def length(self) -> timedelta:
        return parse_duration(self.duration)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def label(self) -> str:
        what = "deploy window" if self.kind == "allow" else "freeze"
        named = f" {self.name!r}" if self.name else ""
        return f"{what}{named} ({self.cron} for {self.duration}, {self.timezone})"


# --- gate ---------------------------------------------------------------------------


class AutoApprove(_Config):
    """Criteria over the build's data; a criterion the build has no data for does not hold."""

    model_config = ConfigDict(title="Auto-approval criteria")

    tests_failed_max: int | None = Field(
        default=0, ge=0, description="most failed tests allowed; null: not checked"
    )
    coverage_min: float | None = Field(
        default=None, ge=0, le=100, description="least test coverage in percent; null: not checked"
    )
    critical_vulns_max: int | None = Field(
        default=0, ge=0, description="most critical vulnerabilities allowed; null: not checked"
    )
    environments: list[str] | None = Field(
        default=None, description="auto-approve only in these environments; null: in any"
    )


class ApprovalLevel(_Config):
    """One level of human approval. Today: one level, quorum 1, no roles."""

    model_config = ConfigDict(title="Approval level")

    name: str = Field(default="approval", min_length=1, description="shown to approvers")
    approvers: list[str] = Field(
        default_factory=list, description="named users who may approve; empty: anyone"
    )
    roles: list[str] = Field(
        default_factory=list, description="roles whose members may approve (not supported yet)"
    )
    quorum: int = Field(default=1, ge=1, description="approvals needed (only 1 supported yet)")

    @model_validator(mode="after")
    def _supported(self) -> ApprovalLevel:
        if self.roles:
            raise ValueError("approval roles are not supported yet; name the approvers")
        if self.quorum != 1:
            raise ValueError("an approval quorum other than 1 is not supported yet")
        return self


class ManualApproval(_Config):
    model_config = ConfigDict(title="Manual approval")

    required: bool = Field(
        default=True,
        description="true: a person approves even when the auto-approval criteria hold; "
        "false: a person is asked only when they do not",
    )
    levels: list[ApprovalLevel] = Field(
        default_factory=lambda: [ApprovalLevel()],
        min_length=1,
        max_length=MAX_APPROVAL_LEVELS,
        description="approval levels, in order (one today)",
    )
    expires_after_s: int | None = Field(
        default=None, ge=1, description="seconds after which an unanswered request is denied"
    )


class Gate(_Config):
    """The approval policy. No criteria and no manual approval: approved at once.
    Criteria that do not hold ask a person (with `manual`'s levels, or one default
    level): approval fails closed."""

    model_config = ConfigDict(title="Gate")

    auto_approve: AutoApprove | None = Field(
        default=None, description="approve without a person when every criterion holds"
    )
    manual: ManualApproval | None = Field(default=None, description="approval by a person")


# --- analysis -----------------------------------------------------------------------


class HealthCheck(_Config):
    """HTTP GET on every instance; healthy after `successes` consecutive 2xx answers."""

    model_config = ConfigDict(title="Health check")

    path: str = Field(default=DEFAULT_HEALTH_PATH, pattern=r"^/", description="HTTP path to GET")
    timeout_s: float = Field(default=DEFAULT_HEALTH_TIMEOUT_S, gt=0, description="per request")
    successes: int = Field(default=DEFAULT_HEALTH_SUCCESSES, ge=1, description="consecutive successes needed")
    interval_s: float = Field(default=DEFAULT_HEALTH_INTERVAL_S, gt=0, description="between requests")


class MetricCheck(_Config):
    """A metric of the new version, from the target's own metrics, against a limit:
    either an absolute `max` or `max_increase_pct` over what it is compared with."""

    model_config = ConfigDict(
        title="Metric check",
        json_schema_extra={"oneOf": [{"required": ["max"]}, {"required": ["max_increase_pct"]}]},
    )

    name: Literal["error_rate", "latency_p99"] = Field(
        description="error_rate: fraction of requests that failed (0-1); latency_p99: seconds"
    )
    max: float | None = Field(default=None, ge=0, description="absolute upper limit")
    max_increase_pct: float | None = Field(
        default=None, ge=0, description="upper limit as percent over the compared value"
    )
    compare: Literal["stable", "baseline"] = Field(
        default="stable",
        description="stable: the version serving now; baseline: a fresh instance of it",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> MetricCheck:
        if (self.max is None) == (self.max_increase_pct is None):
            raise ValueError("a metric check has exactly one of `max` or `max_increase_pct`")
        if self.name == "error_rate" and self.max is not None and self.max > 1:
            raise ValueError(f"error_rate is a fraction from 0 to 1; max {self.max} is more than 1")
        return self


class Load(_Config):
    """Requests the analysis sends through the environment's endpoint itself, so its
    metrics have data without real traffic (as Flagger's load tester does)."""

    model_config = ConfigDict(title="Analysis load")

    requests: int = Field(
        default=100, ge=1, description="requests per analysis, spread over its measurements"
    )
    path: str = Field(default="/", pattern=r"^/", description="HTTP path to GET")
    concurrency: int = Field(default=10, ge=1, description="requests in flight at once")
    timeout_s: float = Field(default=2.0, gt=0, description="per request")


class Analysis(_Config):
    """Health checks plus metric checks, measured `count` times `interval_s` apart.
    Each measurement is Successful, Failed, Inconclusive or Error; missing data never
    passes."""

    model_config = ConfigDict(title="Analysis")

    health: HealthCheck | None = Field(default_factory=HealthCheck, description="null: no health check")
    metrics: list[MetricCheck] = Field(
        default_factory=list, description="metric checks; empty: health checks only"
    )
    interval_s: float = Field(
        default=DEFAULT_ANALYSIS_INTERVAL_S, gt=0, description="seconds between measurements"
    )
    count: int = Field(default=DEFAULT_ANALYSIS_COUNT, ge=1, description="measurements per analysis")
    failure_limit: int = Field(
        default=DEFAULT_FAILURE_LIMIT, ge=0, description="failed measurements tolerated"
    )
    consecutive_error_limit: int = Field(
        default=DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        ge=0,
        description="measurements in a row that could not be taken before the analysis errs",
    )
    inconclusive_limit: int = Field(
        default=1, ge=0, description="inconclusive measurements tolerated before the analysis is"
    )
    load: Load | None = Field(default=None, description="traffic the analysis generates itself")


# --- environment and file -----------------------------------------------------------


class Environment(_Config):
    """One stage of the pipeline."""

    model_config = ConfigDict(title="Environment")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="unique within the pipeline",
        examples=["dev", "staging", "production"],
    )
    target: TargetSpec = Field(description="where deployments of this environment land")
    values: dict[str, Value] = Field(
        default_factory=dict,
        description="configuration rendered into the deployment; secrets only as references",
    )
    strategy: Strategy = Field(
        default_factory=AutoStrategy,
        description="rolling, blue_green, canary, or auto (the default): chosen by what the target can do",
    )
    schedule: list[Window] = Field(
        default_factory=list, description="deploy windows and freezes; empty: always open"
    )
    gate: Gate = Field(default_factory=Gate, description="the approval policy; default: none")
    analysis: Analysis = Field(
        default_factory=Analysis, description="how a deployment is verified; default: health checks"
    )


class PipelineFile(_Config):
    """The pipeline of one service: the environments a release walks through, in order."""

    model_config = ConfigDict(title="shiplog pipeline")

    service: str = Field(pattern=NAME_PATTERN, description="the file is named <service>.yaml")
    pipeline: str = Field(
        default=DEFAULT_PIPELINE,
        pattern=NAME_PATTERN,
        description="the name a build event asks for in its `pipeline` field",
    )
    environments: list[Environment] = Field(min_length=1, description="in promotion order")

    @field_validator("environments")
    @classmethod
    def _unique_names(cls, environments: list[Environment]) -> list[Environment]:
        seen: set[str] = set()
        for env in environments:
            if env.name in seen:
                raise PydanticCustomError(
                    "duplicate_environment",
                    "environment {name!r} is defined more than once",
                    {"name": env.name},
                )
            seen.add(env.name)
        return environments

    def environment(self, name: str) -> Environment:
        """The environment of this name; KeyError if the pipeline has none."""
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)

    def next_after(self, name: str) -> Environment | None:
        """The environment a release is promoted to after ``name``; None after the last."""
        i = self.environments.index(self.environment(name))
        return self.environments[i + 1] if i + 1 < len(self.environments) else None
