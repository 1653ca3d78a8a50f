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

from adapters.metrics.cloudwatch import MetricQuery
from adapters.metrics.prometheus import PromQLTemplate, TemplateError, promql_duration

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
DEFAULT_INITIAL_DELAY_S = 0.0
DEFAULT_PROMETHEUS_TIMEOUT_S = 10.0
#: what {{window}} stands for in a query template unless the check says otherwise
DEFAULT_QUERY_WINDOW = "1m"
DEFAULT_JUDGE_LOOKBACK = "10m"
DEFAULT_JUDGE_STEP_S = 30.0
DEFAULT_TIMEZONE = "UTC"
#: approval levels supported today; the list shape is ready for more.
MAX_APPROVAL_LEVELS = 5

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
    """One automatic-approval rule: criteria over the build's data, the promotion and
    the clock. A criterion the build has no data for does not hold; the first rule
    whose every criterion holds approves (and is recorded); none: people decide."""

    model_config = ConfigDict(title="Auto-approval rule")

    name: str = Field(default="auto", min_length=1, description="recorded with the approval")
    tests_failed_max: int | None = Field(
        default=0, ge=0, description="most failed tests allowed; null: not checked"
    )
    coverage_min: float | None = Field(
        default=None, ge=0, le=100, description="least test coverage in percent; null: not checked"
    )
    critical_vulns_max: int | None = Field(
        default=0, ge=0, description="most critical vulnerabilities allowed; null: not checked"
    )
    high_vulns_max: int | None = Field(
        default=None, ge=0, description="most high vulnerabilities allowed; null: not checked"
    )
    environments: list[str] | None = Field(
        default=None, description="auto-approve only in these environments; null: in any"
    )
    max_changed_lines: int | None = Field(
        default=None,
        ge=0,
        description="most lines changed since the version that serves (the build's "
        "`change.lines`); null: not checked",
    )
    max_changed_files: int | None = Field(
        default=None, ge=0, description="most files changed (the build's `change.files`); null: not checked"
    )
    min_soak: str | None = Field(
        default=None,
        description="the version succeeded in the previous environment at least this long ago "
        "(e.g. 2h); null: not checked. Waiting out the rest re-evaluates the rule then",
        json_schema_extra={"pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"},
    )
    windows: list[Window] | None = Field(
        default=None,
        description="auto-approve only while one of these allow windows is open (and no deny "
        "window); null: at any time",
    )

    @field_validator("min_soak")
    @classmethod
    def _valid_soak(cls, soak: str | None) -> str | None:
        if soak is not None:
            parse_duration(soak)
        return soak


class ApprovalLevel(_Config):
    """One level of human approval: who may approve it, and how many must."""

    model_config = ConfigDict(title="Approval level")

    name: str = Field(
        default="approval", min_length=1, description="shown to approvers", examples=["team-lead"]
    )
    roles: list[str] = Field(default_factory=list, description="roles whose holders may approve this level")
    approvers: list[str] = Field(
        default_factory=list, description="named principals who may approve (besides the roles)"
    )
    quorum: int = Field(default=1, ge=1, le=20, description="approvals from distinct principals needed")


class ManualApproval(_Config):
    model_config = ConfigDict(title="Manual approval")

    required: bool = Field(
        default=True,
        description="true: people approve even when an auto-approval rule holds; "
        "false: people are asked only when no rule holds",
    )
    levels: list[ApprovalLevel] = Field(
        default_factory=lambda: [ApprovalLevel()],
        min_length=1,
        max_length=MAX_APPROVAL_LEVELS,
        description="approval levels, completed in order",
    )
    separation_of_duties: bool = Field(
        default=True,
        description="the build's author and whoever triggered the deployment may not approve it",
    )
    expires_after: str | None = Field(
        default=None,
        description="a level not completed this long after it was requested ends the deployment "
        "as denied (expired); null: requests wait forever",
        json_schema_extra={"pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"},
    )
    remind_before: str | None = Field(
        default=None,
        description="send a reminder this long before a request expires (default: at 80% of `expires_after`)",
        json_schema_extra={"pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"},
    )
    expires_after_s: int | None = Field(
        default=None, ge=1, description="deprecated: seconds; use expires_after"
    )

    @field_validator("expires_after", "remind_before")
    @classmethod
    def _valid_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _distinct_levels(self) -> ManualApproval:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"approval level names must be distinct: {names}")
        if self.remind_before and not (self.expires_after or self.expires_after_s):
            raise ValueError("remind_before needs expires_after")
        return self

    @property
    def expiry(self) -> timedelta | None:
        if self.expires_after:
            return parse_duration(self.expires_after)
        return timedelta(seconds=self.expires_after_s) if self.expires_after_s else None

    @property
    def reminder_lead(self) -> timedelta | None:
        expiry = self.expiry
        if expiry is None:
            return None
        return parse_duration(self.remind_before) if self.remind_before else expiry / 5


