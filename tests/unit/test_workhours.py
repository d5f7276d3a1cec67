"""The working-hours calendar: worked examples a support team would check by hand,
daylight-saving nights, and properties against a minute-by-minute reference."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.config import HoursConfig, parse_config
from maild.core.workhours import Calendar, due

CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
TINY = timedelta(microseconds=1)
WEEKDAYS = (0, 1, 2, 3, 4)
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)
OFFICE = ((time(8), time(12)), (time(13), time(17)))


def calendar(
    timezone: str = "America/Chicago",
    days: tuple[int, ...] = WEEKDAYS,
    ranges: tuple[tuple[time, time], ...] = OFFICE,
    holidays: tuple[date, ...] = (),
    country: str | None = None,
    subdivision: str | None = None,
) -> Calendar:
    return Calendar(HoursConfig(timezone, days, ranges, holidays, country, subdivision))


def chicago(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


def day_span(cal: Calendar, day: date, tz: ZoneInfo) -> timedelta:
    """Working time from local midnight to the next local midnight."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    return cal.between(start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz))


# --- worked examples ----------------------------------------------------------


def test_friday_afternoon_plus_two_hours_is_monday_morning() -> None:
    cal = calendar()
    friday = chicago(2026, 5, 15, 16)
    assert cal.add(friday, 2) == chicago(2026, 5, 18, 9)
    assert cal.add(friday, timedelta(hours=2)) == chicago(2026, 5, 18, 9)
    assert cal.add(friday, 1.5) == chicago(2026, 5, 18, 8, 30)
    assert cal.add(friday, 2).tzinfo is UTC


def test_a_listed_holiday_on_monday_moves_it_to_tuesday() -> None:
    cal = calendar(holidays=(date(2026, 5, 18),))
    assert cal.add(chicago(2026, 5, 15, 16), 2) == chicago(2026, 5, 19, 9)
    assert cal.is_holiday(date(2026, 5, 18))
    assert not cal.is_open(chicago(2026, 5, 18, 10))


def test_48_working_hours_after_a_friday_resolution() -> None:
    # By hand, 8 working hours a day: Fri 15-17 (2), Mon 18 holiday, Tue-Fri
    # (32, 34 in all), Mon 25 (42), Tue 26 08-12 (46) and 13-15 (48).
    cal = calendar(holidays=(date(2026, 5, 18),))
    resolved = chicago(2026, 5, 15, 15)
    assert cal.add(resolved, 48) == chicago(2026, 5, 26, 15)
    # With US holidays too, Memorial Day (Mon 25) is skipped as well.
    cal = calendar(holidays=(date(2026, 5, 18),), country="US")
    assert cal.add(resolved, 48) == chicago(2026, 5, 27, 15)
    assert cal.between(resolved, chicago(2026, 5, 27, 15)) == timedelta(hours=48)


def test_ending_exactly_at_closing_time_is_closing_time_not_next_morning() -> None:
    cal = calendar()
    assert cal.add(chicago(2026, 5, 15, 15), 2) == chicago(2026, 5, 15, 17)
    assert cal.add(chicago(2026, 5, 15, 10), 2) == chicago(2026, 5, 15, 12)
    assert cal.add(chicago(2026, 5, 15, 10), 2 + 1 / 60) == chicago(2026, 5, 15, 13, 1)


def test_zero_hours_is_start_when_open_else_the_next_opening() -> None:
    cal = calendar()
    assert cal.add(chicago(2026, 5, 15, 10), 0) == chicago(2026, 5, 15, 10)
    assert cal.add(chicago(2026, 5, 15, 12, 30), 0) == chicago(2026, 5, 15, 13)
    assert cal.add(chicago(2026, 5, 15, 17), 0) == chicago(2026, 5, 18, 8)


def test_thanksgiving_is_skipped_with_holiday_country_us() -> None:
    cal = calendar(country="US")
    assert cal.is_holiday(date(2026, 11, 26))
    assert not cal.is_holiday(date(2026, 11, 27))
    assert cal.add(chicago(2026, 11, 25, 16), 2) == chicago(2026, 11, 27, 9)
    assert cal.between(chicago(2026, 11, 26, 0), chicago(2026, 11, 27, 0)) == timedelta(0)
    assert cal.next_open(chicago(2026, 11, 26, 9)) == chicago(2026, 11, 27, 8)


