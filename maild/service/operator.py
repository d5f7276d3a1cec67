"""The operator's commands: ``maild set``, ``resolve``, ``close``, ``reopen``,
``assign`` and ``note`` change a ticket as a steward's tags would, from the
command line and without a relay.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.config import Config
from maild.core.commands import Plan, plan
from maild.core.tags import parse_subject
from maild.core.workhours import Calendar
from maild.mail.render import Renderer
from maild.service.outcome import Outcome
from maild.service.outgoing import Outgoing
from maild.service.steward import Stewards
from maild.store.dues import refresh_dues
from maild.store.models import Ticket
from maild.store.timeline import record
from maild.store.views import as_state

__all__ = ["Operator"]


class Operator:
    """Applies an operator's tags to a ticket, each command in its own transaction."""

    def __init__(
        self,
        config: Config,
        sessions: async_sessionmaker[AsyncSession],
        renderer: Renderer | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.calendar = Calendar(config.hours)
        renderer = renderer or Renderer(config)
        self.stewards = Stewards(config, renderer, self.calendar, Outgoing(config, renderer))

    async def operate(
        self,
        ticket_id: int,
        tags: str,
        actor: str,
        now: datetime,
        *,
        note: str | None = None,
    ) -> tuple[Plan | None, list[str]]:
        """Apply ``tags`` (subject-tag syntax) to a ticket as the operator ``actor``.

        The same grammar, validation and effects as a steward's mail, without a
        relay. Returns (the plan applied, []) or (None, one line per bad tag).
        Raises LookupError if there is no such ticket.
        """
        async with self.sessions() as session, session.begin():
            ticket = await session.get(Ticket, ticket_id, with_for_update=True)
            if ticket is None:
                raise LookupError(f"no ticket #{ticket_id}")
            parsed = parse_subject(
                tags,
                stewards=[s.name for s in self.config.stewards],
                communities=[c.name for c in self.config.communities],
            )
            errors = [f"{e.tag}: {e.message}" for e in parsed.errors]
            canned = parsed.get("reply")
            if canned is not None:
                errors.append(
                    f"{canned.source}: a canned reply goes out with a steward's mail; "
                    "the command line relays nothing"
                )
            if parsed.subject.strip():
                errors.append(f"not a tag: {parsed.subject.strip()!r}")
            if errors:
                return None, errors
            steward = self.config.steward_by_name(actor)
            planned = plan(
                as_state(ticket), parsed, steward.name if steward else actor, self.config
            )
            if note:
                record(session, ticket.id, now, "note", actor, text=note)
            outcome = Outcome(f"operator:{actor}", None, ticket.id, "appended", "operator command")
            before = ticket.status
            await self.stewards.carry_out(session, ticket, planned, actor, steward, now, outcome)
            await self.stewards.postmortem_mail(session, ticket, before, now, outcome)
            ticket.updated_at = now
            await refresh_dues(session, ticket, self.config, self.calendar)
            return planned, []