class Gate(_Config):
    """The approval policy. No rules and no manual approval: approved at once. When no
    auto-approval rule holds, people are asked (with `manual`'s levels, or one default
    level): approval fails closed."""

    model_config = ConfigDict(title="Gate")

    auto_approve: AutoApprove | list[AutoApprove] | None = Field(
        default=None, description="a rule (or rules) that approve without people when every criterion holds"
    )
    manual: ManualApproval | None = Field(default=None, description="approval by people")

    @property
    def rules(self) -> list[AutoApprove]:
        if self.auto_approve is None:
            return []
        return self.auto_approve if isinstance(self.auto_approve, list) else [self.auto_approve]


# --- analysis -----------------------------------------------------------------------


class HealthCheck(_Config):
    """HTTP GET on every instance; healthy after `successes` consecutive 2xx answers."""

    model_config = ConfigDict(title="Health check")

    path: str = Field(default=DEFAULT_HEALTH_PATH, pattern=r"^/", description="HTTP path to GET")
    timeout_s: float = Field(default=DEFAULT_HEALTH_TIMEOUT_S, gt=0, description="per request")
    successes: int = Field(default=DEFAULT_HEALTH_SUCCESSES, ge=1, description="consecutive successes needed")
    interval_s: float = Field(default=DEFAULT_HEALTH_INTERVAL_S, gt=0, description="between requests")


class VsPrevious(_Config):
    """A relative criterion against earlier releases (as Keptn's): the new version's
    value may be at most `pct` % above the mean of the same check's recorded values in
    the last `releases` successful deployments of the service to this environment."""

    model_config = ConfigDict(title="Limit against previous releases")

    pct: float = Field(ge=0, description="the most the value may be above the previous releases' mean, in %")
    releases: int = Field(
        default=3, ge=1, description="how many previous successful releases to compare with"
    )
    min_releases: int | None = Field(
        default=None,
        ge=1,
        description="fewer releases with a recorded value than this: Inconclusive; default: `releases`",
    )

    @model_validator(mode="after")
    def _min_within(self) -> VsPrevious:
        if self.min_releases is not None and self.min_releases > self.releases:
            raise ValueError(f"min_releases {self.min_releases} is above releases {self.releases}")
        return self


_VS_PREVIOUS_DESCRIPTION = "upper limit over the mean of the check's values in previous successful releases"


