"""A ticket as JSON-ready data: the one shape of ``queue --json`` and ``show --json``.

:func:`ticket_dict` takes a ticket's values in :data:`TICKET_FIELDS` order,
either as Python values (an ORM row through :func:`ticket_values`) or as the
database's own text (a raw SQLite row: dates as ``YYYY-MM-DD HH:MM:SS.ffffff``
in UTC, JSON lists as text), so SQLAlchemy's queue and the CLI's SQLite fast
path (``maild.store.sqlite_read``) print the same bytes. This module imports
neither SQLAlchemy nor the models: ``maild queue`` uses it without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from maild.core.vocabulary import ACTIVE_STATUSES, PRIORITY_RANK

__all__ = [
    "ACTIVE_STATUSES",
    "PRIORITY_RANK",
    "QueuePage",
    "TICKET_FIELDS",
    "iso",
    "json_list",
    "stored_text",
    "ticket_dict",
    "ticket_dicts",
    "ticket_values",
    "utc_text",
]


class QueuePage(NamedTuple):
    """The head of the queue, most urgent first, and how many tickets matched in all.

    ``total`` is ``len(tickets)`` unless a limit left tickets out.
    """

    tickets: list[dict[str, Any]]
    total: int


# The ticket columns a ticket's JSON is made of, in the order ticket_dict reads them.
TICKET_FIELDS = (
    "id",
    "subject",
    "status",
    "type",
    "priority",
    "community",
    "requester",
    "cc",
    "assignee",
    "incident_commander",
    "links",
    "time_spent_minutes",
    "created_at",
    "updated_at",
    "message_count",
    "next_due_kind",
    "next_due_at",
    "follow_up_of",
)


def iso(value: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 (None stays None)."""
    return value.isoformat() if value is not None else None


def stored_text(value: datetime) -> str:
    """An aware datetime as SQLAlchemy stores it in SQLite: naive UTC, microseconds."""
    at = value.astimezone(UTC)
    return (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d} "
        f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}"
    )


def utc_text(value: Any) -> str | None:
    """A stored UTC time (the database's text, or a datetime) as ISO 8601 with +00:00."""
    if value is None:
        return None
    if type(value) is str:
        # "2026-11-25 15:00:00.000000": isoformat() leaves out zero microseconds
        text = value[:-7] if value.endswith(".000000") else value
        return text.replace(" ", "T", 1) + "+00:00"
    if isinstance(value, datetime):
        at = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return at.isoformat()
    return utc_text(str(value))


def json_list(value: Any) -> list[Any]:
    """A stored JSON list (text, or already a list) as a new list; None is empty."""
    if value is None or value == "[]":
        return []
    if isinstance(value, list):
        return list(value)
    loaded = json.loads(value)
    return list(loaded) if isinstance(loaded, list) else []


def ticket_values(ticket: Any) -> tuple[Any, ...]:
    """The :data:`TICKET_FIELDS` of an object with those attributes (an ORM ``Ticket``)."""
    return tuple(getattr(ticket, name) for name in TICKET_FIELDS)


def ticket_dict(row: Sequence[Any] | Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A ticket in the ``queue --json`` shape (SPEC section 8) from its values.

    ``row`` holds :data:`TICKET_FIELDS` in that order (a tuple or a database
    row, read by position: ten times faster than by name at 10,000 tickets),
    or is a mapping with those keys. ``next_due.breached`` is whether the due
    time is at or before ``now``.
    """
    return ticket_dicts((row,), now)[0]


def ticket_dicts(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """:func:`ticket_dict` of each row: the queue's 10,000 tickets in one call."""
    # "breached" compares the stored text with now's (fixed width: text order
    # is time order)
    stamp = stored_text(now)
    out = []
    for row in rows:
        if type(row) is not tuple and isinstance(row, Mapping):  # an ABC check costs 0.4 µs
            row = tuple(row[name] for name in TICKET_FIELDS)
        (tid, subject, status, kind, priority, community, requester, cc, assignee, ic, links,
         minutes, created, updated, count, due_kind, due_at, follow_up) = row  # fmt: skip
        next_due = None
        if due_at is not None and due_kind is not None:
            if isinstance(due_at, str) and len(due_at) == _STORED_WIDTH:
                breached = due_at <= stamp
            elif isinstance(due_at, datetime):
                breached = (due_at if due_at.tzinfo else due_at.replace(tzinfo=UTC)) <= now
            else:
                breached = datetime.fromisoformat(str(utc_text(due_at))) <= now
            next_due = {"kind": due_kind, "at": utc_text(due_at), "breached": breached}
        out.append(
            {
                "id": tid,
                "subject": subject,
                "status": status,
                "type": kind,
                "priority": priority,
                "community": community,
                "requester": requester,
                "cc": [] if cc is None or cc == "[]" else json_list(cc),
                "assignee": assignee,
                "incident_commander": ic,
                "links": [] if links is None or links == "[]" else json_list(links),
                "time_spent_minutes": minutes,
                "created_at": utc_text(created),
                "updated_at": utc_text(updated),
                "message_count": count,
                "next_due": next_due,
                "follow_up_of": follow_up,
            }
        )
    return out


# "2026-11-25 15:00:00.000000": a time as SQLAlchemy stores it in SQLite
_STORED_WIDTH = 26
