"""Write what the pure rules decided back onto a stored ticket.

:func:`maild.store.views.as_state` reads the ticket into a plain
:class:`~maild.core.commands.TicketState`; :mod:`maild.core.commands` works
out the result (an :class:`~maild.core.commands.Applied`) and :func:`write`
puts it on the row. :func:`apply_changes` and :func:`apply_event` are the two
round trips the timeline writer uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from maild.core import lifecycle
from maild.core.commands import Applied, Change, apply, transition
from maild.store.models import Ticket
from maild.store.views import as_state

__all__ = ["apply_changes", "apply_event", "write"]


def write(ticket: Ticket, applied: Applied) -> None:
    """Put ``applied.fields`` on the row (the JSON columns want lists)."""
    for name, value in applied.fields.items():
        setattr(ticket, name, list(value) if isinstance(value, tuple) else value)


def apply_changes(ticket: Ticket, changes: Sequence[Change], now: datetime) -> Applied:
    """Write planned changes onto ``ticket`` (:func:`maild.core.commands.apply`)."""
    applied = apply(as_state(ticket), changes, now)
    write(ticket, applied)
    return applied


def apply_event(ticket: Ticket, event: lifecycle.Event, now: datetime) -> Applied:
    """Write what a lifecycle event does onto ``ticket`` (:func:`.commands.transition`)."""
    applied = transition(as_state(ticket), event, now)
    write(ticket, applied)
    return applied
