"""The analysis policy as verification reads it from ``deployment.planned``.

Planning validates the pipeline's ``analysis`` and records it in the plan; this is
verification's own reading of that dict, so the two packages need not import each
other. Unknown keys are ignored (the plan may carry more than verification uses);
every key has a default, so ``{}`` is a health check on ``/healthz`` and no metrics.

Two kinds of metric checks: ``metrics``, the built-in error rate and p99 latency
read from the target's own metrics endpoint, and ``queries``, PromQL templates run
against the analysis's ``prometheus`` provider for the new version and the track it
is compared with. A query check takes its schedule and limits from the analysis
unless it sets its own (``QueryCheck.schedule``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.metrics.cloudwatch import MetricQuery
from adapters.metrics.prometheus import PromQLTemplate, TemplateError, Track, promql_duration
from consumers.verification.judge import (
    DEFAULT_CONFIDENCE,
    DEFAULT_GROUP,
    DEFAULT_MARGINAL_THRESHOLD,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PASS_THRESHOLD,
    Direction,
    EffectMeasure,
    JudgeConfig,
    MetricConfig,
    NanStrategy,
)
from events.deployment import DeploymentPlanned

# Defaults, in one place.
DEFAULT_HEALTH_PATH = "/healthz"
DEFAULT_HEALTH_TIMEOUT_S = 2.0
DEFAULT_HEALTH_SUCCESSES = 3
DEFAULT_HEALTH_INTERVAL_S = 0.2
#: probes per instance before giving up on N consecutive successes, per success wanted
DEFAULT_HEALTH_ATTEMPTS_PER_SUCCESS = 2
DEFAULT_LOAD_PATH = "/"
DEFAULT_LOAD_CONCURRENCY = 10
DEFAULT_LOAD_TIMEOUT_S = 5.0
DEFAULT_INTERVAL_S = 1.0
DEFAULT_COUNT = 3
DEFAULT_FAILURE_LIMIT = 0
DEFAULT_INCONCLUSIVE_LIMIT = 1
#: as Argo Rollouts: a fifth error in a row ends the analysis as Error
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
DEFAULT_SCRAPE_TIMEOUT_S = 5.0
DEFAULT_INITIAL_DELAY_S = 0.0
DEFAULT_PROMETHEUS_TIMEOUT_S = 10.0
DEFAULT_QUERY_WINDOW = "1m"
#: the judge's samples: one every ``step_s`` over ``lookback`` before the analysis ends
DEFAULT_JUDGE_LOOKBACK = "10m"
DEFAULT_JUDGE_STEP_S = 30.0
#: multi-window burn-rate alerting, the SRE workbook's fast-burn pair: 2% of a 30-day
#: budget spent in an hour
DEFAULT_SLO_SHORT_WINDOW = "5m"
DEFAULT_SLO_LONG_WINDOW = "1h"
DEFAULT_MAX_BURN_RATE = 14.4
#: how many previous successful releases a ``max_increase_pct_vs_previous`` compares with
DEFAULT_PREVIOUS_RELEASES = 3
#: measurement names of the checks that are not metrics
RESERVED_NAMES = frozenset({"target", "health", "impact", "slo_burn_rate", "alarms"})
#: what a CloudWatch query's dimension values and expression may name
CLOUDWATCH_PLACEHOLDERS = ("service", "environment", "version")

MetricName = Literal["error_rate", "latency_p99"]
Compare = Literal["stable", "baseline", "none"]


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class HealthPolicy(_Policy):
    """HTTP GET ``path`` on every instance of the new version until ``successes``
    consecutive 2xx answers, each within ``timeout_s``."""

    path: str = DEFAULT_HEALTH_PATH
    timeout_s: float = Field(default=DEFAULT_HEALTH_TIMEOUT_S, gt=0)
    successes: int = Field(default=DEFAULT_HEALTH_SUCCESSES, ge=1)
    interval_s: float = Field(default=DEFAULT_HEALTH_INTERVAL_S, ge=0)
    #: probes per instance at most; None: ``successes * 2``
    max_attempts: int | None = Field(default=None, ge=1)

    @property
    def attempts(self) -> int:
        return max(self.successes, self.max_attempts or self.successes * DEFAULT_HEALTH_ATTEMPTS_PER_SUCCESS)


class VsPrevious(_Policy):
    """Keptn's relative criterion: the new version's value may be at most ``pct`` %
    above the mean of the check's recorded values in the last ``releases`` successful
    deployments of the same service and environment. With fewer than
    ``min_releases`` (default: ``releases``) of them, the check is Inconclusive."""

    pct: float = Field(ge=0)
    releases: int = Field(default=DEFAULT_PREVIOUS_RELEASES, ge=1)
    min_releases: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _min_within(self) -> VsPrevious:
        if self.min_releases is not None and self.min_releases > self.releases:
            raise ValueError(f"min_releases {self.min_releases} is above releases {self.releases}")
        return self

    @property
    def needed(self) -> int:
        return self.releases if self.min_releases is None else self.min_releases

    def as_detail(self) -> dict[str, Any]:
        return {"pct": self.pct, "releases": self.releases, "min_releases": self.needed}


class MetricCheck(_Policy):
    """A metric of the new version against an absolute ``max``, a ``max_increase_pct``
    over the compared version, a ``max_increase_pct_vs_previous`` over previous
    releases, or several. ``error_rate`` is a fraction (0-1) of 5xx answers;
    ``latency_p99`` is in seconds."""

    name: MetricName
    max: float | None = Field(default=None, ge=0)
    max_increase_pct: float | None = Field(default=None, ge=0)
    max_increase_pct_vs_previous: VsPrevious | None = None
    #: what the new version is compared with; today always the version serving beside it
    compare: str = "stable"

    @model_validator(mode="after")
    def _has_a_limit(self) -> MetricCheck:
        if self.max is None and self.max_increase_pct is None and self.max_increase_pct_vs_previous is None:
            raise ValueError(
                f"metric check {self.name!r} needs `max`, `max_increase_pct` "
                "or `max_increase_pct_vs_previous`"
            )
        return self


class LoadPolicy(_Policy):
    """Requests sent through the target's endpoint during the analysis, so the
    metrics have data even without real traffic."""

    requests: int = Field(default=100, ge=1)
    path: str = DEFAULT_LOAD_PATH
    concurrency: int = Field(default=DEFAULT_LOAD_CONCURRENCY, ge=1)
    timeout_s: float = Field(default=DEFAULT_LOAD_TIMEOUT_S, gt=0)


@dataclass(frozen=True, slots=True)
class Limits:
    """How many bad measurements a check tolerates (Argo's metric limits)."""

    failure_limit: int = DEFAULT_FAILURE_LIMIT
    inconclusive_limit: int = DEFAULT_INCONCLUSIVE_LIMIT
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT


@dataclass(frozen=True, slots=True)
class Schedule:
    """When one check measures, and what it tolerates: Argo's ``initialDelay``,
    ``interval``, ``count`` and limits, with the analysis's values filled in."""

    initial_delay_s: float
    interval_s: float
    count: int
    limits: Limits


class SecretReference(_Policy):
    """A header value as the plan records it: ``{"secret": {"env": NAME}}`` or
    ``{"secret": {"file": PATH}}``, resolved (``consumers.secrets``) only when used."""

    secret: dict[str, str] = Field(min_length=1)

    def as_value(self) -> dict[str, Any]:
        return {"secret": dict(self.secret)}


class PrometheusSettings(_Policy):
    """Where query checks run; header values are references, never the secrets."""

    url: str = Field(min_length=1)
    timeout_s: float = Field(default=DEFAULT_PROMETHEUS_TIMEOUT_S, gt=0)
    headers: dict[str, SecretReference] = Field(default_factory=dict)


class QueryCheck(_Policy):
    """A PromQL template run for the new version (track ``canary``) and, unless
    ``compare`` is ``none``, for the compared track, judged against ``max``, ``min``
    and ``max_increase_pct`` over the compared track's value. ``dry_run``: measured
    and recorded, never part of the verdict."""

    name: str = Field(min_length=1)
    query: PromQLTemplate
    window: str = DEFAULT_QUERY_WINDOW
    compare: Compare = "stable"
    max: float | None = None
    min: float | None = None
    max_increase_pct: float | None = Field(default=None, ge=0)
    max_increase_pct_vs_previous: VsPrevious | None = None
    dry_run: bool = False
    interval_s: float | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=1)
    initial_delay_s: float | None = Field(default=None, ge=0)
    failure_limit: int | None = Field(default=None, ge=0)
    inconclusive_limit: int | None = Field(default=None, ge=0)
    consecutive_error_limit: int | None = Field(default=None, ge=0)

    @field_validator("window")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _has_a_limit(self) -> QueryCheck:
        limits = (self.max, self.min, self.max_increase_pct, self.max_increase_pct_vs_previous)
        if all(limit is None for limit in limits):
            raise ValueError(
                f"query check {self.name!r} needs `max`, `min` or `max_increase_pct` "
                "(or `max_increase_pct_vs_previous`)"
            )
        if self.max_increase_pct is not None and self.compare == "none":
            raise ValueError(f"query check {self.name!r}: `max_increase_pct` needs a track to compare with")
        return self

    @property
    def compared_track(self) -> Track | None:
        """The track the query also runs for; None with ``compare: none``."""
        return None if self.compare == "none" else self.compare

    def limits_dict(self) -> dict[str, float]:
        """The limits that are set, for the record."""
        limits = {"max": self.max, "min": self.min, "max_increase_pct": self.max_increase_pct}
        return {k: v for k, v in limits.items() if v is not None}


