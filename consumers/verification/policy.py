"""The analysis policy as verification reads it from ``deployment.planned``.

Planning validates the pipeline's ``analysis`` and records it in the plan; this is
verification's own reading of that dict, so the two packages need not import each
other. Unknown keys are ignored (the plan may carry more than verification uses);
every key has a default, so ``{}`` is a health check on ``/healthz`` and no metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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

MetricName = Literal["error_rate", "latency_p99"]


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


class MetricCheck(_Policy):
    """A metric of the new version against an absolute ``max``, a ``max_increase_pct``
    over the compared version, or both. ``error_rate`` is a fraction (0-1) of 5xx
    answers; ``latency_p99`` is in seconds."""

    name: MetricName
    max: float | None = Field(default=None, ge=0)
    max_increase_pct: float | None = Field(default=None, ge=0)
    #: what the new version is compared with; today always the version serving beside it
    compare: str = "stable"

    @model_validator(mode="after")
    def _has_a_limit(self) -> MetricCheck:
        if self.max is None and self.max_increase_pct is None:
            raise ValueError(f"metric check {self.name!r} needs `max` or `max_increase_pct`")
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


class AnalysisPolicy(_Policy):
    """Health checks plus metric checks measured ``count`` times ``interval_s`` apart."""

    health: HealthPolicy | None = Field(default_factory=HealthPolicy)
    metrics: list[MetricCheck] = Field(default_factory=list)
    load: LoadPolicy | None = None
    interval_s: float = Field(default=DEFAULT_INTERVAL_S, ge=0)
    count: int = Field(default=DEFAULT_COUNT, ge=1)
    failure_limit: int = Field(default=DEFAULT_FAILURE_LIMIT, ge=0)
    inconclusive_limit: int = Field(default=DEFAULT_INCONCLUSIVE_LIMIT, ge=0)
    consecutive_error_limit: int = Field(default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, ge=0)
    scrape_timeout_s: float = Field(default=DEFAULT_SCRAPE_TIMEOUT_S, gt=0)

    @model_validator(mode="after")
    def _one_check_per_metric(self) -> AnalysisPolicy:
        names = [m.name for m in self.metrics]
        if len(names) != len(set(names)):
            raise ValueError(
                f"each metric may be checked once (give `max` and `max_increase_pct` together): {names}"
            )
        return self

    @property
    def limits(self) -> Limits:
        return Limits(self.failure_limit, self.inconclusive_limit, self.consecutive_error_limit)


def policy_of(plan: DeploymentPlanned | dict[str, Any]) -> AnalysisPolicy:
    """The analysis policy recorded in a plan; raises ``ValidationError`` if invalid."""
    raw = plan.analysis if isinstance(plan, DeploymentPlanned) else plan
    return AnalysisPolicy.model_validate(raw or {})