def test_observed_holidays_across_new_year() -> None:
    # 1 January 2022 was a Saturday; the US observed it on Friday 31 December 2021.
    cal = calendar(country="US")
    assert cal.is_holiday(date(2021, 12, 31))
    assert not cal.is_open(chicago(2021, 12, 31, 9))


def test_holiday_subdivision() -> None:
    # Epiphany is a public holiday in Bavaria, not in Berlin.
    bavaria = calendar("Europe/Berlin", country="DE", subdivision="BY")
    berlin = calendar("Europe/Berlin", country="DE", subdivision="BE")
    assert bavaria.is_holiday(date(2026, 1, 6))
    assert not berlin.is_holiday(date(2026, 1, 6))
    assert bavaria.is_holiday(date(2026, 12, 25)) and berlin.is_holiday(date(2026, 12, 25))


def test_lunch_break_holds_no_working_time() -> None:
    cal = calendar()
    assert cal.between(chicago(2026, 5, 15, 12), chicago(2026, 5, 15, 13)) == timedelta(0)
    assert cal.between(chicago(2026, 5, 15, 12, 10), chicago(2026, 5, 15, 12, 50)) == timedelta(0)
    assert not cal.is_open(chicago(2026, 5, 15, 12, 30))
    assert cal.between(chicago(2026, 5, 15, 11), chicago(2026, 5, 15, 14)) == 2 * HOUR


def test_between_is_negative_backwards() -> None:
    cal = calendar()
    a, b = chicago(2026, 5, 15, 9), chicago(2026, 5, 18, 10)
    assert cal.between(a, b) == 9 * HOUR  # Fri 9-12, 13-17; Mon 8-10
    assert cal.between(b, a) == -9 * HOUR
    assert cal.between(a, a) == timedelta(0)


def test_ranges_are_half_open() -> None:
    cal = calendar()
    assert cal.is_open(chicago(2026, 5, 15, 8))
    assert cal.is_open(chicago(2026, 5, 15, 17) - TINY)
    assert not cal.is_open(chicago(2026, 5, 15, 17))
    assert not cal.is_open(chicago(2026, 5, 15, 8) - TINY)
    assert not cal.is_open(chicago(2026, 5, 16, 10))  # Saturday


def test_next_open() -> None:
    cal = calendar()
    assert cal.next_open(chicago(2026, 5, 15, 9, 30)) == chicago(2026, 5, 15, 9, 30)
    assert cal.next_open(chicago(2026, 5, 15, 12)) == chicago(2026, 5, 15, 13)
    assert cal.next_open(chicago(2026, 5, 16, 12)) == chicago(2026, 5, 18, 8)
    assert cal.next_open(chicago(2026, 5, 15, 9, 30)).tzinfo is UTC


def test_intervals_are_clipped_and_in_utc() -> None:
    cal = calendar()
    got = list(cal.intervals(chicago(2026, 5, 15, 10), chicago(2026, 5, 18, 9)))
    assert got == [
        (chicago(2026, 5, 15, 10), chicago(2026, 5, 15, 12)),
        (chicago(2026, 5, 15, 13), chicago(2026, 5, 15, 17)),
        (chicago(2026, 5, 18, 8), chicago(2026, 5, 18, 9)),
    ]
    assert all(s.tzinfo is UTC and e.tzinfo is UTC for s, e in got)
    assert list(cal.intervals(chicago(2026, 5, 18, 9), chicago(2026, 5, 15, 10))) == []


def test_night_shift_belongs_to_the_day_it_starts() -> None:
    cal = calendar("America/Chicago", WEEKDAYS, ((time(22), time(6)),))
    assert cal.is_open(chicago(2026, 5, 15, 23))  # Friday night
    assert cal.is_open(chicago(2026, 5, 16, 5, 59))  # ... into Saturday morning
    assert not cal.is_open(chicago(2026, 5, 16, 6))
    assert not cal.is_open(chicago(2026, 5, 17, 23))  # Sunday night is off
    assert not cal.is_open(chicago(2026, 5, 18, 5))  # so is Monday early morning
    assert cal.add(chicago(2026, 5, 16, 12), 1) == chicago(2026, 5, 18, 23)
    assert cal.between(chicago(2026, 5, 18, 0), chicago(2026, 5, 25, 0)) == 40 * HOUR
    # A holiday on the Friday skips its whole night shift, Saturday morning included.
    cal = calendar("America/Chicago", WEEKDAYS, ((time(22), time(6)),), (date(2026, 5, 15),))
    assert not cal.is_open(chicago(2026, 5, 16, 2))
    assert cal.is_open(chicago(2026, 5, 15, 2))  # Thursday's shift still runs


