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
from maild.core.workhours import Calendar
from maild.mail.render import support_context
from maild.store.models import Event, Reminder, Ticket
from maild.store.queries import ACTIVE_STATUSES

__all__ = [
    "budget_threshold",
    "budget_use",
    "postmortem",
    "postmortem_context",
    "stats",
    "week_incidents",
    "week_start",
    "weekly_report",
    "weekly_slot",
]


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

    budget = await budget_use(session, config, now)
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


async def budget_use(session: AsyncSession, config: Config, now: datetime) -> list[dict[str, Any]]:
    """Each community's logged hours this month (non-incident tickets) against its budget.

    ``percent_used`` is None without a budget; ``warning`` is ``"80%"`` or
    ``"100%"`` once that much of the budget is used, else None.
    """
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
    rows = []
    for c in config.communities:
        hours = used.get(c.name, 0.0)
        budget = c.budget_hours_per_month
        percent = round(100 * hours / budget, 1) if budget else None
        rows.append(
            {
                "community": c.name,
                "used_hours": round(hours, 2),
                "budget_hours": budget,
                "percent_used": percent,
                "warning": budget_threshold(hours, budget),
            }
        )
    return rows


def budget_threshold(used_hours: float, budget_hours: float | None) -> str | None:
    """The highest warning threshold ``used_hours`` has reached: "100%", "80%" or None."""
    if not budget_hours:
        return None
    for percent in BUDGET_THRESHOLDS[::-1]:
        if used_hours * 100 >= budget_hours * percent:
            return f"{percent}%"
    return None


BUDGET_THRESHOLDS = (80, 100)


def month_key(now: datetime, timezone: str) -> str:
    """The budget month of ``now`` in ``timezone``, as YYYY-MM."""
    return _month_start(now, timezone).strftime("%Y-%m")


# -- post-mortems ---------------------------------------------------------------


def _span(calendar: Calendar, start: datetime, end: datetime | None) -> dict[str, float] | None:
    if end is None or end < start:
        return None
    return {
        "wall_hours": round((end - start).total_seconds() / 3600, 2),
        "working_hours": round(calendar.between(start, end).total_seconds() / 3600, 2),
    }


