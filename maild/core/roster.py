"""Who is on duty: the rotating two-steward roster of SPEC section 5.

Pure: the instant is passed in. Periods are counted in whole staggers from the
roster's start date at midnight in the working-hours time zone, so a change
happens at local midnight whatever the daylight-saving offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from maild.config import Config, RosterConfig

__all__ = ["Duty", "duty_at", "on_duty"]


@dataclass(frozen=True, slots=True)
class Duty:
    """Stewards on duty at ``at`` and when the next change happens (aware datetimes)."""

    at: datetime
    on_duty: tuple[str, ...]
    next_change: datetime | None
    next_on_duty: tuple[str, ...]


def _period(roster: RosterConfig, day: date) -> int:
    return (day - roster.start).days // max(1, roster.stagger.days)


def _crew(roster: RosterConfig, period: int) -> tuple[str, ...]:
    order = roster.order
    size = max(1, min(len(order), round(roster.tenure / roster.stagger)))
    return tuple(order[(period + i) % len(order)] for i in range(size))


def duty_at(config: Config, at: datetime) -> Duty:
    """The duty at instant ``at`` (aware). Without a roster every steward is on duty."""
    roster = config.roster
    if roster is None or not roster.order:
        return Duty(at, tuple(s.name for s in config.stewards), None, ())
    tz = ZoneInfo(config.hours.timezone)
    local_day = at.astimezone(tz).date()
    period = _period(roster, local_day)
    step = max(1, roster.stagger.days)
    next_day = roster.start + timedelta(days=(period + 1) * step)
    next_change = datetime.combine(next_day, time(0), tzinfo=tz)
    return Duty(at, _crew(roster, period), next_change, _crew(roster, period + 1))


def on_duty(config: Config, at: datetime) -> tuple[str, ...]:
    """Names of the stewards on duty at ``at``."""
    return duty_at(config, at).on_duty