def test_touching_intervals_are_merged() -> None:
    cal = calendar("America/Chicago", EVERY_DAY, ((time(0), time(0)),))
    whole = list(cal.intervals(chicago(2026, 3, 6, 12), chicago(2026, 3, 10, 12)))
    assert whole == [(chicago(2026, 3, 6, 12), chicago(2026, 3, 10, 12))]
    # 4 local days across the spring-forward night hold 95 real hours.
    assert cal.between(chicago(2026, 3, 6, 12), chicago(2026, 3, 10, 12)) == 95 * HOUR
    cal = calendar("UTC", WEEKDAYS, ((time(6), time(10)), (time(22), time(6))))
    monday = datetime(2026, 5, 18, tzinfo=UTC)
    assert list(cal.intervals(monday, monday + timedelta(days=2))) == [
        (monday + 6 * HOUR, monday + 10 * HOUR),
        (monday + 22 * HOUR, monday + 34 * HOUR),
        (monday + 46 * HOUR, monday + 48 * HOUR),
    ]


def test_overlapping_ranges_built_by_hand_count_once() -> None:
    cal = calendar("UTC", EVERY_DAY, ((time(8), time(12)), (time(10), time(14))))
    monday = datetime(2026, 5, 18, tzinfo=UTC)
    assert cal.between(monday, monday + timedelta(days=1)) == 6 * HOUR
    assert list(cal.intervals(monday, monday + timedelta(days=1))) == [
        (monday + 8 * HOUR, monday + 14 * HOUR)
    ]


def test_config_from_the_spec() -> None:
    config = parse_config(
        {
            "support": {"address": "support@example.org"},
            "hours": {
                "timezone": "America/Chicago",
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "ranges": ["08:00-12:00", "13:00-17:00"],
                "holidays": ["2026-12-24", "2026-12-25"],
                "holiday_country": "US",
                "holiday_subdivision": "TX",
            },
        }
    )
    cal = Calendar.from_config(config.hours)
    assert Calendar.from_config(config.hours) is cal
    # Wed 23 Dec 16:00 + 2h: 24 and 25 listed, then the weekend.
    assert cal.add(chicago(2026, 12, 23, 16), 2) == chicago(2026, 12, 28, 9)
    assert cal.between(chicago(2026, 12, 21, 0), chicago(2026, 12, 28, 0)) == 24 * HOUR


# --- daylight saving ------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        (date(2026, 3, 28), 8),
        (date(2026, 3, 29), 7),
        (date(2026, 10, 25), 9),
        (date(2026, 10, 26), 8),
    ],
)
def test_berlin_night_range_on_dst_changes(day: date, hours: int) -> None:
    cal = calendar("Europe/Berlin", EVERY_DAY, ((time(0), time(8)),))
    assert day_span(cal, day, BERLIN) == timedelta(hours=hours)
    midnight = datetime.combine(day, time(0), tzinfo=BERLIN)
    assert cal.add(midnight, hours) == datetime.combine(day, time(8), tzinfo=BERLIN)


def test_lord_howe_moves_by_half_an_hour() -> None:
    cal = calendar("Australia/Lord_Howe", EVERY_DAY, ((time(0), time(8)),))
    assert day_span(cal, date(2026, 10, 4), LORD_HOWE) == timedelta(hours=7, minutes=30)
    assert day_span(cal, date(2026, 4, 5), LORD_HOWE) == timedelta(hours=8, minutes=30)


