"""A ticket's timeline: every :class:`~maild.store.models.Event` row is written here.

Whatever happens to a ticket (a mail received or sent, a note, a field
changed) is one row, added to the caller's session so it commits with the
change it records. :func:`set_fields` is how a field changes: the change and
its row together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.commands import Change, apply
from maild.store.models import Event, Participant, Ticket

__all__ = ["EventKind", "record", "set_fields"]

EventKind = Literal["received", "sent", "note", "change"]


def record(
    session: AsyncSession,
    ticket_id: int,
    at: datetime,
    kind: EventKind,
    actor: str = "maild",
    *,
    text: str | None = None,
    message_pk: int | None = None,
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
) -> Event:
    """Add one row to ticket ``ticket_id``'s timeline (a change names its ``field``)."""
    event = Event(
        ticket_id=ticket_id,
        at=at,
        kind=kind,
        actor=actor,
        message_pk=message_pk,
        field=field,
        old=old,
        new=new,
        text=text,
    )
    session.add(event)
    return event


def set_fields(
    session: AsyncSession,
    ticket: Ticket,
    changes: Sequence[Change],
    actor: str,
    now: datetime,
) -> None:
    """Apply field changes and record each on the timeline."""
    for change in changes:
        record(
            session,
            ticket.id,
            now,
            "change",
            actor,
            field=change.field,
            old=change.old,
            new=change.new,
        )
    before = set(ticket.cc)
    apply(ticket, changes, now)
    for addr in set(ticket.cc) - before:
        session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))