def _one_line(text: str | None, width: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def timeline_summary(item: dict[str, Any]) -> str:
    """One line for a timeline item of ``ticket_detail``: what happened, by whom."""
    kind = item["kind"]
    if "message_id" in item:
        subject = _one_line(item.get("subject"), 100)
        if kind == "sent":
            to = ", ".join(item.get("to") or [])
            return f"sent {item.get('template') or 'mail'} to {to}: {subject}"
        who = item.get("from") or item["actor"]
        if kind == "note":
            return f"internal note by mail from {who}: {subject}"
        return f"received from {who}: {subject}"
    if kind == "change":
        old = _one_line(item.get("old") or "-", 60)
        new = _one_line(item.get("new") or "-", 60)
        return f"{item['actor']} changed {item.get('field')}: {old} -> {new}"
    return f"note by {item['actor']}: {_one_line(item.get('text'))}"


async def postmortem(
    session: AsyncSession, config: Config, ticket_id: int, now: datetime
) -> dict[str, Any] | None:
    """What ``maild postmortem`` shows: the facts, the times, the timeline; None if no ticket."""
    from maild.store.queries import iso, ticket_detail

    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    detail = await ticket_detail(session, ticket_id, now)
    if detail is None:
        return None
    calendar = Calendar(config.hours)
    resolved = ticket.resolved_at or ticket.closed_at
    timeline = [
        {
            "at": item["at"],
            "kind": item["kind"],
            "actor": item["actor"],
            "summary": timeline_summary(item),
        }
        for item in detail["timeline"]
    ]
    return {
        "ticket": {
            key: detail[key]
            for key in (
                "id",
                "subject",
                "type",
                "status",
                "priority",
                "community",
                "requester",
                "cc",
                "assignee",
                "incident_commander",
                "links",
                "time_spent_minutes",
                "created_at",
            )
        }  # fmt: skip
        | {
            "first_response_at": iso(ticket.first_response_at),
            "resolved_at": iso(resolved),
        },
        "first_response": _span(calendar, ticket.created_at, ticket.first_response_at),
        "resolution": _span(calendar, ticket.created_at, resolved),
        "timeline": timeline,
        "went_well": [],
        "went_wrong": [],
        "action_items": [],
    }


def local_time(value: str | None, timezone: str) -> str:
    """An ISO time as the stewards read it, in the working-hours zone."""
    if not value:
        return "-"
    at = datetime.fromisoformat(value).astimezone(ZoneInfo(timezone))
    return at.strftime("%a %Y-%m-%d %H:%M %Z")


def postmortem_context(config: Config, data: dict[str, Any]) -> dict[str, Any]:
    """The ``postmortem`` template's context: the data with times in local time."""
    tz = config.hours.timezone
    ticket = data["ticket"]
    support = config.support
    return {
        "support": support_context(config),
        "tag": f"[{support.tag} #{ticket['id']}]",
        "ticket": ticket,
        "pm": {
            **data,
            "opened": local_time(ticket["created_at"], tz),
            "first_response_local": local_time(ticket["first_response_at"], tz),
            "resolved_local": local_time(ticket["resolved_at"], tz),
            "timeline": [
                {**item, "local": local_time(item["at"], tz)} for item in data["timeline"]
            ],
        },
    }


# -- the weekly report ---------------------------------------------------------------


def weekly_slot(now: datetime, weekday: int, at: time, timezone: str) -> datetime:
    """The latest weekly report time at or before ``now``: ``weekday`` (0 = Monday)
    at local time ``at`` in ``timezone``, whatever the daylight-saving offset."""
    tz = ZoneInfo(timezone)
    local = now.astimezone(tz)
    day = local.date() - timedelta(days=(local.weekday() - weekday) % 7)
    slot = datetime.combine(day, at, tzinfo=tz)
    if slot > now:
        slot = datetime.combine(day - timedelta(days=7), at, tzinfo=tz)
    return slot


_POSTMORTEM_WORDS = ("postmortem", "post-mortem", "post_mortem")


async def week_incidents(
    session: AsyncSession, config: Config, since: datetime
) -> list[dict[str, Any]]:
    """Incidents opened or resolved since ``since``, and whether each has a post-mortem:
    its outline was mailed, or a link to one (a URL naming a post-mortem) is attached."""
    from maild.store.models import Message

    tickets = (
        await session.scalars(
            select(Ticket)
            .where(
                Ticket.type == "incident",
                (Ticket.created_at >= since)
                | (func.coalesce(Ticket.resolved_at, Ticket.closed_at) >= since)
                | Ticket.status.in_(ACTIVE_STATUSES),
            )
            .order_by(Ticket.id)
            .limit(200)
        )
    ).all()
    mailed = set(
        (
            await session.scalars(
                select(Message.ticket_id).where(
                    Message.template == "postmortem",
                    Message.ticket_id.in_([t.id for t in tickets]),
                )
            )
        ).all()
    )
    tz = config.hours.timezone
    return [
        {
            "id": t.id,
            "tag": f"[{config.support.tag} #{t.id}]",
            "subject": t.subject,
            "status": t.status,
            "opened": local_time(t.created_at.isoformat(), tz),
            "incident_commander": t.incident_commander,
            "postmortem": t.id in mailed
            or any(w in link.lower() for link in t.links or [] for w in _POSTMORTEM_WORDS),
        }
        for t in tickets
    ]


async def weekly_report(
    session: AsyncSession, config: Config, now: datetime, slot: datetime
) -> dict[str, Any]:
    """The ``weekly_report`` template's ``report``: the week before ``slot``."""
    since = slot - timedelta(days=7)
    older_than = 14
    tz = config.hours.timezone
    return {
        "since": local_time(since.isoformat(), tz),
        "until": local_time(slot.isoformat(), tz),
        "older_than": older_than,
        "stats": await stats(session, config, now, since=since, older_than_days=older_than),
        "incidents": await week_incidents(session, config, since),
    }