def test_a_bound_in_the_spring_gap_is_the_instant_of_the_jump() -> None:
    # 2026-03-08 in Chicago: 02:00 CST jumps to 03:00 CDT at 08:00 UTC.
    cal = calendar("America/Chicago", EVERY_DAY, ((time(2, 30), time(4)),))
    jump = datetime(2026, 3, 8, 8, tzinfo=UTC)
    assert list(cal.intervals(chicago(2026, 3, 8, 0), chicago(2026, 3, 9, 0))) == [
        (jump, chicago(2026, 3, 8, 4))
    ]
    assert cal.next_open(chicago(2026, 3, 8, 1)) == jump
    assert day_span(cal, date(2026, 3, 8), CHICAGO) == HOUR
    # A range wholly inside the gap does not happen that night.
    cal = calendar("America/Chicago", EVERY_DAY, ((time(2), time(2, 30)),))
    assert day_span(cal, date(2026, 3, 8), CHICAGO) == timedelta(0)
    assert day_span(cal, date(2026, 3, 9), CHICAGO) == timedelta(minutes=30)


def test_an_ambiguous_bound_is_its_first_occurrence() -> None:
    # 2026-11-01 in Chicago: 01:00-02:00 happens twice (CDT, then CST).
    cal = calendar("America/Chicago", EVERY_DAY, ((time(1, 30), time(3)),))
    first = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 CDT
    assert cal.next_open(chicago(2026, 11, 1, 0)) == first
    assert day_span(cal, date(2026, 11, 1), CHICAGO) == timedelta(hours=2, minutes=30)
    cal = calendar("America/Chicago", EVERY_DAY, ((time(1), time(1, 30)),))
    assert list(cal.intervals(chicago(2026, 11, 1, 0), chicago(2026, 11, 1, 4))) == [
        (datetime(2026, 11, 1, 6, tzinfo=UTC), first)
    ]
    # The second 01:15 (CST) is after the range: closed.
    assert not cal.is_open(chicago(2026, 11, 1, 1, 15).replace(fold=1))
    assert cal.is_open(chicago(2026, 11, 1, 1, 15))


# --- wall clock, errors, large spans -----------------------------------------------


def test_due_wall_is_plain_addition_of_real_time() -> None:
    cal = calendar()
    start = chicago(2026, 3, 7, 12)  # the day before spring-forward
    assert due(cal, start, timedelta(hours=24), "wall") == datetime(2026, 3, 8, 18, tzinfo=UTC)
    assert due(cal, start, timedelta(hours=24), "wall") == chicago(2026, 3, 8, 13)
    assert due(cal, start, HOUR, "wall").tzinfo is UTC
    assert due(cal, chicago(2026, 5, 15, 16), 2 * HOUR, "working") == chicago(2026, 5, 18, 9)
    with pytest.raises(ValueError, match="clock"):
        due(cal, start, HOUR, "lunar")  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    cal = calendar()
    naive = datetime(2026, 5, 15, 10)
    aware = chicago(2026, 5, 15, 10)
    for call in (
        lambda: cal.is_open(naive),
        lambda: cal.next_open(naive),
        lambda: cal.add(naive, 1),
        lambda: cal.between(naive, aware),
        lambda: cal.between(aware, naive),
        lambda: cal.intervals(aware, naive),
        lambda: due(cal, naive, HOUR, "wall"),
        lambda: due(cal, naive, HOUR, "working"),
    ):
        with pytest.raises(ValueError, match="timezone-aware"):
            call()


@pytest.mark.parametrize("hours", [-1, -0.001, timedelta(minutes=-1), math.nan, math.inf, 1e300])
def test_bad_amounts_are_refused(hours: float | timedelta) -> None:
    with pytest.raises(ValueError):
        calendar().add(chicago(2026, 5, 15, 10), hours)


def test_is_holiday_wants_a_date() -> None:
    with pytest.raises(TypeError):
        calendar().is_holiday(chicago(2026, 5, 15, 10))


def test_a_calendar_without_working_time_refuses_instead_of_looping() -> None:
    with pytest.raises(ValueError, match="no working hours"):
        calendar(days=())
    with pytest.raises(ValueError, match="no working hours"):
        calendar(ranges=())
    first = date(2026, 1, 1)
    every_day = tuple(first + timedelta(days=n) for n in range(4 * 366))
    cal = calendar(holidays=every_day)
    start = chicago(2026, 1, 1)
    with pytest.raises(ValueError, match="no working hours"):
        cal.add(start, 1)
    with pytest.raises(ValueError, match="no working hours"):
        cal.next_open(start)
    assert not cal.is_open(chicago(2026, 5, 15, 10))
    assert cal.between(start, chicago(2029, 1, 1)) == timedelta(0)
    # After the holidays run out, work resumes.
    assert cal.between(start, chicago(2031, 1, 1)) > timedelta(0)


