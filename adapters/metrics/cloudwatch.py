"""CloudWatch: alarm states (``DescribeAlarms``) and metric queries (``GetMetricData``).

Two uses in verification: alarms an analysis names are rollback triggers (any in
``ALARM`` fails the step, as CodeDeploy's alarm-based rollback), and metric queries
are analysis inputs beside Prometheus's.

A metric query is ``MetricQuery``: one metric (namespace, name, dimensions, statistic,
period) or a metric-math expression over such metrics, given as JSON where the
``MetricsProvider`` protocol takes a query string — so ``CloudWatchMetrics`` is a
``MetricsProvider`` like ``PrometheusMetrics`` (``TYPE = "cloudwatch"``). An instant
query is the latest datapoint within ``lookback_s`` before the instant; a range
query is every datapoint from start to end.

As everywhere in ``adapters.metrics``, failures are results, not exceptions: a call
that still fails after botocore's standard retries (throttling, 5xx, connection
errors; ``max_attempts`` in all) is a ``QueryResult(status="error")``, and an alarm
lookup that fails is an ``AlarmStates`` with ``error`` set. Credentials given in the
config never appear in a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from adapters.metrics import QueryResult, Sample, Series, classify
from events.errors import InvalidInput

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_PERIOD_S = 60
#: an instant query looks this far back for the latest datapoint, in periods
DEFAULT_LOOKBACK_PERIODS = 5
#: DescribeAlarms takes at most 100 names a call
ALARM_NAMES_PER_CALL = 100

AlarmValue = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]


class CloudWatchConfig(BaseModel):
    """Where CloudWatch answers. Without ``access_key_id`` the AWS SDK's standard
    chain finds the credentials (that lookup is botocore's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=10)


class MetricQuery(BaseModel):
    """One CloudWatch metric, or a metric-math ``expression`` over ``metrics`` (each
    named by its id, e.g. ``{"expression": "100 * errors / invocations", "metrics":
    {"errors": {...}, "invocations": {...}}}``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str | None = Field(default=None, description="the metric's namespace, e.g. AWS/Lambda")
    metric: str | None = Field(default=None, description="the metric's name, e.g. Errors")
    dimensions: dict[str, str] = Field(
        default_factory=dict,
        description="name -> value; values may use {{service}}, {{environment}}, {{version}}",
    )
    stat: str = Field(default="Average", description="Average, Sum, Maximum, p99, ...")
    period_s: int = Field(default=DEFAULT_PERIOD_S, ge=1, description="the datapoints' period in seconds")
    unit: str | None = Field(default=None, description="only datapoints in this unit")
    expression: str | None = Field(
        default=None, description="metric math over `metrics` by id (instead of namespace/metric)"
    )
    metrics: dict[str, MetricQuery] = Field(
        default_factory=dict, description="id -> metric, the inputs of `expression`"
    )
    lookback_s: int | None = Field(
        default=None, ge=1, description="the window whose latest datapoint counts (default: 5 periods)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> MetricQuery:
        if self.expression is None and (self.namespace is None or self.metric is None):
            raise ValueError("a metric query needs `namespace` and `metric`, or an `expression`")
        if self.expression is not None and self.metric is not None:
            raise ValueError("a metric query is a metric or an expression, not both")
        return self

    @property
    def window_s(self) -> int:
        return self.lookback_s or self.period_s * DEFAULT_LOOKBACK_PERIODS

    def data_queries(self) -> list[dict[str, Any]]:
        """The ``MetricDataQueries`` of GetMetricData; the result is id ``q``."""
        if self.expression is None:
            return [self._stat("q", True)]
        parts = [m._stat(name, False) for name, m in self.metrics.items()]
        return [
            *parts,
            {"Id": "q", "Expression": self.expression, "Period": self.period_s, "ReturnData": True},
        ]

    def _stat(self, id_: str, returned: bool) -> dict[str, Any]:
        stat: dict[str, Any] = {
            "Metric": {
                "Namespace": self.namespace,
                "MetricName": self.metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(self.dimensions.items())],
            },
            "Period": self.period_s,
            "Stat": self.stat,
        }
        if self.unit:
            stat["Unit"] = self.unit
        return {"Id": id_, "MetricStat": stat, "ReturnData": returned}

    def text(self) -> str:
        """The query as the JSON text ``CloudWatchMetrics.query`` takes."""
        return self.model_dump_json(exclude_defaults=True)

    @classmethod
    def parse(cls, text: str) -> MetricQuery:
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise InvalidInput(f"not a CloudWatch metric query: {exc}") from None


@dataclass(frozen=True)
class AlarmState:
    name: str
    state: AlarmValue
    reason: str = ""
    updated: str | None = None


@dataclass(frozen=True)
class AlarmStates:
    """The states of the named alarms; ``missing`` names the ones CloudWatch does not
    know, ``error`` why none could be read."""

    alarms: tuple[AlarmState, ...] = ()
    missing: tuple[str, ...] = ()
    error: str | None = None
    attempts: int = 1

    @property
    def firing(self) -> tuple[AlarmState, ...]:
        return tuple(a for a in self.alarms if a.state == "ALARM")

    def to_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"states": {a.name: a.state for a in self.alarms}}
        if self.firing:
            detail["firing"] = {a.name: a.reason for a in self.firing}
        if self.missing:
            detail["missing"] = list(self.missing)
        if self.error:
            detail["error"] = self.error
        return detail


@dataclass
class _Failure:
    message: str
    attempts: int = 1
    error_type: str = "unavailable"
    extra: dict[str, Any] = field(default_factory=dict)


class CloudWatchMetrics:
    """Alarm states and metric data of CloudWatch. One client per call batch;
    nothing to close but kept for the ``MetricsProvider`` protocol."""

    TYPE: ClassVar[str] = "cloudwatch"

    def __init__(self, config: CloudWatchConfig) -> None:
        self.config = config
        self._secrets = [
            s.get_secret_value() for s in (config.secret_access_key, config.session_token) if s is not None
        ]
        self._session = aioboto3.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key.get_secret_value()
            if config.secret_access_key
            else None,
            aws_session_token=config.session_token.get_secret_value() if config.session_token else None,
        )
        self._botocore = AioConfig(
            retries={"mode": "standard", "total_max_attempts": config.max_attempts},
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
        )

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | CloudWatchConfig, *_: Any, **__: Any
    ) -> CloudWatchMetrics:
        try:
            return cls(CloudWatchConfig.model_validate(config))
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise InvalidInput(f"invalid cloudwatch settings: {fields}") from None

    # -- alarms ----------------------------------------------------------------------

    async def alarm_states(self, names: Sequence[str]) -> AlarmStates:
        """The state of every named alarm, metric and composite alike. Never raises
        for a server or network failure: ``error`` says what went wrong."""
        found: dict[str, AlarmState] = {}
        attempts = 1
        try:
            async with self._client() as cw:
                for i in range(0, len(names), ALARM_NAMES_PER_CALL):
                    chunk = list(names[i : i + ALARM_NAMES_PER_CALL])
                    kwargs: dict[str, Any] = {
                        "AlarmNames": chunk,
                        "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                    }
                    while True:
                        page = await cw.describe_alarms(**kwargs)
                        attempts = max(attempts, page["ResponseMetadata"].get("RetryAttempts", 0) + 1)
                        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                            updated = alarm.get("StateUpdatedTimestamp")
                            found[alarm["AlarmName"]] = AlarmState(
                                alarm["AlarmName"],
                                alarm["StateValue"],
                                alarm.get("StateReason", ""),
                                updated.isoformat() if updated else None,
                            )
                        if not page.get("NextToken"):
                            break
                        kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:  # never raises: a parse error, a refused connection are results too
            failure = self._failure(exc, "DescribeAlarms")
            return AlarmStates(error=failure.message, attempts=failure.attempts)
        ordered = tuple(found[n] for n in names if n in found)
        return AlarmStates(ordered, tuple(n for n in names if n not in found), attempts=attempts)

    # -- metrics (the MetricsProvider protocol) ---------------------------------------

    async def query(self, query: str, at: datetime | None = None) -> QueryResult:
        """The latest datapoint of the query (``MetricQuery`` JSON) within its
        lookback before ``at`` (now when None), as one sample."""
        try:
            parsed = MetricQuery.parse(query)
        except InvalidInput as exc:
            return QueryResult(query, "error", message=str(exc), error_type="bad_data")
        end = at or datetime.now().astimezone()
        start = end - timedelta(seconds=parsed.window_s)
        result = await self._data(query, parsed, start, end, {"time": end.timestamp()})
        if result.status != "ok" or not result.series:
            return result
        points = result.series[0].points
        t, v = points[-1]
        return classify(query, samples=(Sample({}, t, v),), params=result.params, attempts=result.attempts)

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: timedelta | float
    ) -> QueryResult:
        """Every datapoint of the query from ``start`` to ``end``, one per period
        (``step`` is the period when the query gives none)."""
        try:
            parsed = MetricQuery.parse(query)
        except InvalidInput as exc:
            return QueryResult(query, "error", message=str(exc), error_type="bad_data")
        params = {"start": start.timestamp(), "end": end.timestamp()}
        return await self._data(query, parsed, start, end, params)

    async def is_online(self) -> bool:
        """Whether CloudWatch answers a trivial DescribeAlarms."""
        try:
            async with self._client() as cw:
                await cw.describe_alarms(MaxRecords=1)
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        return None

    async def _data(
        self, text: str, query: MetricQuery, start: datetime, end: datetime, params: dict[str, float]
    ) -> QueryResult:
        points: list[tuple[float, float]] = []
        try:
            async with self._client() as cw:
                kwargs: dict[str, Any] = {
                    "MetricDataQueries": query.data_queries(),
                    "StartTime": start,
                    "EndTime": end,
                    "ScanBy": "TimestampAscending",
                }
                while True:
                    page = await cw.get_metric_data(**kwargs)
                    for r in page.get("MetricDataResults", []):
                        if r["Id"] == "q":
                            points += [
                                (t.timestamp(), float(v))
                                for t, v in zip(r["Timestamps"], r["Values"], strict=True)
                            ]
                    if not page.get("NextToken"):
                        break
                    kwargs["NextToken"] = page["NextToken"]
        except Exception as exc:  # never raises: a parse error, a refused connection are results too
            failure = self._failure(exc, "GetMetricData")
            return QueryResult(
                text,
                "error",
                message=failure.message,
                error_type=failure.error_type,
                params=params,
                attempts=failure.attempts,
            )
        points.sort()
        series = (Series({}, tuple(points)),) if points else ()
        return classify(text, series=series, params=params)

    def _client(self) -> Any:
        return self._session.client(
            "cloudwatch",
            region_name=self.config.region,
            endpoint_url=self.config.endpoint_url,
            config=self._botocore,
        )

    def _failure(self, exc: Exception, operation: str) -> _Failure:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            attempts = int(meta.get("RetryAttempts", 0)) + 1
            code = error.get("Code", "Unknown")
            text = f"CloudWatch {operation}: {code} (HTTP {status}) after {attempts} attempt(s)"
            text = f"{text}: {error.get('Message', '')}"
            kind = "unavailable" if (status or 0) >= 500 or "Throttl" in str(code) else "http"
            return _Failure(self._scrub(text.rstrip(": ")), attempts, kind)
        text = str(exc).splitlines()[0] if str(exc) else ""
        return _Failure(self._scrub(f"CloudWatch {operation}: {type(exc).__name__}: {text}"))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


__all__ = [
    "AlarmState",
    "AlarmStates",
    "CloudWatchConfig",
    "CloudWatchMetrics",
    "MetricQuery",
]
