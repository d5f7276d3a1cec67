"""A stored ticket as the pure core sees it: the one ORM-to-view mapper.

The threading rules (:mod:`maild.core.conversation`) decide on
:class:`~maild.core.conversation.TicketView` values, never on ORM rows;
every look-up that hands a candidate ticket to them maps it here. Commands
and the lifecycle (:mod:`maild.core.commands`) read a
:class:`~maild.core.commands.TicketState`, mapped here too by :func:`as_state`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.core.commands import TicketState
from maild.core.conversation import TicketView
from maild.core.lifecycle import Clocked
from maild.store.models import Participant, Ticket

__all__ = ["as_state", "as_view", "clocked", "ticket_view", "ticket_views"]


# built once: a statement built per call costs more than SQLite takes to run it
_MEMBERS = select(Participant.ticket_id, Participant.address).where(
    Participant.ticket_id.in_(bindparam("ids", expanding=True))
)


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


async def ticket_views(session: AsyncSession, tickets: Sequence[Ticket]) -> dict[int, TicketView]:
    """:func:`as_view` of each of ``tickets`` by id, their participants read in one look-up."""
    members: dict[int, list[str]] = {t.id: [] for t in tickets}
    if members:
        rows = await session.execute(_MEMBERS, {"ids": sorted(members)})
        for ticket_id, address in rows.all():
            members[ticket_id].append(address)
    return {t.id: as_view(t, members[t.id]) for t in tickets}


def as_state(ticket: Ticket) -> TicketState:
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


def clocked(ticket: Ticket) -> Clocked:
    """The fields of ``ticket`` the SLA clock reads (``lifecycle.compute_dues``)."""
    return Clocked(
        status=ticket.status,
        type=ticket.type,
        created_at=ticket.created_at,
        triaged_at=ticket.triaged_at,
        first_response_at=ticket.first_response_at,
        resolved_at=ticket.resolved_at,
        update_every_minutes=ticket.update_every_minutes,
        last_update_at=ticket.last_update_at,
    )