def test_large_spans() -> None:
    cal = calendar(country="US")
    start = chicago(2026, 5, 15, 16)
    end = cal.add(start, 10_000)
    assert cal.between(start, end) == timedelta(hours=10_000)
    assert chicago(2031, 1, 1) < end < chicago(2031, 12, 31)
    five_years = cal.between(chicago(2026, 1, 1), chicago(2031, 1, 1))
    us = holidays.country_holidays("US", years=range(2025, 2032))
    days = [date(2026, 1, 1) + timedelta(days=n) for n in range(5 * 366)]
    working = [d for d in days if d.year < 2031 and d.weekday() < 5 and d not in us]
    assert five_years == len(working) * 8 * HOUR


# --- properties ------------------------------------------------------------------

ZONES: dict[str, tuple[date, ...]] = {
    "UTC": (date(2026, 6, 1),),
    "America/Chicago": (date(2026, 3, 8), date(2026, 11, 1)),
    "Europe/Berlin": (date(2026, 3, 29), date(2026, 10, 25)),
    "Australia/Lord_Howe": (date(2026, 4, 5), date(2026, 10, 4)),
}
# Clock times near the daylight-saving changes of the zones above, and a few plain ones.
AWKWARD_MINUTES = [0, 60, 90, 120, 135, 150, 180, 210, 480, 1020, 1320]

clock_minutes = st.one_of(st.sampled_from(AWKWARD_MINUTES), st.integers(0, 1439))


