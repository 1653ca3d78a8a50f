"""DORA keys for a log with a known history, against figures computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shiplog.dora import Record, compute, format_duration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rec(minutes: float, kind: str, subject: str, **data: Any) -> Record:
    envelope = {
        "id": f"{kind}-{subject}-{minutes}",
        "type": f"shiplog.{kind}.v1",
        "subject": subject,
        "time": at(minutes).isoformat(),
        "data": data,
    }
    if "correlationid" in data:
        envelope["correlationid"] = data.pop("correlationid")
    return Record(at(minutes), envelope)


def deployment(
    release: str, env: str, start: float, end: float, outcome: str, *, applied: float | None = None
) -> list[Record]:
    dep = f"shop.{env}.{release}"
    out = [
        rec(
            start - 1,
            "deployment.planned",
            dep,
            deployment_id=dep,
            service="shop",
            environment=env,
            release_id=release,
        ),
        rec(start, "deployment.started", dep, deployment_id=dep),
    ]
    if applied is not None:
        out.append(rec(applied, "step.applied", dep, deployment_id=dep))
    out.append(rec(end, f"deployment.{outcome}", dep, deployment_id=dep))
    return out


def history() -> list[Record]:
    """Three releases into production over two days:

    r1: committed at 0, builds at 10, succeeds at 70           -> lead time 70 min
    r2: committed at 100 (CI says), succeeds at 160            -> lead time 60 min
    r3: built at 1000, first step applied at 1030, rolled back at 1045 -> restore 15 min
    r4: built at 2000, fails (no rollback) at 2040 after applying at 2010;
        the next success (r5, built 2100) at 2160               -> restore 150 min
    plus a deployment that was denied before starting (not a change).
    """
    records = [
        rec(10, "build.completed", "shop", correlationid="r1", committed_at=at(0).isoformat()),
        *deployment("r1", "production", 20, 70, "succeeded", applied=30),
        rec(120, "build.completed", "shop", correlationid="r2", committed_at=at(100).isoformat()),
        *deployment("r2", "production", 130, 160, "succeeded", applied=140),
        rec(1000, "build.completed", "shop", correlationid="r3"),
        *deployment("r3", "production", 1020, 1045, "rolled_back", applied=1030),
        rec(2000, "build.completed", "shop", correlationid="r4"),
        *deployment("r4", "production", 2005, 2040, "failed", applied=2010),
        rec(2100, "build.completed", "shop", correlationid="r5"),
        *deployment("r5", "production", 2110, 2160, "succeeded", applied=2120),
        rec(2200, "build.completed", "shop", correlationid="r6"),
        rec(
            2201,
            "deployment.planned",
            "shop.production.r6",
            deployment_id="shop.production.r6",
            service="shop",
            environment="production",
            release_id="r6",
        ),
        rec(2202, "deployment.denied", "shop.production.r6", deployment_id="shop.production.r6"),
    ]
    return sorted(records, key=lambda r: r.recorded_at)


def test_the_four_keys_equal_the_hand_computed_figures():
    (row,) = compute(history(), since=T0, until=T0 + timedelta(days=2))

    assert (row.service, row.environment) == ("shop", "production")
    assert (row.successes, row.failures, row.ended) == (3, 2, 5)
    assert row.frequency_per_day == pytest.approx(1.5)
    # lead times: r1 70 min, r2 60 min, r5 2160 - 2100 = 60 min (build time: no commit time given)
    assert sorted(row.lead_times) == [3600.0, 3600.0, 4200.0]
    assert row.lead_time_median_s == 3600.0
    assert row.lead_time_p90_s == 4200.0
    assert row.change_failure_rate == pytest.approx(2 / 5)
    assert sorted(row.restore_times) == [15 * 60.0, 150 * 60.0]
    assert row.time_to_restore_median_s == pytest.approx((15 + 150) / 2 * 60)
    assert row.unrestored == 0


def test_a_period_and_a_service_filter():
    rows = compute(history(), since=at(1000), until=at(1100))
    assert [(r.successes, r.failures) for r in rows] == [(0, 1)]
    assert compute(history(), service="other") == []


def test_a_failure_never_followed_by_a_success_is_unrestored():
    records = [r for r in history() if "r5" not in r.envelope["id"]]
    (row,) = compute(records)
    assert row.unrestored == 1


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (42, "42s"), (600, "10.0m"), (7200, "2.0h"), (3 * 86400, "3.0d")]
)
def test_durations_read_well(seconds, text):
    assert format_duration(seconds) == text
