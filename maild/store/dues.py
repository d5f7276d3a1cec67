"""Keep a ticket's stored due times in step with its state.

Called in the same transaction as every change to a ticket, so the indexed
``next_action_at`` always tells the scheduler when to look at it next.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.config import Config
from maild.core.lifecycle import Dues, compute_dues
from maild.core.workhours import Calendar
from maild.store.models import Reminder, Ticket
from maild.store.views import clocked

__all__ = ["refresh_dues", "reminders_sent"]

# built once: a statement built per call costs more than SQLite takes to run it
_REMINDERS = select(Reminder.kind, Reminder.stage).where(
    Reminder.ticket_id == bindparam("ticket_id")
)


async def reminders_sent(session: AsyncSession, ticket_id: int) -> frozenset[tuple[str, str]]:
    """The (kind, stage) of every reminder recorded for the ticket.

    Reminder rows added in this session must have been flushed: the look-up
    does not autoflush, so the mail's other pending rows go in one flush at
    commit instead of one more here.
    """
    with session.no_autoflush:
        rows = await session.execute(_REMINDERS, {"ticket_id": ticket_id})
    return frozenset((kind, stage) for kind, stage in rows.all())


async def refresh_dues(
    session: AsyncSession,
    ticket: Ticket,
    config: Config,
    calendar: Calendar,
    sent: Collection[tuple[str, str]] | None = None,
) -> Dues:
    """Recompute and store ``ticket``'s due times; returns them.

    ``sent``: the reminders recorded for it (see :func:`reminders_sent`), when
    the caller knows them; otherwise they are looked up.
    """
    if sent is None:
        sent = await reminders_sent(session, ticket.id)
    dues = compute_dues(clocked(ticket), config, calendar, frozenset(sent))
    loaded = ticket.__dict__
    for name, value in (
        ("triage_due_at", dues.triage_due_at),
        ("response_due_at", dues.response_due_at),
        ("close_due_at", dues.close_due_at),
        ("next_update_at", dues.next_update_at),
        ("next_due_kind", dues.next_due_kind),
        ("next_due_at", dues.next_due_at),
        ("next_action_at", dues.next_action_at),
    ):
        # a field set to the value it holds changes nothing: the ORM's set is not
        # free, and a ticket's dues are refreshed several times in a transaction
        if name not in loaded or loaded[name] != value:
            setattr(ticket, name, value)
    return dues