class MetricCheck(_Config):
    """A metric of the new version, from the target's own metrics, against a limit:
    either an absolute `max` or `max_increase_pct` over what it is compared with, and /
    or `max_increase_pct_vs_previous` over previous releases."""

    model_config = ConfigDict(
        title="Metric check",
        json_schema_extra={
            "anyOf": [
                {"required": ["max"]},
                {"required": ["max_increase_pct"]},
                {"required": ["max_increase_pct_vs_previous"]},
            ]
        },
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
    # excluded from the plan when unset, so plans of pipelines that do not use it keep their hash
    max_increase_pct_vs_previous: VsPrevious | None = Field(
        default=None, description=_VS_PREVIOUS_DESCRIPTION, exclude_if=lambda rule: rule is None
    )

    @model_validator(mode="after")
    def _one_limit(self) -> MetricCheck:
        if self.max is not None and self.max_increase_pct is not None:
            raise ValueError("a metric check has exactly one of `max` or `max_increase_pct`")
        if self.max is None and self.max_increase_pct is None and self.max_increase_pct_vs_previous is None:
            raise ValueError(
                "a metric check has exactly one of `max` or `max_increase_pct`, "
                "or only `max_increase_pct_vs_previous`"
            )
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


#: an HTTP header name (RFC 9110 token)
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
#: measurement names of the checks that are not metrics
RESERVED_CHECK_NAMES = frozenset({"target", "health", "impact", "slo_burn_rate", "alarms"})


class PrometheusProvider(_Config):
    """Where the analysis's PromQL queries run: Prometheus, or anything serving its
    HTTP API (Thanos, Mimir, VictoriaMetrics)."""

    model_config = ConfigDict(title="Prometheus provider")

    url: str = Field(
        pattern=r"^https?://[^/\s]+",
        description="base URL of the HTTP API (without /api/v1)",
        examples=["http://prometheus:9090", "https://mimir.example/prometheus"],
    )
    timeout_s: float = Field(
        default=DEFAULT_PROMETHEUS_TIMEOUT_S, gt=0, description="per query, retries included"
    )
    headers: dict[HeaderName, SecretRef] = Field(
        default_factory=dict,
        description="sent with every query (Authorization, X-Scope-OrgID...); values only as "
        "secret references, resolved when the analysis runs and never recorded",
    )


class QueryCheck(_Config):
    """A PromQL query of the new version, measured `count` times `interval_s` apart and
    judged against limits: an absolute `max` and / or `min`, and `max_increase_pct` over
    the same query for the compared track. The query must return one value (aggregate
    it); no data or NaN is never a pass."""

    model_config = ConfigDict(
        title="Query check",
        json_schema_extra={
            "anyOf": [
                {"required": ["max"]},
                {"required": ["min"]},
                {"required": ["max_increase_pct"]},
                {"required": ["max_increase_pct_vs_previous"]},
            ]
        },
    )

    name: str = Field(
        pattern=NAME_PATTERN,
        description="names its measurements; unique among the analysis's checks",
        examples=["error-rate", "p99-latency"],
    )
    query: PromQLTemplate = Field(
        description="PromQL with placeholders {{service}} {{environment}} {{version}} {{track}} "
        "(canary, baseline or stable) inside quoted label values, and {{window}}",
        examples=[
            'sum(rate(http_requests_total{service="{{service}}",version="{{version}}",code=~"5.."}'
            '[{{window}}])) / sum(rate(http_requests_total{service="{{service}}",'
            'version="{{version}}"}[{{window}}]))'
        ],
    )
    window: str = Field(
        default=DEFAULT_QUERY_WINDOW,
        description="what {{window}} stands for: a PromQL duration",
        examples=["1m", "5m"],
    )
    compare: Literal["stable", "baseline", "none"] = Field(
        default="stable",
        description="the track the query also runs for: stable (the version serving now), baseline "
        "(a fresh instance of it beside the canary) or none",
    )
    max: float | None = Field(default=None, description="the new version's value may not be above")
    min: float | None = Field(default=None, description="the new version's value may not be below")
    max_increase_pct: float | None = Field(
        default=None,
        ge=0,
        description="the most the new version's value may be above the compared track's, in %",
    )
    max_increase_pct_vs_previous: VsPrevious | None = Field(
        default=None, description=_VS_PREVIOUS_DESCRIPTION, exclude_if=lambda rule: rule is None
    )
    dry_run: bool = Field(
        default=False, description="measure and record, but never let this check decide the analysis"
    )
    interval_s: float | None = Field(
        default=None, gt=0, description="seconds between measurements; default: the analysis's"
    )
    count: int | None = Field(default=None, ge=1, description="measurements; default: the analysis's")
    initial_delay_s: float | None = Field(
        default=None, ge=0, description="seconds before the first measurement; default: the analysis's"
    )
    failure_limit: int | None = Field(
        default=None, ge=0, description="failed measurements tolerated; default: the analysis's"
    )
    inconclusive_limit: int | None = Field(
        default=None, ge=0, description="inconclusive measurements tolerated; default: the analysis's"
    )
    consecutive_error_limit: int | None = Field(
        default=None,
        ge=0,
        description="errors in a row tolerated before the check ends as Error; default: the analysis's",
    )

    @field_validator("window")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _limits(self) -> QueryCheck:
        limits = (self.max, self.min, self.max_increase_pct, self.max_increase_pct_vs_previous)
        if all(limit is None for limit in limits):
            raise ValueError(
                f"query check {self.name!r} needs a limit: `max`, `min`, `max_increase_pct` "
                "or `max_increase_pct_vs_previous` "
                "(set `dry_run: true` to only record it)"
            )
        if self.max_increase_pct is not None and self.compare == "none":
            raise ValueError(
                f"query check {self.name!r}: `max_increase_pct` needs `compare` stable or baseline"
            )
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"query check {self.name!r}: `min` {self.min:g} is above `max` {self.max:g}")
        return self


