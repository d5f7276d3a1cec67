"""A stored ticket as the pure core sees it: the one ORM-to-view mapper.

The threading rules (:mod:`maild.core.conversation`) decide on
:class:`~maild.core.conversation.TicketView` values, never on ORM rows;
every look-up that hands a candidate ticket to them maps it here.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.conversation import TicketView
from maild.store.models import Participant, Ticket

__all__ = ["as_view", "ticket_view"]


def as_view(ticket: Ticket, members: Iterable[str]) -> TicketView:
    """``ticket`` with its participants' addresses ``members``, as the threading rules see it."""
    return TicketView(
        id=ticket.id,
        status=ticket.status,
        requester=ticket.requester,
        community=ticket.community,
        subject_key=ticket.subject_key,
        last_activity_at=ticket.last_activity_at,
        members=frozenset(members),
    )


async def ticket_view(session: AsyncSession, ticket: Ticket) -> TicketView:
    """:func:`as_view` of ``ticket`` with its participants read from the store."""
    members = await session.scalars(
        select(Participant.address).where(Participant.ticket_id == ticket.id)
    )
    return as_view(ticket, members.all())
