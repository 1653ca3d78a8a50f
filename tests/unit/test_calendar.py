"""Deploy windows and freezes: open or not at an instant, and when a waiting release
may go. Berlin switches to summer time on 2025-03-30 and back on 2025-10-26; New
York on 2025-03-09 and 2025-11-02."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from consumers.planning.calendar import is_open, next_opening
from consumers.planning.pipeline import Window

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

WEEKDAYS = Window(name="weekdays", kind="allow", cron="0 9 * * 1-5", duration="8h", timezone="Europe/Berlin")
WEEKDAYS_NY = Window(kind="allow", cron="0 9 * * 1-5", duration="8h", timezone="America/New_York")
YEAR_END = Window(name="year-end", kind="deny", cron="0 0 20 12 *", duration="14d", timezone="Europe/Berlin")
LUNCH = Window(name="lunch", kind="deny", cron="0 12 * * 1-5", duration="1h", timezone="Europe/Berlin")
FRIDAY_AFTERNOON = Window(
    name="weekend", kind="deny", cron="0 16 * * 5", duration="3d", timezone="Europe/Berlin"
)
NIGHTLY = Window(kind="allow", cron="0 22 * * *", duration="10h", timezone="Europe/Berlin")
#: 02:30 does not exist in Berlin on 2025-03-30 and exists twice on 2025-10-26
IN_THE_GAP = Window(kind="allow", cron="30 2 * * *", duration="1h", timezone="Europe/Berlin")
ALWAYS_DENIED = Window(kind="deny", cron="0 0 * * *", duration="1d", timezone="UTC")
LEAP_DAY = Window(kind="allow", cron="0 0 29 2 *", duration="1h", timezone="UTC")


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


IS_OPEN = [
    # no windows at all
    ("no windows", [], utc(2025, 6, 14, 3, 0), True),
    # weekday 09:00-17:00 Berlin, winter (UTC+1) and summer (UTC+2) around the switch
    ("Fri 09:30 CET", [WEEKDAYS], utc(2025, 3, 28, 8, 30), True),
    ("Fri 08:30 CET", [WEEKDAYS], utc(2025, 3, 28, 7, 30), False),
    ("Fri 16:30 CET", [WEEKDAYS], utc(2025, 3, 28, 15, 30), True),
    ("Sat 10:00", [WEEKDAYS], berlin(2025, 3, 29, 10, 0), False),
    ("Mon 09:30 CEST, after the switch", [WEEKDAYS], utc(2025, 3, 31, 7, 30), True),
    ("Mon 08:30 CEST", [WEEKDAYS], utc(2025, 3, 31, 6, 30), False),
    ("Mon 17:30 CEST", [WEEKDAYS], utc(2025, 3, 31, 15, 30), False),
    ("opening instant is inside", [WEEKDAYS], utc(2025, 3, 31, 7, 0), True),
    ("closing instant is outside", [WEEKDAYS], utc(2025, 3, 31, 15, 0), False),
    ("Fri 09:30 CEST, before the switch back", [WEEKDAYS], utc(2025, 10, 24, 7, 30), True),
    ("Mon 08:30 CET, after the switch back", [WEEKDAYS], utc(2025, 10, 27, 7, 30), False),
    ("Mon 09:30 CET, after the switch back", [WEEKDAYS], utc(2025, 10, 27, 8, 30), True),
    ("asked in another zone", [WEEKDAYS], datetime(2025, 6, 10, 3, 30, tzinfo=NEW_YORK), True),
    # New York switches three weeks before Berlin
    ("NY Fri 08:30 EST", [WEEKDAYS_NY], utc(2025, 3, 7, 13, 30), False),
    ("NY Mon 09:30 EDT", [WEEKDAYS_NY], utc(2025, 3, 10, 13, 30), True),
    ("NY Mon 16:30 EDT", [WEEKDAYS_NY], utc(2025, 3, 10, 20, 30), True),
    # deny beats allow
    ("year-end freeze on a weekday", [WEEKDAYS, YEAR_END], berlin(2025, 12, 22, 10, 0), False),
    ("after the freeze", [WEEKDAYS, YEAR_END], berlin(2026, 1, 5, 10, 0), True),
    ("lunch freeze inside the window", [WEEKDAYS, LUNCH], berlin(2025, 6, 10, 12, 30), False),
    ("after lunch", [WEEKDAYS, LUNCH], berlin(2025, 6, 10, 13, 0), True),
    # only deny windows: open unless frozen
    ("freeze only, in June", [YEAR_END], berlin(2025, 6, 1, 12, 0), True),
    ("freeze only, its last minute", [YEAR_END], berlin(2026, 1, 2, 23, 59), False),
    ("freeze only, its end", [YEAR_END], berlin(2026, 1, 3, 0, 0), True),
    # a window that spans midnight
    ("nightly, before midnight", [NIGHTLY], berlin(2025, 6, 10, 23, 30), True),
    ("nightly, after midnight", [NIGHTLY], berlin(2025, 6, 11, 7, 59), True),
    ("nightly, its end", [NIGHTLY], berlin(2025, 6, 11, 8, 0), False),
    ("nightly, before it opens", [NIGHTLY], berlin(2025, 6, 10, 21, 59), False),
    # wall-clock duration across the switch: 22:00 -> 08:00 local either way
    ("nightly, spring night 07:30 CEST", [NIGHTLY], utc(2025, 3, 30, 5, 30), True),
    ("nightly, spring night 08:30 CEST", [NIGHTLY], utc(2025, 3, 30, 6, 30), False),
    ("nightly, autumn night 07:30 CET", [NIGHTLY], utc(2025, 10, 26, 6, 30), True),
    ("nightly, autumn night 08:00 CET", [NIGHTLY], utc(2025, 10, 26, 7, 0), False),
    # 02:30-03:30 on the night 02:00-03:00 is skipped: what exists is 03:00-03:30 CEST
    ("skipped hour, before", [IN_THE_GAP], utc(2025, 3, 30, 0, 45), False),
    ("skipped hour, the jump", [IN_THE_GAP], utc(2025, 3, 30, 1, 0), True),
    ("skipped hour, 03:15 CEST", [IN_THE_GAP], utc(2025, 3, 30, 1, 15), True),
    ("skipped hour, 03:30 CEST", [IN_THE_GAP], utc(2025, 3, 30, 1, 30), False),
    # 02:30 happens twice on 2025-10-26: the window starts at the first (CEST) one
    ("repeated hour, 02:15 CEST", [IN_THE_GAP], utc(2025, 10, 26, 0, 15), False),
    ("repeated hour, 02:30 CEST", [IN_THE_GAP], utc(2025, 10, 26, 0, 30), True),
    ("repeated hour, 02:15 CET", [IN_THE_GAP], utc(2025, 10, 26, 1, 15), True),
    ("repeated hour, 03:30 CET", [IN_THE_GAP], utc(2025, 10, 26, 2, 30), False),
]


@pytest.mark.parametrize(
    ("schedule", "at", "expected"), [c[1:] for c in IS_OPEN], ids=[c[0] for c in IS_OPEN]
)
def test_is_open(schedule: list[Window], at: datetime, expected: bool) -> None:
    open_, reason = is_open(schedule, at)
    assert open_ is expected, reason
    assert reason


@pytest.mark.parametrize(
    ("schedule", "at", "words"),
    [
        ([], utc(2025, 6, 1), "always open"),
        ([WEEKDAYS, YEAR_END], berlin(2025, 12, 22, 10), "held by freeze 'year-end'"),
        ([WEEKDAYS, YEAR_END], berlin(2025, 12, 22, 10), "until 2026-01-03T00:00:00+01:00"),
        ([WEEKDAYS], berlin(2025, 6, 14, 10), "outside every deploy window"),
        ([WEEKDAYS], berlin(2025, 6, 10, 10), "inside deploy window 'weekdays'"),
        ([YEAR_END], berlin(2025, 6, 10, 10), "no freeze holds now"),
    ],
)
def test_is_open_says_why(schedule: list[Window], at: datetime, words: str) -> None:
    assert words in is_open(schedule, at)[1]


NEXT_OPENING = [
    ("no windows: now", [], berlin(2025, 6, 14, 3, 0), berlin(2025, 6, 14, 3, 0)),
    ("open now: now", [WEEKDAYS], berlin(2025, 6, 10, 10, 0), berlin(2025, 6, 10, 10, 0)),
    ("Saturday waits for Monday", [WEEKDAYS], berlin(2025, 6, 14, 10, 0), berlin(2025, 6, 16, 9, 0)),
    (
        "Saturday before the switch waits for Monday 09:00 summer time",
        [WEEKDAYS],
        berlin(2025, 3, 29, 10, 0),
        utc(2025, 3, 31, 7, 0),
    ),
    ("evening waits for the morning", [WEEKDAYS], berlin(2025, 6, 10, 18, 0), berlin(2025, 6, 11, 9, 0)),
    (
        "freeze waits for its end, inside the window",
        [WEEKDAYS, LUNCH],
        berlin(2025, 6, 10, 12, 30),
        berlin(2025, 6, 10, 13, 0),
    ),
    (
        "freeze ending inside the window opens when it ends",
        [WEEKDAYS, FRIDAY_AFTERNOON],
        berlin(2025, 6, 13, 16, 30),
        berlin(2025, 6, 16, 16, 0),
    ),
    (
        "year-end freeze, then the next weekday morning",
        [WEEKDAYS, YEAR_END],
        berlin(2025, 12, 19, 18, 0),
        berlin(2026, 1, 5, 9, 0),
    ),
    ("freeze only: its end", [YEAR_END], berlin(2025, 12, 24, 10, 0), berlin(2026, 1, 3, 0, 0)),
    ("nightly window later today", [NIGHTLY], berlin(2025, 6, 10, 12, 0), berlin(2025, 6, 10, 22, 0)),
    ("always frozen: never", [WEEKDAYS, ALWAYS_DENIED], berlin(2025, 6, 10, 10, 0), None),
    ("next leap day is beyond a year: never", [LEAP_DAY], utc(2025, 3, 1), None),
]


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [c[1:] for c in NEXT_OPENING],
    ids=[c[0] for c in NEXT_OPENING],
)
def test_next_opening(schedule: list[Window], after: datetime, expected: datetime | None) -> None:
    opening = next_opening(schedule, after)
    assert opening == expected
    if opening is not None:
        assert is_open(schedule, opening)[0]
        assert opening.tzinfo == after.tzinfo
        assert not is_open(schedule, opening - timedelta(seconds=1))[0] or opening == after


def test_a_release_waiting_at_a_closed_window_is_released_at_its_opening() -> None:
    waiting_since = berlin(2025, 6, 13, 17, 30)  # Friday evening
    assert is_open([WEEKDAYS], waiting_since)[0] is False
    opening = next_opening([WEEKDAYS], waiting_since)
    assert opening == berlin(2025, 6, 16, 9, 0)
    assert opening is not None and is_open([WEEKDAYS], opening)[0]


def test_next_opening_looks_no_further_than_the_horizon() -> None:
    saturday = berlin(2025, 6, 14, 10, 0)
    assert next_opening([WEEKDAYS], saturday, horizon=timedelta(days=1)) is None
    assert next_opening([WEEKDAYS], saturday, horizon=timedelta(days=2)) == berlin(2025, 6, 16, 9, 0)


@pytest.mark.parametrize("call", [is_open, next_opening])
def test_naive_datetimes_are_refused(call: object) -> None:
    with pytest.raises(ValueError, match="naive"):
        call([WEEKDAYS], datetime(2025, 6, 10, 10, 0))  # type: ignore[operator]