_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def duration_seconds(duration: str) -> float:
    """A PromQL duration (``"10m"``, ``"1h30m"``, already checked) in seconds."""
    return sum(int(n) * _UNIT_S[unit] for n, unit in _PART.findall(duration))


class JudgeMetric(_Policy):
    """One query check judged by the statistical judge (``consumers.verification.judge``)."""

    query: str = Field(min_length=1)
    direction: Direction = "increase"
    confidence: float = Field(default=DEFAULT_CONFIDENCE, gt=0.5, lt=1.0)
    max_ratio_increase: float = Field(default=1.0, ge=1.0)
    min_ratio_decrease: float = Field(default=1.0, gt=0.0, le=1.0)
    effect: EffectMeasure = "mean"
    critical: bool = False
    group: str = Field(default=DEFAULT_GROUP, min_length=1)
    min_samples: int = Field(default=DEFAULT_MIN_SAMPLES, ge=3)
    nan_strategy: NanStrategy = "remove"

    def config(self) -> MetricConfig:
        return MetricConfig(name=self.query, **self.model_dump(exclude={"query"}))


class JudgePolicy(_Policy):
    """Canary against the compared track, query by query, over a range of samples.

    ``baseline``: the track compared with — ``baseline`` (the old version started
    fresh beside the canary; when the target runs none, the judge falls back to
    ``stable`` and records why) or ``stable``. The samples of each metric are the
    query evaluated every ``step_s`` over ``lookback`` before the analysis ends.
    """

    baseline: Literal["baseline", "stable"] = "baseline"
    lookback: str = DEFAULT_JUDGE_LOOKBACK
    step_s: float = Field(default=DEFAULT_JUDGE_STEP_S, gt=0)
    pass_threshold: float = Field(default=DEFAULT_PASS_THRESHOLD, ge=0, le=100)
    marginal_threshold: float = Field(default=DEFAULT_MARGINAL_THRESHOLD, ge=0, le=100)
    group_weights: dict[str, float] = Field(default_factory=dict)
    metrics: list[JudgeMetric] = Field(min_length=1)

    @field_validator("lookback")
    @classmethod
    def _valid_lookback(cls, lookback: str) -> str:
        try:
            return promql_duration(lookback)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _valid_config(self) -> JudgePolicy:
        self.config()  # raises ValidationError (a ValueError) on duplicates, weights, thresholds
        return self

    @property
    def lookback_s(self) -> float:
        return duration_seconds(self.lookback)

    def config(self) -> JudgeConfig:
        return JudgeConfig(
            metrics=tuple(m.config() for m in self.metrics),
            group_weights=dict(self.group_weights),
            pass_threshold=self.pass_threshold,
            marginal_threshold=self.marginal_threshold,
        )


