"""The one adapter between a stored ticket and the pure rules that change it.

:func:`snapshot` reads the fields :mod:`maild.core.commands` and
:mod:`maild.core.lifecycle` need into a plain :class:`TicketState`;
:func:`write` puts what they decided (an :class:`Applied`) back on the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from maild.core import lifecycle
from maild.core.commands import Applied, Change, TicketState, apply, transition
from maild.store.models import Ticket

__all__ = ["apply_changes", "apply_event", "snapshot", "write"]


def snapshot(ticket: Ticket) -> TicketState:
    """The plain values of ``ticket`` that commands and the lifecycle read."""
    return TicketState(
        status=ticket.status,
        type=ticket.type,
        priority=ticket.priority,
        community=ticket.community,
        requester=ticket.requester,
        cc=tuple(ticket.cc),
        assignee=ticket.assignee,
        incident_commander=ticket.incident_commander,
        links=tuple(ticket.links),
        time_spent_minutes=ticket.time_spent_minutes,
        update_every_minutes=ticket.update_every_minutes,
        triaged_at=ticket.triaged_at,
        first_response_at=ticket.first_response_at,
        resolved_at=ticket.resolved_at,
        closed_at=ticket.closed_at,
        last_update_at=ticket.last_update_at,
    )


def write(ticket: Ticket, applied: Applied) -> None:
    """Put ``applied.fields`` on the row (the JSON columns want lists)."""
    for name, value in applied.fields.items():
        setattr(ticket, name, list(value) if isinstance(value, tuple) else value)


def apply_changes(ticket: Ticket, changes: Sequence[Change], now: datetime) -> Applied:
    """Write planned changes onto ``ticket`` (:func:`maild.core.commands.apply`)."""
    applied = apply(snapshot(ticket), changes, now)
    write(ticket, applied)
    return applied


def apply_event(ticket: Ticket, event: lifecycle.Event, now: datetime) -> Applied:
    """Write what a lifecycle event does onto ``ticket`` (:func:`.commands.transition`)."""
    applied = transition(snapshot(ticket), event, now)
    write(ticket, applied)
    return applied
