"""A ticket's timeline: every :class:`~maild.store.models.Event` row is written here.

Whatever happens to a ticket (a mail received or sent, a note, a field
changed) is one row, added to the caller's session so it commits with the
change it records. :func:`set_fields` is how a field changes: the change and
its row together; :func:`move` is how a lifecycle event (a reply, a relay,
the auto-close) changes the status, by ``maild.core.lifecycle.TRANSITIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from maild.core import lifecycle
from maild.core.commands import Change
from maild.store.batch import Mail, keep_for_bulk
from maild.store.models import Event, Message, Participant, Ticket
from maild.store.ticketstate import apply_changes, apply_event

__all__ = ["EventKind", "move", "record", "record_changes", "set_fields"]

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
    message: Mail | None = None,
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
) -> Event | None:
    """Add one row to ticket ``ticket_id``'s timeline (a change names its ``field``).

    ``message``: the message the row is about, when it may not be flushed yet
    (instead of its ``message_pk``): the row gets its id at the flush (a
    :class:`~maild.store.batch.SentMail` only in a session that writes later). Returns
    the row, or None when the session keeps its rows as values to write them in
    bulk (:func:`maild.store.batch.write_later`).
    """
    values = {
        "ticket_id": ticket_id,
        "at": at,
        "kind": kind,
        "actor": actor,
        "message_pk": message_pk,
        "field": field,
        "old": old,
        "new": new,
        "text": text,
    }
    if keep_for_bulk(session, Event, values, message):
        return None
    event = Event(**values)
    if isinstance(message, Message):
        event.message = message
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
    record_changes(session, ticket.id, changes, actor, now)
    before = set(ticket.cc)
    apply_changes(ticket, changes, now)
    for addr in set(ticket.cc) - before:
        session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))


def move(
    session: AsyncSession, ticket: Ticket, event: lifecycle.Event, actor: str, now: datetime
) -> str | None:
    """Apply a lifecycle event (a row of ``lifecycle.TRANSITIONS``) and record the status
    change on the timeline; the new status, or None if the status did not move."""
    applied = apply_event(ticket, event, now)
    record_changes(session, ticket.id, applied.changes, actor, now)
    return applied.state.status if applied.changes else None


def record_changes(
    session: AsyncSession, ticket_id: int, changes: Sequence[Change], actor: str, now: datetime
) -> None:
    """One "change" row on the timeline for each changed field."""
    for change in changes:
        record(
            session,
            ticket_id,
            now,
            "change",
            actor,
            field=change.field,
            old=change.old,
            new=change.new,
        )