class JudgeMetricSpec(_Config):
    """One query check judged statistically: the canary's samples against the compared
    track's by a Mann-Whitney U test, with an effect-size tolerance."""

    model_config = ConfigDict(title="Judged metric")

    query: str = Field(pattern=NAME_PATTERN, description="the name of one of the analysis's `queries`")
    direction: Literal["increase", "decrease", "either"] = Field(
        default="increase", description="the change that is bad"
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="the test's confidence level")
    max_ratio_increase: float = Field(
        default=1.0,
        ge=1.0,
        description="a significant increase up to this canary/compared ratio is tolerated",
    )
    min_ratio_decrease: float = Field(
        default=1.0, gt=0.0, le=1.0, description="a significant decrease down to this ratio is tolerated"
    )
    effect: Literal["mean", "median"] = Field(default="mean", description="the centre the ratio is taken of")
    critical: bool = Field(default=False, description="a High or Low classification fails the analysis")
    group: str = Field(default="default", min_length=1, description="the metric group it scores in")
    min_samples: int = Field(default=10, ge=3, description="usable samples needed on each side")
    nan_strategy: Literal["remove", "replace", "reject"] = Field(
        default="remove", description="NaN samples: dropped, read as 0, or the metric has no data"
    )


class JudgeSpec(_Config):
    """The statistical judge (Kayenta's model): each judged query's canary samples
    against the compared track's, a weighted score over metric groups, and a verdict:
    pass (Successful), marginal (Inconclusive: a person decides), fail (rolled back)."""

    model_config = ConfigDict(title="Statistical judge")

    baseline: Literal["baseline", "stable"] = Field(
        default="baseline",
        description="baseline: the old version started fresh beside the canary (stable when the "
        "target runs none, recorded with the reason); stable: the version serving now",
    )
    lookback: str = Field(
        default=DEFAULT_JUDGE_LOOKBACK,
        description="the samples span this PromQL duration before the analysis ends",
        examples=["10m"],
    )
    step_s: float = Field(default=DEFAULT_JUDGE_STEP_S, gt=0, description="seconds between samples")
    pass_threshold: float = Field(default=95.0, ge=0, le=100, description="score at or above: pass")
    marginal_threshold: float = Field(default=75.0, ge=0, le=100, description="score below: fail")
    group_weights: dict[str, float] = Field(
        default_factory=dict, description="weight per metric group; empty: all equal"
    )
    metrics: list[JudgeMetricSpec] = Field(min_length=1, description="the judged queries")

    @field_validator("lookback")
    @classmethod
    def _valid_lookback(cls, lookback: str) -> str:
        try:
            return promql_duration(lookback)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> JudgeSpec:
        names = [m.query for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"each query may be judged once: {duplicates}")
        if self.marginal_threshold > self.pass_threshold:
            raise ValueError(
                f"marginal_threshold {self.marginal_threshold:g} is above "
                f"pass_threshold {self.pass_threshold:g}"
            )
        if any(w <= 0 for w in self.group_weights.values()):
            raise ValueError(f"group weights must be positive: {self.group_weights}")
        missing = sorted({m.group for m in self.metrics} - set(self.group_weights))
        if self.group_weights and missing:
            raise ValueError(f"groups without a weight: {missing}")
        return self


