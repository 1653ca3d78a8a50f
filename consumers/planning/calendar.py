"""Deploy windows and freezes: pure functions over a schedule and a given instant.

A window opens at each time its cron expression names, read on the wall clock of
its time zone, and stays open for its duration on that same wall clock: "0 9 * * 1-5"
for 8h in Europe/Berlin is 09:00-17:00 local in winter and in summer, and
"0 22 * * *" for 10h ends at 08:00 local even on the night the clocks change.
Local times skipped by a DST change are taken at the change (the window starts or
ends when the clock jumps); a repeated hour starts at its first and ends at its
second occurrence. Windows are half open: [start, end).

With no allow window, an environment is open unless a deny window holds it; with
allow windows, it is open only inside one of them and outside every deny window.
Deny wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from consumers.planning.pipeline import Window

#: how far ``next_opening`` looks ahead by default
DEFAULT_HORIZON = timedelta(days=366)
#: more than any DST shift: near one, local times are searched this much either side
_SLOP = timedelta(hours=3)


def is_open(schedule: Sequence[Window], at: datetime) -> tuple[bool, str]:
    """Whether a deployment may start at ``at`` (an aware datetime), and why."""
    _aware(at)
    deny = [(w, end) for w in schedule if w.kind == "deny" if (end := _holding_end(w, at))]
    if deny:
        window, end = max(deny, key=lambda d: d[1])
        return False, f"held by {window.label} until {_fmt(end, window.zone)}"
    allow = [w for w in schedule if w.kind == "allow"]
    if not allow:
        if any(w.kind == "deny" for w in schedule):
            return True, "no freeze holds now and no deploy window is required"
        return True, "no deploy windows: always open"
    inside = [(w, end) for w in allow if (end := _holding_end(w, at))]
    if inside:
        window, end = max(inside, key=lambda d: d[1])
        return True, f"inside {window.label} until {_fmt(end, window.zone)}"
    return False, "outside every deploy window: " + "; ".join(w.label for w in allow)


def next_opening(
    schedule: Sequence[Window], after: datetime, *, horizon: timedelta = DEFAULT_HORIZON
) -> datetime | None:
    """The first instant at or after ``after`` when the schedule is open (``after``
    itself when it is open now); None if it does not open within ``horizon``."""
    _aware(after)
    limit = after + horizon
    allow = [w for w in schedule if w.kind == "allow"]
    deny = [w for w in schedule if w.kind == "deny"]
    t = after
    while t <= limit:
        denied_until = max((end for w in deny if (end := _holding_end(w, t))), default=None)
        allowed = not allow or any(_holding_end(w, t) for w in allow)
        if allowed and denied_until is None:
            return t.astimezone(after.tzinfo)
        if not allowed:
            # nothing opens before the next allow window starts
            starts = [s for w in allow if (s := _next_start(w, t, limit))]
            if not starts:
                return None
            t = min(starts)
        else:
            # every freeze holding now holds until the latest of their ends
            assert denied_until is not None
            t = denied_until
    return None


def _holding_end(window: Window, at: datetime) -> datetime | None:
    """The end of the occurrence of ``window`` that holds ``at``, or None."""
    zone = window.zone
    length = window.length
    ends: list[datetime] = []
    for start in _starts_back(window, _local(at, zone) + _slop(at, zone) + timedelta(seconds=1)):
        start_at = _start_instant(start, zone)
        if start_at > at:
            continue
        # occurrences all last the same wall-clock time, so the latest start that is
        # not after `at` ends last; the second one covers a repeated (DST) hour
        ends.append(_end_instant(start + length, zone))
        if len(ends) == 2:
            break
    end = max(ends, default=None)
    return end if end is not None and end > at else None


def _next_start(window: Window, after: datetime, limit: datetime) -> datetime | None:
    """The first instant after ``after`` at which ``window`` starts, up to ``limit``."""
    zone = window.zone
    it = croniter(window.cron, _local(after, zone) - _slop(after, zone))
    try:
        while True:
            start_at = _start_instant(it.get_next(datetime), zone)
            if start_at > limit:
                return None
            if start_at > after:
                return start_at
    except ValueError:  # croniter found no further date
        return None


def _starts_back(window: Window, before: datetime) -> Iterator[datetime]:
    """Local (naive) start times of ``window`` before ``before``, latest first."""
    it = croniter(window.cron, before)
    try:
        while True:
            yield it.get_prev(datetime)
    except ValueError:  # croniter found no earlier date
        return


def _slop(at: datetime, zone: ZoneInfo) -> timedelta:
    # near a DST change a local time that reads later can be an earlier instant
    changes = (at - _SLOP).astimezone(zone).utcoffset() != (at + _SLOP).astimezone(zone).utcoffset()
    return _SLOP if changes else timedelta(0)


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def _start_instant(local: datetime, zone: ZoneInfo) -> datetime:
    return _instant(local, zone, fold=0)


def _end_instant(local: datetime, zone: ZoneInfo) -> datetime:
    return _instant(local, zone, fold=1)


def _instant(local: datetime, zone: ZoneInfo, *, fold: int) -> datetime:
    """The UTC instant of a local wall-clock time; a time the clocks skipped is taken
    at the jump, a repeated one at its ``fold`` occurrence."""
    aware = local.replace(tzinfo=zone, fold=fold)
    utc = aware.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == local:
        return utc
    # skipped: between the two readings of the local time lies the jump
    lo = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    lo, hi = min(lo, hi), max(lo, hi)
    offset_before = lo.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == offset_before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def _aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} is naive: deploy windows need an aware datetime")


def _fmt(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).isoformat()