class BurnWindows(_Policy):
    """One pair of the multi-window rule: the step fails when the error budget burns
    faster than ``max_burn_rate`` over both the ``short`` and the ``long`` window."""

    short: str = DEFAULT_SLO_SHORT_WINDOW
    long: str = DEFAULT_SLO_LONG_WINDOW
    max_burn_rate: float = Field(default=DEFAULT_MAX_BURN_RATE, gt=0)

    @field_validator("short", "long")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None


class SloPolicy(_Policy):
    """An availability SLO and its burn-rate alerts (the Google SRE workbook's
    multi-window, multi-burn-rate rule). Burn rate = error rate / (1 - ``target``).
    The error rates are the new version's: from ``error_rate_query`` (a template
    rendered with ``{{window}}`` = each window, against ``prometheus``) when given,
    else from the target's own metrics (short: the latest window between two
    scrapes; long: the whole analysis so far)."""

    target: float = Field(gt=0, lt=1)
    windows: list[BurnWindows] = Field(default_factory=lambda: [BurnWindows()], min_length=1)
    error_rate_query: PromQLTemplate | None = None

    @property
    def budget(self) -> float:
        """The error rate the SLO allows."""
        return 1 - self.target

    @property
    def durations(self) -> list[str]:
        """Every window, once, in order."""
        return list(dict.fromkeys(d for w in self.windows for d in (w.short, w.long)))


