"""What ``gather`` observed, as plain data for the pure ``decide``.

Nothing here is judged yet: a probe's status code, a scrape's counters, a query's
raw result, an error's text. ``analysis`` turns them into measurements with outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.metrics import QueryResult
from adapters.metrics.cloudwatch import AlarmStates
from consumers.verification.prometheus import VersionCounters


@dataclass(frozen=True)
class Probe:
    """One health GET: the status code, or why there was none (timeout, refused)."""

    status: int | None = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class HealthObservation:
    """The probes of one instance URL, in order."""

    url: str
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class ScrapeAttempt:
    """One read of the metrics endpoint: its counters by version, or the error."""

    at_s: float
    counters: dict[str, VersionCounters] | None = None
    error: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """Requests sent through the endpoint; ``failed`` got no answer at all."""

    sent: int = 0
    failed: int = 0
    error: str | None = None


@dataclass(frozen=True)
class QueryRound:
    """One measurement of one query check: the new version's result and the compared
    track's, both evaluated at the instant ``at``. Every result is kept as the
    provider returned it (rendered PromQL, status, samples, message), errors included."""

    check: str
    #: 0, 1, 2... in the order the check measured
    attempt: int
    at: datetime
    #: the version being verified, and its result
    canary_version: str
    canary: QueryResult
    #: the compared track's version and result; None: not queried (``compare: none``,
    #: or ``compared_missing`` says why)
    compared_version: str | None = None
    compared: QueryResult | None = None
    compared_missing: str | None = None


@dataclass(frozen=True)
class JudgeRange:
    """One judged query over the judge's lookback, for the canary and the compared
    track, as range queries from ``start`` to ``end`` every ``step_s``: the samples
    the statistical judge compares. ``compared`` is None when no version could be
    compared with (``compared_missing`` says why)."""

    check: str
    start: datetime
    end: datetime
    step_s: float
    canary_version: str
    canary: QueryResult
    compared_track: str
    compared_version: str | None = None
    compared: QueryResult | None = None
    compared_missing: str | None = None


@dataclass(frozen=True)
class PreviousValue:
    """A check's recorded value in one earlier successful deployment: the mean of its
    measured values in that deployment's passed verifications."""

    deployment_id: str
    version: str
    value: float
    #: the measured values the mean was taken over
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class History:
    """One check's values in the most recent successful deployments of the same
    service and environment, oldest first; ``error`` when the log could not be read,
    ``missing`` when there is no log to read."""

    check: str
    previous: tuple[PreviousValue, ...] = ()
    error: str | None = None
    missing: str | None = None


@dataclass(frozen=True)
class Facts:
    """Everything one verification run observed."""

    #: the version being verified (the plan's) and the one serving beside it, if any
    canary: str
    stable: str | None = None
    #: each failed attempt to read the target's status, in order
    status_errors: tuple[str, ...] = ()
    #: tracks, endpoint and metrics URL as the target reported them; None: never read
    status: dict[str, Any] | None = None
    #: one per instance URL of the new version; None: health was not checked
    health: tuple[HealthObservation, ...] | None = None
    #: every scrape in order; the first good one is the baseline. None: not measured
    scrapes: tuple[ScrapeAttempt, ...] | None = None
    #: why metrics could not be measured at all (e.g. no metrics endpoint)
    metrics_unavailable: str | None = None
    load: LoadResult | None = None
    #: every round of every query check, by check, in order. None: not measured
    queries: tuple[QueryRound, ...] | None = None
    #: every judged query's ranges, in the judge's order. None: not measured
    judge_ranges: tuple[JudgeRange, ...] | None = None
    #: ``slo.error_rate_query`` of the new version, by window. None: not queried
    slo_results: tuple[tuple[str, QueryResult], ...] | None = None
    #: ``impact.users_query`` of the new version. None: not queried
    users: QueryResult | None = None
    #: previous releases' values of each check compared with them, by check.
    #: None: not read
    history: dict[str, History] | None = None
    #: the named CloudWatch alarms' states, one lookup per round. None: not looked up
    alarms: tuple[AlarmStates, ...] | None = None
    #: every round of every CloudWatch query check: (check name, result). None: not run
    cloudwatch: tuple[tuple[str, QueryResult], ...] | None = None
