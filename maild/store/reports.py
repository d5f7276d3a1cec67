"""The weekly report of a support rotation: ``maild stats``.

Counts and sums are asked of the database; only the resolved tickets of the
period are loaded to measure their working hours to resolution.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.config import Config
from maild.store.models import Event, Reminder, Ticket
from maild.store.queries import ACTIVE_STATUSES
from maild.workhours import Calendar

__all__ = ["stats", "week_start"]


def week_start(now: datetime, timezone: str) -> datetime:
    """Monday 00:00 of ``now``'s week in ``timezone``."""
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, time(0), tzinfo=tz)


def _month_start(now: datetime, timezone: str) -> datetime:
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    return datetime.combine(local.date().replace(day=1), time(0), tzinfo=tz)


async def _count(session: AsyncSession, *where: Any) -> int:
    value = await session.scalar(select(func.count()).select_from(Ticket).where(*where))
    return int(value or 0)


async def stats(
    session: AsyncSession,
    config: Config,
    now: datetime,
    *,
    since: datetime | None = None,
    older_than_days: int = 14,
) -> dict[str, Any]:
    """The report: opened/closed in the period and overall, time to resolution in
    working hours, aged open tickets, SLA breaches by type and budget per community."""
    start = since or week_start(now, config.hours.timezone)
    calendar = Calendar(config.hours)
    opened_week = await _count(session, Ticket.created_at >= start)
    closed_week = await _count(session, Ticket.closed_at.is_not(None), Ticket.closed_at >= start)
    opened_total = await _count(session)
    closed_total = await _count(session, Ticket.status == "closed")

    rows = (
        await session.execute(
            select(Ticket.created_at, Ticket.resolved_at, Ticket.closed_at).where(
                (Ticket.resolved_at.is_not(None)) | (Ticket.closed_at.is_not(None)),
                func.coalesce(Ticket.resolved_at, Ticket.closed_at) >= start,
            )
        )
    ).all()
    hours = []
    for created, resolved, closed in rows:
        end = resolved or closed
        if end is not None and end >= created:
            hours.append(calendar.between(created, end).total_seconds() / 3600)

    cutoff = now - timedelta(days=older_than_days)
    aged = [
        {"id": tid, "age_days": (now - created).days}
        for tid, created in (
            await session.execute(
                select(Ticket.id, Ticket.created_at)
                .where(Ticket.status.in_(ACTIVE_STATUSES), Ticket.created_at < cutoff)
                .order_by(Ticket.created_at)
                .limit(500)
            )
        ).all()
    ]

    breaches: dict[str, int] = defaultdict(int)
    for ticket_type, count in (
        await session.execute(
            select(Ticket.type, func.count())
            .select_from(Reminder)
            .join(Ticket, Ticket.id == Reminder.ticket_id)
            .where(Reminder.stage == "breach")
            .group_by(Ticket.type)
        )
    ).all():
        breaches[ticket_type or "untriaged"] += int(count)

    month = _month_start(now, config.hours.timezone)
    used: dict[str, float] = defaultdict(float)
    logged = cast(Event.new, Integer) - cast(func.coalesce(Event.old, "0"), Integer)
    for community, minutes in (
        await session.execute(
            select(Ticket.community, func.sum(logged))
            .select_from(Event)
            .join(Ticket, Ticket.id == Event.ticket_id)
            .where(
                Event.kind == "change",
                Event.field == "time_spent_minutes",
                Event.at >= month,
                (Ticket.type.is_(None)) | (Ticket.type != "incident"),
                Ticket.community.is_not(None),
            )
            .group_by(Ticket.community)
        )
    ).all():
        used[community or ""] += (minutes or 0) / 60
    budget = [
        {
            "community": c.name,
            "used_hours": round(used.get(c.name, 0.0), 2),
            "budget_hours": c.budget_hours_per_month,
        }
        for c in config.communities
    ]
    return {
        "since": start.astimezone(UTC).isoformat(),
        "opened_this_week": opened_week,
        "closed_this_week": closed_week,
        "opened_total": opened_total,
        "closed_total": closed_total,
        "mean_hours_to_resolution": round(statistics.fmean(hours), 2) if hours else None,
        "median_hours_to_resolution": round(statistics.median(hours), 2) if hours else None,
        "aged": aged,
        "sla_breaches": dict(breaches),
        "budget": budget,
    }