class ImpactPolicy(_Policy):
    """What the ``impact`` measurement adds to its figures: users (from
    ``users_query``, a template over ``{{window}}`` = ``users_window``, run for the
    canary against ``prometheus``) and limits on what the new version may cost."""

    users_query: PromQLTemplate | None = None
    users_window: str = DEFAULT_QUERY_WINDOW
    max_affected_requests: float | None = Field(default=None, ge=0)
    max_affected_users: float | None = Field(default=None, ge=0)

    @field_validator("users_window")
    @classmethod
    def _valid_window(cls, window: str) -> str:
        try:
            return promql_duration(window)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None


class CloudWatchSettings(_Policy):
    """Where alarms are looked up and CloudWatch queries run; credentials come from
    the AWS SDK's standard chain of the process running verification."""

    region: str | None = None
    endpoint_url: str | None = None
    timeout_s: float = Field(default=DEFAULT_PROMETHEUS_TIMEOUT_S, gt=0)


class CloudWatchCheck(_Policy):
    """A CloudWatch metric query of the new version, measured ``count`` times
    ``interval_s`` apart and judged against ``max`` and / or ``min``. Dimension
    values and the expression may hold ``{{service}}``, ``{{environment}}`` and
    ``{{version}}``. No datapoint is never a pass."""

    name: str = Field(min_length=1)
    query: MetricQuery
    max: float | None = None
    min: float | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _has_a_limit(self) -> CloudWatchCheck:
        if self.max is None and self.min is None:
            raise ValueError(f"cloudwatch query {self.name!r} needs `max` or `min`")
        return self

    def rendered(self, service: str, environment: str, version: str) -> MetricQuery:
        """The query with its placeholders filled in."""
        values = {"service": service, "environment": environment, "version": version}

        def fill(text: str) -> str:
            for name in CLOUDWATCH_PLACEHOLDERS:
                text = text.replace("{{" + name + "}}", values[name])
            return text

        def walk(query: MetricQuery) -> MetricQuery:
            return query.model_copy(
                update={
                    "dimensions": {k: fill(v) for k, v in query.dimensions.items()},
                    "expression": fill(query.expression) if query.expression else None,
                    "metrics": {k: walk(m) for k, m in query.metrics.items()},
                }
            )

        return walk(self.query)

    def limits_dict(self) -> dict[str, float]:
        limits = {"max": self.max, "min": self.min}
        return {k: v for k, v in limits.items() if v is not None}