_PROMQL_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_s(duration: str) -> float:
    """A valid PromQL duration (``"1h30m"``) in seconds."""
    return sum(int(n) * _PROMQL_UNIT_S[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


class BurnRateWindows(_Config):
    """One multi-window burn-rate alert: the step fails (and is rolled back) when the
    new version's error budget burns faster than `max_burn_rate` over both windows."""

    model_config = ConfigDict(title="Burn-rate windows")

    short: str = Field(default="5m", description="the short window: a PromQL duration", examples=["5m"])
    long: str = Field(default="1h", description="the long window: a PromQL duration", examples=["1h"])
    max_burn_rate: float = Field(
        default=14.4, gt=0, description="error rate / (1 - target) above which both windows alert"
    )

    @field_validator("short", "long")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRateWindows:
        if duration_s(self.short) >= duration_s(self.long):
            raise ValueError(f"the short window {self.short} is not shorter than the long one {self.long}")
        return self


class Slo(_Config):
    """An availability SLO and multi-window burn-rate alerts on the new version (the
    Google SRE workbook's rule). Error rates from `error_rate_query` (rendered with
    {{window}} = each window) when given, else from the target's own metrics (short:
    the latest measurement window, long: the whole analysis so far)."""

    model_config = ConfigDict(title="SLO burn rate")

    target: float = Field(gt=0, lt=1, description="the share of requests that must succeed", examples=[0.999])
    windows: list[BurnRateWindows] = Field(
        default_factory=lambda: [BurnRateWindows()],
        min_length=1,
        description="alert pairs; any pair over its limit on both windows fails the step",
    )
    error_rate_query: PromQLTemplate | None = Field(
        default=None,
        description="PromQL of the new version's error rate (0-1) over {{window}}, run against "
        "`prometheus`; default: the target's own metrics",
        exclude_if=lambda query: query is None,
    )


class Impact(_Config):
    """What the analysis's user-impact figures add: users affected (from a user metric)
    and limits on what the new version may cost."""

    model_config = ConfigDict(title="User impact")

    users_query: PromQLTemplate | None = Field(
        default=None,
        description="PromQL of the new version's users over {{window}}, run against `prometheus`",
        exclude_if=lambda query: query is None,
    )
    users_window: str = Field(default=DEFAULT_QUERY_WINDOW, description="what {{window}} stands for")
    max_affected_requests: float | None = Field(
        default=None, ge=0, description="fail when more requests are estimated affected"
    )
    max_affected_users: float | None = Field(
        default=None, ge=0, description="fail when more users are estimated affected"
    )

    @field_validator("users_window")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None


class CloudWatchProvider(_Config):
    """Where `alarms` are looked up and `cloudwatch_queries` run. Credentials come from
    the AWS SDK's standard chain of the process running verification."""

    model_config = ConfigDict(title="CloudWatch provider")

    region: str | None = Field(default=None, description="default: the AWS SDK's (AWS_REGION, profile)")
    endpoint_url: str | None = Field(
        default=None, pattern=r"^https?://[^/\s]+", description="default: CloudWatch's own endpoint"
    )
    timeout_s: float = Field(default=DEFAULT_PROMETHEUS_TIMEOUT_S, gt=0, description="per call")


class CloudWatchQueryCheck(_Config):
    """A CloudWatch metric (or metric-math expression) of the new version, measured
    `count` times `interval_s` apart: its latest datapoint against `max` and / or
    `min`. Dimension values and the expression may hold {{service}}, {{environment}}
    and {{version}}. No datapoint is never a pass."""

    model_config = ConfigDict(title="CloudWatch query check")

    name: str = Field(pattern=NAME_PATTERN, description="names its measurements; unique among the checks")
    query: MetricQuery = Field(
        description="namespace, metric, dimensions, stat, period_s (or expression over metrics)",
        examples=[
            {
                "namespace": "AWS/Lambda",
                "metric": "Errors",
                "dimensions": {"FunctionName": "{{service}}", "Resource": "{{service}}:{{environment}}"},
                "stat": "Sum",
                "period_s": 60,
            }
        ],
    )
    max: float | None = Field(default=None, description="the value may not be above")
    min: float | None = Field(default=None, description="the value may not be below")
    dry_run: bool = Field(default=False, description="measure and record, but never decide the analysis")

    @model_validator(mode="after")
    def _limits(self) -> CloudWatchQueryCheck:
        if self.max is None and self.min is None:
            raise ValueError(f"cloudwatch query {self.name!r} needs `max` or `min`")
        return self


class Analysis(_Config):
    """Health checks plus metric checks, measured `count` times `interval_s` apart.
    Each measurement is Successful, Failed, Inconclusive or Error; missing data never
    passes."""

    model_config = ConfigDict(title="Analysis")

    health: HealthCheck | None = Field(default_factory=HealthCheck, description="null: no health check")
    metrics: list[MetricCheck] = Field(
        default_factory=list, description="metric checks of the target's own metrics; empty: none"
    )
    interval_s: float = Field(
        default=DEFAULT_ANALYSIS_INTERVAL_S, gt=0, description="seconds between measurements"
    )
    count: int = Field(default=DEFAULT_ANALYSIS_COUNT, ge=1, description="measurements per analysis")
    # excluded from the plan when unset, so plans of pipelines that do not use them keep their hash
    initial_delay_s: float = Field(
        default=DEFAULT_INITIAL_DELAY_S,
        ge=0,
        description="seconds before the first measurement of a metric",
        exclude_if=lambda delay: delay == DEFAULT_INITIAL_DELAY_S,
    )
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
    prometheus: PrometheusProvider | None = Field(
        default=None, description="where `queries` run; needed when there are queries"
    )
    queries: list[QueryCheck] = Field(
        default_factory=list,
        description="PromQL checks against `prometheus`; empty: none",
        exclude_if=lambda queries: not queries,
    )
    judge: JudgeSpec | None = Field(
        default=None,
        description="a statistical judge of `queries`, canary against baseline or stable",
        exclude_if=lambda judge: judge is None,
    )
    slo: Slo | None = Field(
        default=None,
        description="error-budget burn-rate alerts; over the limit on both windows rolls back",
        exclude_if=lambda slo: slo is None,
    )
    impact: Impact | None = Field(
        default=None,
        description="users and limits for the user-impact figures every analysis records",
        exclude_if=lambda impact: impact is None,
    )
    cloudwatch: CloudWatchProvider | None = Field(
        default=None,
        description="where `alarms` and `cloudwatch_queries` are read; default: the AWS SDK's region",
        exclude_if=lambda provider: provider is None,
    )
    alarms: list[str] = Field(
        default_factory=list,
        description="CloudWatch alarms that roll the deployment back when any is in ALARM, "
        "looked up at every verification",
        exclude_if=lambda alarms: not alarms,
    )
    cloudwatch_queries: list[CloudWatchQueryCheck] = Field(
        default_factory=list,
        description="CloudWatch metric checks beside the PromQL `queries`; empty: none",
        exclude_if=lambda queries: not queries,
    )

    @model_validator(mode="after")
    def _checks(self) -> Analysis:
        if self.queries and self.prometheus is None:
            raise ValueError("`queries` need a `prometheus` provider to run against")
        names = [m.name for m in self.metrics] + [q.name for q in self.queries]
        names += [c.name for c in self.cloudwatch_queries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be distinct across `metrics` and `queries`: {duplicates}")
        reserved = sorted(RESERVED_CHECK_NAMES.intersection(names))
        if reserved:
            raise ValueError(f"{reserved} name the health and target checks; choose another name")
        if self.judge is not None:
            unknown = sorted({m.query for m in self.judge.metrics} - {q.name for q in self.queries})
            if unknown:
                raise ValueError(f"the judge names queries the analysis does not have: {unknown}")
        slo_query = self.slo is not None and self.slo.error_rate_query is not None
        users_query = self.impact is not None and self.impact.users_query is not None
        if (slo_query or users_query) and self.prometheus is None:
            raise ValueError("`slo.error_rate_query` and `impact.users_query` need a `prometheus` provider")
        return self


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
