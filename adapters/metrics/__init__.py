"""Metrics providers: where verification reads how a version behaves, behind one small
protocol (after Flagger's ``RunQuery`` / ``IsOnline``).

A query never raises for anything the server or the network does: it returns a
``QueryResult`` whose ``status`` says what came back — ``ok`` (finite numbers),
``empty`` (no series), ``nan`` (a NaN or an infinity, e.g. 0/0 with no traffic) or
``error`` (no answer, a timeout, a refused query; ``message`` says which). Verdicts
are data: ``to_measurement`` turns a result into a ``Measurement`` — ``error`` is an
Error measurement (it counts towards the consecutive-error limit), ``empty`` and
``nan`` are Inconclusive (missing data is never a pass), and only a single finite
value reaches the caller's judge.

Implementations are ``<Vendor>Metrics`` with a ``TYPE``; ``create_metrics`` maps a
type to its class and raises on an unknown one — never a silent fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import httpx
from pydantic import SecretStr

from events.errors import InvalidInput
from events.verification import Measurement, Outcome

if TYPE_CHECKING:
    from adapters.metrics.prometheus import PrometheusMetrics

ResultStatus = Literal["ok", "empty", "nan", "error"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one label set at one instant (``timestamp`` in Unix seconds)."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    """One label set over a range: ``(timestamp, value)`` points in time order."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What one query brought back. ``samples`` for an instant query, ``series`` for a
    range query; ``message`` explains every status but ``ok``."""

    query: str
    status: ResultStatus
    samples: tuple[Sample, ...] = ()
    series: tuple[Series, ...] = ()
    message: str = ""
    #: the server's ``errorType`` (``bad_data``, ``execution``, ``timeout``...) or ours:
    #: ``unavailable`` (no answer, HTTP 5xx), ``timeout``, ``http`` (another HTTP
    #: error), ``invalid_response``
    error_type: str | None = None
    warnings: tuple[str, ...] = ()
    #: the evaluation times asked for: ``time``, or ``start`` / ``end`` / ``step``
    params: Mapping[str, float] = field(default_factory=dict)
    attempts: int = 1
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def value(self) -> float | None:
        """The single finite value of an instant query; None when there is not exactly one."""
        if self.status != "ok" or len(self.samples) != 1:
            return None
        return self.samples[0].value

    def to_detail(self) -> dict[str, Any]:
        """The result as JSON-safe data for a measurement's ``detail``: every sample
        and point, so the measurement can be judged again later. Non-finite values
        are kept as Prometheus writes them (``"NaN"``, ``"+Inf"``)."""
        detail: dict[str, Any] = {"query": self.query, "status": self.status, **self.params}
        if self.samples:
            detail["samples"] = [
                {"labels": dict(s.labels), "t": s.timestamp, "v": _json_number(s.value)} for s in self.samples
            ]
        if self.series:
            detail["series"] = [
                {"labels": dict(s.labels), "points": [[t, _json_number(v)] for t, v in s.points]}
                for s in self.series
            ]
        if self.message:
            detail["message"] = self.message
        if self.error_type:
            detail["error_type"] = self.error_type
        if self.warnings:
            detail["warnings"] = list(self.warnings)
        if self.attempts > 1:
            detail["attempts"] = self.attempts
        return detail


def _json_number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def classify(
    query: str,
    *,
    samples: tuple[Sample, ...] = (),
    series: tuple[Series, ...] = (),
    **extra: Any,
) -> QueryResult:
    """A successful answer's status: ``empty`` without data, ``nan`` when any value is
    not finite (conservative: a judge that wants to drop such points still has them
    in ``series``), else ``ok``."""
    values = [s.value for s in samples] + [v for s in series for _, v in s.points]
    if not values:
        what = "no series" if not series else "series without points"
        return QueryResult(query, "empty", samples, series, message=f"the query returned {what}", **extra)
    bad = sum(1 for v in values if not math.isfinite(v))
    if bad:
        message = f"{bad} of {len(values)} values are not finite numbers (NaN or infinite)"
        return QueryResult(query, "nan", samples, series, message=message, **extra)
    return QueryResult(query, "ok", samples, series, **extra)


# --- the protocol and its factory ------------------------------------------------


@dataclass(frozen=True)
class MetricsCredentials:
    """A provider's secrets, resolved by the caller: a bearer token, or a user and a
    password for basic authentication. ``SecretStr`` keeps them out of reprs and logs."""

    bearer_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None


class MetricsProvider(Protocol):
    """A query language over time series. Implementations are ``<Vendor>Metrics`` with
    a ``TYPE``; constructors take config and credentials, never the environment."""

    TYPE: ClassVar[str]

    async def query(self, query: str, at: datetime | None = None) -> QueryResult:
        """The query's value at ``at`` (the server's now when None), as ``samples``.
        Never raises for a server or network failure: see ``QueryResult.status``."""
        ...

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: timedelta | float
    ) -> QueryResult:
        """The query evaluated every ``step`` (seconds) from ``start`` to ``end``, as
        ``series``. Never raises for a server or network failure."""
        ...

    async def is_online(self) -> bool:
        """Whether the server answers a trivial query now."""
        ...

    async def aclose(self) -> None:
        """Release the connections this provider opened itself."""
        ...


def create_metrics(
    type_: str,
    config: Mapping[str, Any],
    credentials: MetricsCredentials | None = None,
    *,
    http: httpx.AsyncClient | None = None,
) -> MetricsProvider:
    """The provider of this type, built from its validated config; raises
    ``InvalidInput`` on an unknown type or invalid settings."""
    # imported here: the implementations import this module's result types
    from adapters.metrics.prometheus import PrometheusMetrics

    classes: dict[str, type[PrometheusMetrics]] = {PrometheusMetrics.TYPE: PrometheusMetrics}
    cls = classes.get(type_)
    if cls is None:
        raise InvalidInput(f"unknown metrics provider type {type_!r}; known: {', '.join(sorted(classes))}")
    provider: MetricsProvider = cls.from_config(config, credentials, http=http)
    return provider


# --- from a result to a measurement ----------------------------------------------

#: what a judge says about one value: the outcome and why (may be empty)
Judge = Callable[[float], tuple[Outcome, str]]


def problem_measurement(metric: str, result: QueryResult, *, single: bool = True) -> Measurement | None:
    """The measurement for a result that cannot be judged, or None if it can: Error for
    ``error`` (and, with ``single``, for an instant query that returned more than one
    series: the template lacks an aggregation, which waiting will not fix);
    Inconclusive for ``empty`` and ``nan``."""
    detail = result.to_detail()
    if result.status == "error":
        return Measurement(metric=metric, outcome="Error", error=result.message, detail=detail)
    if result.status in ("empty", "nan"):
        return Measurement(metric=metric, outcome="Inconclusive", detail={**detail, "reason": result.message})
    if single and result.samples and len(result.samples) != 1:
        why = (
            f"the query returned {len(result.samples)} series where one value was expected "
            "(aggregate it, e.g. with sum(...))"
        )
        return Measurement(metric=metric, outcome="Error", error=why, detail=detail)
    return None


def to_measurement(
    metric: str,
    result: QueryResult,
    judge: Judge,
    *,
    baseline: float | None = None,
    threshold: float | None = None,
) -> Measurement:
    """One measurement from an instant query's result: Error / Inconclusive as
    ``problem_measurement`` says, else the ``judge``'s outcome for the single value.
    The result itself (query, samples) is kept in ``detail``."""
    problem = problem_measurement(metric, result)
    if problem is not None:
        return problem
    value = result.value
    if value is None:
        # a range result has no single value: judge its series, not this way
        return Measurement(
            metric=metric,
            outcome="Error",
            error="a range query's result has no single value to judge",
            detail=result.to_detail(),
        )
    outcome, reason = judge(value)
    detail = result.to_detail()
    if reason:
        detail["reason"] = reason
    return Measurement(
        metric=metric, outcome=outcome, value=value, baseline=baseline, threshold=threshold, detail=detail
    )


__all__ = [
    "Judge",
    "MetricsCredentials",
    "MetricsProvider",
    "QueryResult",
    "ResultStatus",
    "Sample",
    "Series",
    "classify",
    "create_metrics",
    "problem_measurement",
    "to_measurement",
]