class AnalysisPolicy(_Policy):
    """Health checks plus metric checks measured ``count`` times ``interval_s`` apart."""

    health: HealthPolicy | None = Field(default_factory=HealthPolicy)
    metrics: list[MetricCheck] = Field(default_factory=list)
    load: LoadPolicy | None = None
    interval_s: float = Field(default=DEFAULT_INTERVAL_S, ge=0)
    count: int = Field(default=DEFAULT_COUNT, ge=1)
    initial_delay_s: float = Field(default=DEFAULT_INITIAL_DELAY_S, ge=0)
    failure_limit: int = Field(default=DEFAULT_FAILURE_LIMIT, ge=0)
    inconclusive_limit: int = Field(default=DEFAULT_INCONCLUSIVE_LIMIT, ge=0)
    consecutive_error_limit: int = Field(default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, ge=0)
    scrape_timeout_s: float = Field(default=DEFAULT_SCRAPE_TIMEOUT_S, gt=0)
    prometheus: PrometheusSettings | None = None
    queries: list[QueryCheck] = Field(default_factory=list)
    judge: JudgePolicy | None = None
    slo: SloPolicy | None = None
    impact: ImpactPolicy | None = None
    #: CloudWatch: alarms that fail the step when any is in ALARM, and metric queries
    cloudwatch: CloudWatchSettings | None = None
    alarms: list[str] = Field(default_factory=list)
    cloudwatch_queries: list[CloudWatchCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_check_per_metric(self) -> AnalysisPolicy:
        names: list[str] = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError(
                f"each metric may be checked once (give `max` and `max_increase_pct` together): {names}"
            )
        names += [q.name for q in self.queries] + [c.name for c in self.cloudwatch_queries]
        if len(names) != len(set(names)):
            raise ValueError(f"check names must be distinct across metrics and queries: {names}")
        reserved = sorted(RESERVED_NAMES.intersection(names))
        if reserved:
            raise ValueError(
                f"{reserved} name the target and health checks or the impact and SLO figures, not a metric"
            )
        if self.queries and self.prometheus is None:
            raise ValueError("query checks need a `prometheus` provider")
        if self.judge is not None:
            unknown = sorted({m.query for m in self.judge.metrics} - {q.name for q in self.queries})
            if unknown:
                raise ValueError(f"the judge names queries the analysis does not have: {unknown}")
        needs_prometheus = (self.slo and self.slo.error_rate_query) or (
            self.impact and self.impact.users_query
        )
        if needs_prometheus and self.prometheus is None:
            raise ValueError("`slo.error_rate_query` and `impact.users_query` need a `prometheus` provider")
        return self

    @property
    def scrapes_wanted(self) -> bool:
        """Whether the target's own metrics are scraped: for the built-in checks, the
        impact figures, and an SLO without its own query."""
        slo_scrapes = self.slo is not None and self.slo.error_rate_query is None
        return bool(self.metrics) or slo_scrapes or self.impact is not None

    def history_checks(self) -> dict[str, VsPrevious]:
        """The checks compared with previous releases, by name."""
        checks: list[MetricCheck | QueryCheck] = [*self.metrics, *self.queries]
        return {
            c.name: c.max_increase_pct_vs_previous
            for c in checks
            if c.max_increase_pct_vs_previous is not None
        }

    def query(self, name: str) -> QueryCheck:
        """The query check of this name; KeyError if there is none."""
        for check in self.queries:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def limits(self) -> Limits:
        return Limits(self.failure_limit, self.inconclusive_limit, self.consecutive_error_limit)

    def schedule(self, check: QueryCheck) -> Schedule:
        """The check's own settings, the analysis's where it has none."""

        def own(value: Any, default: Any) -> Any:
            return default if value is None else value

        return Schedule(
            initial_delay_s=own(check.initial_delay_s, self.initial_delay_s),
            interval_s=own(check.interval_s, self.interval_s),
            count=own(check.count, self.count),
            limits=Limits(
                own(check.failure_limit, self.failure_limit),
                own(check.inconclusive_limit, self.inconclusive_limit),
                own(check.consecutive_error_limit, self.consecutive_error_limit),
            ),
        )

    def check_limits(self) -> dict[str, Limits]:
        """The limits of every check that has its own (the query checks)."""
        return {q.name: self.schedule(q).limits for q in self.queries}


def policy_of(plan: DeploymentPlanned | dict[str, Any]) -> AnalysisPolicy:
    """The analysis policy recorded in a plan; raises ``ValidationError`` if invalid."""
    raw = plan.analysis if isinstance(plan, DeploymentPlanned) else plan
    return AnalysisPolicy.model_validate(raw or {})