def clock(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


@st.composite
def calendars(draw: st.DrawFn) -> tuple[Calendar, datetime]:
    """A random calendar and a random UTC instant near one of its zone's DST changes."""
    zone = draw(st.sampled_from(sorted(ZONES)))
    days = draw(st.one_of(st.just(EVERY_DAY), st.sets(st.integers(0, 6), min_size=1).map(sorted)))
    count = draw(st.integers(1, 2))
    ranges = tuple((clock(draw(clock_minutes)), clock(draw(clock_minutes))) for _ in range(count))
    base = datetime.combine(draw(st.sampled_from(ZONES[zone])), time(0), tzinfo=UTC)
    instant = base + draw(st.integers(-3 * 1440, 1440)) * MINUTE
    holidays = draw(st.sets(st.integers(-3, 12), max_size=3))
    listed = tuple(sorted(instant.date() + timedelta(days=n) for n in holidays))
    return Calendar(HoursConfig(zone, tuple(days), ranges, listed)), instant


def reference(cal: Calendar, start: datetime, minutes: int) -> list[bool]:
    """Whether each minute from ``start`` (UTC, on a whole minute) is working time.

    Written from the documented definition, not from the implementation: a
    bound is the first instant the local clock shows that time or later, so
    an instant is working when the highest reading the local clock has shown
    so far lies inside a range of a working date. Exact on a minute grid when
    the ranges are whole minutes (every offset here is whole minutes too).
    """
    hours = cal.hours
    tz = hours.tz
    first = start.astimezone(tz).date() - timedelta(days=3)
    last = (start + minutes * MINUTE).astimezone(tz).date() + timedelta(days=1)
    windows: list[tuple[datetime, datetime]] = []  # naive local wall-clock ranges
    day = first
    while day <= last:
        if day.weekday() in hours.days and day not in hours.holidays:
            for begin, end in hours.ranges:
                end_day = day if end > begin else day + timedelta(days=1)
                windows.append((datetime.combine(day, begin), datetime.combine(end_day, end)))
        day += timedelta(days=1)
    highest = datetime.min
    # Two days of history are enough to know the highest reading at ``start``.
    u = start - timedelta(days=2)
    flags: list[bool] = []
    while u < start + minutes * MINUTE:
        highest = max(highest, u.astimezone(tz).replace(tzinfo=None))
        if u >= start:
            flags.append(any(lo <= highest < hi for lo, hi in windows))
        u += MINUTE
    return flags


def runs(start: datetime, flags: list[bool]) -> list[tuple[datetime, datetime]]:
    """Maximal runs of working minutes, as (start, end) instants."""
    found: list[tuple[datetime, datetime]] = []
    for index, working in enumerate(flags):
        if not working:
            continue
        at = start + index * MINUTE
        if found and found[-1][1] == at:
            found[-1] = (found[-1][0], at + MINUTE)
        else:
            found.append((at, at + MINUTE))
    return found


@settings(max_examples=200, deadline=None)
@given(calendars(), st.integers(0, 10 * 1440), st.data())
def test_agrees_with_a_minute_by_minute_count(
    scenario: tuple[Calendar, datetime], minutes: int, data: st.DataObject
) -> None:
    cal, a = scenario
    b = a + minutes * MINUTE
    flags = reference(cal, a, minutes)
    expected = runs(a, flags)
    assert list(cal.intervals(a, b)) == expected
    assert cal.between(a, b) == sum(flags) * MINUTE
    # is_open agrees at and just around every boundary.
    for begin, end in expected:
        assert cal.is_open(begin) and cal.is_open(end - TINY)
        assert begin == a or not cal.is_open(begin - TINY)
        assert end == b or not cal.is_open(end)
    if minutes:
        index = data.draw(st.integers(0, minutes - 1), label="minute")
        at = a + index * MINUTE
        assert cal.is_open(at) == flags[index]
        later = [i for i in range(index, minutes) if flags[i]]
        if later:
            assert cal.next_open(at) == a + later[0] * MINUTE
        if sum(flags):
            # The k-th working minute ends when k minutes of work have elapsed.
            k = data.draw(st.integers(1, sum(flags)), label="k")
            kth = [i for i, working in enumerate(flags) if working][k - 1]
            assert cal.add(a, k * MINUTE) == a + (kth + 1) * MINUTE


amounts = st.integers(0, 300 * 60).map(lambda m: m * MINUTE)
offsets = st.integers(-5 * 86400, 5 * 86400).map(lambda s: s * timedelta(seconds=1))


@settings(max_examples=200, deadline=None)
@given(calendars(), offsets, amounts)
def test_between_measures_what_add_added(
    scenario: tuple[Calendar, datetime], offset: timedelta, hours: timedelta
) -> None:
    cal, a = scenario
    a += offset
    t = cal.add(a, hours)
    assert t >= a and t.tzinfo is UTC
    assert cal.between(a, t) == hours
    # It lands inside a working interval or at the very end of one ...
    ends = [end for _begin, end in cal.intervals(t - timedelta(days=3), t + timedelta(days=3))]
    assert cal.is_open(t) or t in ends
    # ... and no earlier instant has seen that much working time.
    if hours:
        assert cal.between(a, t - TINY) < hours
    else:
        assert t == (a if cal.is_open(a) else cal.next_open(a))
        assert cal.is_open(t)


@settings(max_examples=200, deadline=None)
@given(calendars(), offsets, amounts, amounts)
def test_add_is_monotonic(
    scenario: tuple[Calendar, datetime], offset: timedelta, h1: timedelta, h2: timedelta
) -> None:
    cal, a = scenario
    a += offset
    h1, h2 = sorted((h1, h2))
    assert cal.add(a, h1) <= cal.add(a, h2)
    # A later start never finishes earlier.
    assert cal.add(a, h1) <= cal.add(a + abs(offset), h1)


@settings(max_examples=200, deadline=None)
@given(calendars(), offsets, offsets, offsets)
def test_between_is_additive_and_monotonic(
    scenario: tuple[Calendar, datetime], x: timedelta, y: timedelta, z: timedelta
) -> None:
    cal, base = scenario
    a, b, c = base + x, base + y, base + z
    # Signed working time is additive in any order, so in particular for a <= b <= c.
    assert cal.between(a, c) == cal.between(a, b) + cal.between(b, c)
    first, second = sorted((a, b))
    assert cal.between(first, c) >= cal.between(second, c)
    assert cal.between(a, b) == -cal.between(b, a)
    assert timedelta(0) <= cal.between(first, second) <= second - first


@settings(max_examples=200, deadline=None)
@given(calendars(), offsets)
def test_next_open_is_the_earliest_open_instant(
    scenario: tuple[Calendar, datetime], offset: timedelta
) -> None:
    cal, a = scenario
    a += offset
    t = cal.next_open(a)
    assert t >= a and cal.is_open(t)
    assert cal.between(a, t) == timedelta(0)
    if t > a:
        assert not cal.is_open(t - TINY)
