"""The four DORA keys per service and environment, computed from the log alone.

- **deployment frequency**: successful deployments per day over the period;
- **lead time for changes**: from the change's commit (the build event's
  ``committed_at``/``commit_time`` when CI sends it, else the build event's time) to
  its deployment's success in that environment — median and 90th percentile;
- **change failure rate**: deployments that changed something and then failed or
  were rolled back, over every deployment that started and ended;
- **time to restore**: for each of those, from the moment the bad change began to
  serve (its first applied step; its start when none was applied) until service was
  restored (the rollback's end, or — for a failure without a rollback — the next
  successful deployment of that environment). Median.

``compute`` is pure over decoded records; ``dora(log, ...)`` reads what it needs with
one filtered scan.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

TYPES = (
    "shiplog.build.completed",
    "shiplog.deployment.planned",
    "shiplog.deployment.started",
    "shiplog.step.applied",
    "shiplog.deployment.succeeded",
    "shiplog.deployment.failed",
    "shiplog.deployment.rolled_back",
)


@dataclass(frozen=True)
class Record:
    """One event as DORA needs it: when it was recorded, and its envelope."""

    recorded_at: datetime
    envelope: dict[str, Any]

    @property
    def type_name(self) -> str:
        return str(self.envelope["type"]).rsplit(".v", 1)[0]

    @property
    def data(self) -> dict[str, Any]:
        return self.envelope.get("data") or {}


@dataclass
class _Deployment:
    service: str
    environment: str
    release_id: str
    started_at: datetime | None = None
    first_applied_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None  # succeeded | failed | rolled_back


@dataclass
class DoraRow:
    service: str
    environment: str
    days: float
    successes: int = 0
    failures: int = 0
    ended: int = 0
    lead_times: list[float] = field(default_factory=list)  # seconds
    restore_times: list[float] = field(default_factory=list)  # seconds
    unrestored: int = 0

    @property
    def frequency_per_day(self) -> float:
        return self.successes / self.days if self.days > 0 else 0.0

    @property
    def change_failure_rate(self) -> float | None:
        return self.failures / self.ended if self.ended else None

    @property
    def lead_time_median_s(self) -> float | None:
        return statistics.median(self.lead_times) if self.lead_times else None

    @property
    def lead_time_p90_s(self) -> float | None:
        return _quantile(self.lead_times, 0.9)

    @property
    def time_to_restore_median_s(self) -> float | None:
        return statistics.median(self.restore_times) if self.restore_times else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "days": round(self.days, 3),
            "deployments": {
                "succeeded": self.successes,
                "failed_or_rolled_back": self.failures,
                "ended": self.ended,
            },
            "deployment_frequency_per_day": round(self.frequency_per_day, 4),
            "lead_time_s": {"median": self.lead_time_median_s, "p90": self.lead_time_p90_s},
            "change_failure_rate": self.change_failure_rate,
            "time_to_restore_s": {"median": self.time_to_restore_median_s, "unrestored": self.unrestored},
        }


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile (no interpolation: a figure that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(q * 100) * len(ordered) // 100))
    return ordered[min(rank, len(ordered)) - 1]


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def compute(
    records: Iterable[Record],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    service: str | None = None,
) -> list[DoraRow]:
    """The DORA keys per (service, environment), over ``since``..``until`` (default:
    the first to the last event seen)."""
    commits: dict[str, datetime] = {}
    deployments: dict[str, _Deployment] = {}
    first: datetime | None = None
    last: datetime | None = None
    for r in records:
        first = r.recorded_at if first is None else min(first, r.recorded_at)
        last = r.recorded_at if last is None else max(last, r.recorded_at)
        kind, data, env = r.type_name, r.data, r.envelope
        if kind == "shiplog.build.completed":
            release = env.get("correlationid") or env["id"]
            committed = _parse_time(data.get("committed_at") or data.get("commit_time"))
            commits[release] = committed or _parse_time(env.get("time")) or r.recorded_at
            continue
        dep_id = str(data.get("deployment_id") or env.get("subject") or "")
        if kind == "shiplog.deployment.planned":
            deployments.setdefault(
                dep_id, _Deployment(data["service"], data["environment"], data["release_id"])
            )
            continue
        dep = deployments.get(dep_id)
        if dep is None:
            continue
        if kind == "shiplog.deployment.started":
            dep.started_at = dep.started_at or r.recorded_at
        elif kind == "shiplog.step.applied":
            dep.first_applied_at = dep.first_applied_at or r.recorded_at
        elif kind in (
            "shiplog.deployment.succeeded",
            "shiplog.deployment.failed",
            "shiplog.deployment.rolled_back",
        ):
            if dep.outcome is None:
                dep.outcome = kind.rsplit(".", 1)[1]
                dep.ended_at = r.recorded_at
    start = since or first
    end = until or last
    rows: dict[tuple[str, str], DoraRow] = {}
    days = max((end - start).total_seconds() / 86400, 1 / 1440) if start and end else 0.0
    ended = sorted(
        (d for d in deployments.values() if d.outcome and d.ended_at),
        key=lambda d: d.ended_at,  # type: ignore[arg-type,return-value]
    )
    for dep in ended:
        assert dep.ended_at is not None
        if service is not None and dep.service != service:
            continue
        if (start and dep.ended_at < start) or (end and dep.ended_at > end):
            continue
        row = rows.setdefault((dep.service, dep.environment), DoraRow(dep.service, dep.environment, days))
        if dep.started_at is None:
            continue  # rejected or denied before it started: no change was made
        row.ended += 1
        if dep.outcome == "succeeded":
            row.successes += 1
            committed = commits.get(dep.release_id)
            if committed is not None:
                row.lead_times.append(max(0.0, (dep.ended_at - committed).total_seconds()))
            continue
        row.failures += 1
        bad_from = dep.first_applied_at or dep.started_at
        restored = dep.ended_at if dep.outcome == "rolled_back" else _next_success(ended, dep)
        if restored is None:
            row.unrestored += 1
        else:
            row.restore_times.append(max(0.0, (restored - bad_from).total_seconds()))
    return sorted(rows.values(), key=lambda r: (r.service, r.environment))


def _next_success(ended: Sequence[_Deployment], failed: _Deployment) -> datetime | None:
    assert failed.ended_at is not None
    for dep in ended:
        if (
            dep.outcome == "succeeded"
            and (dep.service, dep.environment) == (failed.service, failed.environment)
            and dep.ended_at is not None
            and dep.ended_at > failed.ended_at
        ):
            return dep.ended_at
    return None


async def dora(
    log: Any, *, service: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> list[DoraRow]:
    """Read the events DORA needs (from ``since`` less a lead-time allowance, so a
    build committed before the period still counts) and compute."""
    from events.registry import REGISTRY

    scan_from = since - timedelta(days=90) if since else None
    # the log stores each event's type with its version: every version ever published
    versioned = [f"{name}.v{v}" for name in TYPES for v in range(1, REGISTRY.models[name].VERSION + 1)]
    records = [
        Record(row.recorded_at, log.upcast_body(row.body))
        async for row in log.scan(types=versioned, since=scan_from)
    ]
    return compute(records, since=since, until=until, service=service)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
