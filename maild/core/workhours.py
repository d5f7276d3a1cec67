"""The working-hours calendar of SPEC section 4: add, between, next opening.

Pure: no clock is read and nothing is fetched; the instants are passed in.
Every datetime argument must be timezone-aware (:class:`ValueError`
otherwise), and every datetime returned is aware and in UTC.

**Where working time is.** Working hours are defined in the calendar's local
time zone, per local date. A local date is a working date when its weekday is
one of ``days`` and it is not a holiday (a listed date or, with
``holiday_country``, a public holiday of that country and subdivision). Each
``(start, end)`` range of a working date is one working interval, from
``start`` on that date to ``end`` on the same date, or on the next date when
``end`` is at or before ``start`` (a night shift belongs to the date it starts
on: a night shift starting on a holiday or a weekend is skipped whole).

**Daylight saving.** A local bound such as "08:00 on 2026-03-29" becomes the
first instant at which the local clock shows that time or later:

- in the autumn overlap, where the clock shows a time twice, it is the first
  occurrence (``fold=0``);
- in the spring gap, where the clock never shows it, it is the instant of the
  jump (02:30 on a night the clock goes from 02:00 to 03:00 is the instant
  shown as 03:00). Python's own ``fold=0`` would map it as far past the jump
  as it lies past 02:00 (to 03:30), which could put a range's start after
  its end; ``_instant`` finds the jump instead.

Working time is the *real elapsed time* between those instants, so a range
00:00-08:00 holds 9 hours on a night the clocks go back and 7 on a night they
go forward (7.5 in Australia/Lord_Howe, whose clocks move by 30 minutes).

**Exact semantics.** Intervals are half-open, ``[start, end)``: the start of a
range is open, its end is not. :meth:`Calendar.between` measures working time
inside ``[a, b)``; :meth:`Calendar.add` returns the earliest instant ``t`` with
``between(start, t) == hours`` when ``hours`` is positive - which is inside a
working interval or exactly at the end of one (the moment the last working
minute completes, e.g. 17:00 rather than the next morning) - and for zero hours
``start`` itself if open, else the next opening. Hence, for ``h >= 0`` and
``a <= b <= c``: ``between(a, add(a, h)) == h``, ``add`` is monotonic in
``h``, and ``between(a, c) == between(a, b) + between(b, c)``.

Arithmetic walks forward one local day at a time (each day's intervals are
cached), so 10,000 working hours or five years cost a few thousand steps.
A calendar with no working time at all raises ``ValueError("no working hours
in the calendar")``: at construction when it has no days or no ranges, and from
:meth:`Calendar.add` and :meth:`Calendar.next_open` when roughly three years
ahead hold no working time (every day a holiday).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from maild.config import HoursConfig

__all__ = ["Calendar", "due"]

Interval = tuple[datetime, datetime]

_NO_HOURS = "no working hours in the calendar"
_ONE_DAY = timedelta(days=1)
# How many consecutive local days without working time add() and next_open()
# accept before giving up: a year of holidays is conceivable, three are a bug.
_SEARCH_DAYS = 3 * 366
_EPSILON = timedelta(microseconds=1)


class Calendar:
    """Working hours of one :class:`~maild.config.HoursConfig`.

    ``hours`` is the config it was built from. Raises :class:`ValueError`
    when the config has no working days or no ranges. Instances cache per-day
    results and the country's holidays per year; they never change once built
    and are safe to share.
    """

    def __init__(self, hours: HoursConfig) -> None:
        if not hours.days or not hours.ranges:
            raise ValueError(_NO_HOURS)
        self.hours = hours
        self._tz = hours.tz
        self._days = frozenset(hours.days)
        # Sorted by start, so each day's intervals come out in order.
        self._ranges = tuple(sorted(hours.ranges))
        self._listed = frozenset(hours.holidays)
        self._country_years: dict[int, frozenset[date]] = {}
        # A plain dict would grow with every day ever asked about.
        self._intervals_on = functools.lru_cache(maxsize=4096)(self._compute_intervals_on)

    @classmethod
    def from_config(cls, hours: HoursConfig) -> Calendar:
        """A calendar for ``hours``, shared with earlier calls for an equal config.

        Sharing keeps the per-day caches warm for callers (the scheduler) that
        would otherwise build a fresh calendar on every tick.
        """
        return _shared_calendar(hours) if cls is Calendar else cls(hours)

    # --- queries ---------------------------------------------------------

    def is_open(self, t: datetime) -> bool:
        """Whether instant ``t`` (aware) lies inside a working interval."""
        u = _utc(t)
        return next(self._stream(u, u + _EPSILON), None) is not None

    def next_open(self, t: datetime) -> datetime:
        """``t`` (in UTC) if it is open, else the start of the next working interval.

        Raises :class:`ValueError` when no working time follows within about
        three years.
        """
        u = _utc(t)
        # Without ``until`` the stream never ends: it raises when it runs dry.
        start, _end = next(self._stream(u, None))
        return max(start, u)

    def add(self, start: datetime, hours: float | timedelta) -> datetime:
        """The instant (UTC) at which ``hours`` of working time after ``start`` have elapsed.

        ``hours`` is a number of hours or a :class:`~datetime.timedelta`, not
        negative. For positive ``hours`` the result is the earliest ``t`` with
        ``between(start, t) == hours``: inside a working interval or at the end
        of one. For zero it is ``start`` when open, else :meth:`next_open`.
        Raises :class:`ValueError` for a negative or non-finite amount, a naive
        ``start``, or when the working time runs out (see the module doc).
        """
        u = _utc(start)
        remaining = _duration(hours)
        if not remaining:
            return self.next_open(u)
        for begin, end in self._stream(u, None):
            begin = max(begin, u)
            if remaining <= end - begin:
                return begin + remaining
            remaining -= end - begin
        raise AssertionError("unreachable: the stream raises when it runs dry")  # pragma: no cover

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Working time inside ``[a, b)``; ``-between(b, a)`` when ``b`` is before ``a``."""
        ua, ub = _utc(a), _utc(b)
        if ub < ua:
            return -self.between(ub, ua)
        return sum((end - begin for begin, end in self._clipped(ua, ub)), timedelta())

    def intervals(self, start: datetime, end: datetime) -> Iterator[Interval]:
        """The working intervals overlapping ``[start, end)``, clipped to it, in UTC.

        Intervals that touch (a night shift running into the next day's
        range, or ``00:00-24:00`` on consecutive days) come out merged, so
        no two yielded intervals touch. Empty when ``end <= start``.
        """
        # Checked here, not in a generator body, so a naive datetime fails at the call.
        return self._merged(_utc(start), _utc(end))

    def is_holiday(self, d: date) -> bool:
        """Whether local date ``d`` is a listed date or a public holiday of the country."""
        if isinstance(d, datetime):
            raise TypeError(f"expected a date, got the datetime {d!r}")
        if d in self._listed:
            return True
        country = self.hours.holiday_country
        if country is None:
            return False
        cached = self._country_years.get(d.year)
        if cached is None:
            cached = self._country_years[d.year] = self._load_holidays(country, d.year)
        return d in cached

    # --- machinery ---------------------------------------------------------

    def _merged(self, a: datetime, b: datetime) -> Iterator[Interval]:
        current: Interval | None = None
        for begin, end in self._clipped(a, b):
            if current is not None and begin == current[1]:
                current = (current[0], end)
                continue
            if current is not None:
                yield current
            current = (begin, end)
        if current is not None:
            yield current

    def _clipped(self, a: datetime, b: datetime) -> Iterator[Interval]:
        """Disjoint pieces of working time inside ``[a, b)`` (UTC), in order."""
        if a >= b:
            return
        for begin, end in self._stream(a, b):
            yield max(begin, a), min(end, b)

    def _stream(self, after: datetime, until: datetime | None) -> Iterator[Interval]:
        """Working intervals (UTC) that end after ``after``, in order and disjoint.

        Intervals may touch and are not clipped. With ``until``, stops before
        the first interval starting at or after it; without, goes on for ever
        and raises :class:`ValueError` after :data:`_SEARCH_DAYS` days without
        working time.
        """
        tz = self._tz
        # A night shift of the day before may still be running at ``after``.
        day = after.astimezone(tz).date() - _ONE_DAY
        # One day of slack: around a daylight-saving change at midnight the
        # next date's first range can start before ``until``'s local midnight.
        last_day = None if until is None else until.astimezone(tz).date() + _ONE_DAY
        last_end: datetime | None = None
        idle_days = 0
        while last_day is None or day <= last_day:
            worked = False
            for begin, end in self._intervals_on(day):
                # Ranges can overlap (a night shift into an early range, in a
                # config built by hand): trim so the pieces stay disjoint.
                if last_end is not None and begin < last_end:
                    begin = last_end
                if end <= begin:
                    continue
                last_end = end
                worked = True
                if until is not None and begin >= until:
                    return
                if end > after:
                    yield begin, end
            idle_days = 0 if worked else idle_days + 1
            if until is None and idle_days > _SEARCH_DAYS:
                raise ValueError(_NO_HOURS)
            day += _ONE_DAY

    def _compute_intervals_on(self, day: date) -> tuple[Interval, ...]:
        """The working intervals (UTC) of the ranges starting on local date ``day``."""
        if day.weekday() not in self._days or self.is_holiday(day):
            return ()
        intervals: list[Interval] = []
        for start, end in self._ranges:
            begin = self._instant(day, start)
            finish = self._instant(day if end > start else day + _ONE_DAY, end)
            # A range inside a spring-forward gap is empty that night.
            if finish > begin:
                intervals.append((begin, finish))
        return tuple(intervals)

    def _instant(self, day: date, clock: time) -> datetime:
        """The first instant (UTC) at which the local clock shows ``clock`` on ``day`` or later."""
        wall = datetime.combine(day, clock)
        # fold=0: the first occurrence of an ambiguous time, which is what we want.
        instant = wall.replace(tzinfo=self._tz).astimezone(UTC)
        if instant.astimezone(self._tz).replace(tzinfo=None) == wall:
            return instant
        # ``wall`` never happens (spring-forward gap). fold=0 maps it past the
        # jump with the old offset, fold=1 before it with the new one; the jump
        # lies between.
        other = wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC)
        return self._transition(min(instant, other), max(instant, other))

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The first instant, to the second, whose UTC offset is that of ``after``."""
        offset = after.astimezone(self._tz).utcoffset()
        low, high = math.floor(before.timestamp()), math.ceil(after.timestamp())
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self._tz).utcoffset() == offset:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high, UTC)

    def _load_holidays(self, country: str, year: int) -> frozenset[date]:
        """The public holidays of ``country`` (and the subdivision) in ``year``."""
        # Imported on first use: it takes ~50 ms and most calendars only list dates.
        import holidays

        # Neighbouring years too: a holiday's "observed" day can fall across
        # New Year (1 January on a Saturday is observed on 31 December).
        years = range(max(year - 1, 1), year + 2)
        try:
            found = holidays.country_holidays(
                country, subdiv=self.hours.holiday_subdivision, years=years
            )
        except NotImplementedError as exc:
            raise ValueError(f"unknown holiday region {country!r}: {exc}") from exc
        return frozenset(day for day in found if day.year == year)


@functools.lru_cache(maxsize=16)
def _shared_calendar(hours: HoursConfig) -> Calendar:
    return Calendar(hours)


def due(
    calendar: Calendar, start: datetime, target: timedelta, clock: Literal["working", "wall"]
) -> datetime:
    """When a target of ``target`` counted from ``start`` falls due (UTC).

    ``"working"``: ``calendar.add(start, target)``. ``"wall"``: plain
    addition of real elapsed time (done in UTC, so 24 hours across a
    daylight-saving change are 24 real hours, not the same local time the next
    day). Raises :class:`ValueError` for a naive ``start``, a negative target
    or an unknown clock.
    """
    if clock == "working":
        return calendar.add(start, target)
    if clock == "wall":
        return _utc(start) + _duration(target)
    raise ValueError(f'expected clock "working" or "wall", got {clock!r}')


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {t!r}")
    return t.astimezone(UTC)


def _duration(hours: float | timedelta) -> timedelta:
    if isinstance(hours, timedelta):
        delta = hours
    else:
        if not math.isfinite(hours):
            raise ValueError(f"expected a finite number of hours, got {hours!r}")
        try:
            delta = timedelta(hours=hours)
        except OverflowError as exc:
            raise ValueError(f"expected a smaller number of hours, got {hours!r}") from exc
    if delta < timedelta(0):
        raise ValueError(f"expected a non-negative amount of working time, got {hours!r}")
    return delta
