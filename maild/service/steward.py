"""A steward's mail: its tags checked and applied (or held until confirmed),
relayed to the requester, answered when something is wrong (SPEC 3, 11).

:class:`StewardMail` reads the mail; :class:`Stewards` carries it out, and
carries out the operator's commands the same way (:meth:`Stewards.carry_out`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from maild.config import Config, Steward
from maild.core import policy
from maild.core.classify import Classification
from maild.core.commands import Plan, plan
from maild.core.inbound import InboundMail, parse_mail
from maild.core.roster import on_duty
from maild.core.tags import ACCEPTED, ParsedSubject, parse_subject
from maild.core.workhours import Calendar
from maild.mail import authn
from maild.mail.render import Renderer, TemplateError
from maild.service.outcome import Outcome
from maild.service.outgoing import Outgoing, forwarded
from maild.store.dues import refresh_dues
from maild.store.models import HeldCommand, Message, Participant, Ticket
from maild.store.reports import postmortem, postmortem_context
from maild.store.timeline import move, record, set_fields
from maild.store.views import as_state

__all__ = ["StewardMail", "Stewards"]


@dataclass(frozen=True, slots=True)
class StewardMail:
    """A steward's mail: its parsed tags and whether the sender is vouched for."""

    steward: Steward
    parsed: ParsedSubject
    authenticated: bool
    findings: tuple[str, ...]
    action: policy.StewardAction
    oversize: bool = False

    @property
    def confirm(self) -> str | None:
        """The token of a ``[confirm=TOKEN]`` tag, if the mail carries one."""
        cmd = self.parsed.get("confirm")
        return cmd.value if cmd is not None else None

    @property
    def is_note(self) -> bool:
        return (
            self.oversize
            or self.action != "apply"
            or self.confirm is not None
            or bool(self.parsed.errors)
            or self.parsed.has("note")
        )

    @classmethod
    def read(
        cls,
        config: Config,
        mail: InboundMail,
        classification: Classification,
        ticket: Ticket | None,
        verdict: authn.Verdict | None,
        oversize: bool = False,
        renderer: Renderer | None = None,
    ) -> StewardMail | None:
        """None unless a steward wrote it; ``renderer``: whose canned replies it may name."""
        steward = classification.steward
        if steward is None or classification.automated:
            return None
        # read from the template folders: only for a steward's mail
        replies = renderer.reply_names() if renderer is not None else None
        parsed = _steward_tags(
            config, mail.subject, ticket.subject if ticket is not None else "", replies
        )
        authenticated = verdict is not None and verdict.authenticated
        action = policy.steward_action(
            authenticated=authenticated,
            require_authenticated=config.commands.require_authenticated,
            has_commands=any(c.key not in ("note", "confirm") for c in parsed.commands),
            relays=not parsed.has("note") and not parsed.has("silent"),
        )
        findings = verdict.findings if verdict is not None else ()
        return cls(steward, parsed, authenticated, findings, action, oversize)


class Stewards:
    """Carries out stewards' mail and operators' commands; shares the pipeline's config,
    templates, calendar and outgoing mail."""

    def __init__(
        self, config: Config, renderer: Renderer, calendar: Calendar, outgoing: Outgoing
    ) -> None:
        self.config = config
        self.renderer = renderer
        self.calendar = calendar
        self.outgoing = outgoing

    def reconfigure(self, config: Config, renderer: Renderer, calendar: Calendar) -> None:
        """Take a reloaded config, its checked templates and its working hours."""
        self.config = config
        self.renderer = renderer
        self.calendar = calendar

    async def handle(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        sm: StewardMail,
        outcome: Outcome,
        now: datetime,
        oversize: int = 0,
    ) -> None:
        """A steward wrote: check, apply the tags, relay, answer errors.

        Only a mail that is authenticated (or from a lab that does not require
        it) applies at once; any other is held until its steward confirms it
        with the token maild mails to the steward's own address (SPEC 11).
        """
        ctx = self.outgoing.context(ticket, mail)
        sender = mail.from_addr or sm.steward.addresses[0]
        if oversize:
            # only the headers were kept: relaying would send an empty reply
            outcome.reason += "; too large: kept as a note, nothing applied or relayed"
            ctx.update(self.outgoing.size_context(oversize))
            await self.outgoing.answer(
                session, ticket, "too_large", ctx, sender, message, now, outcome
            )
            return
        if sm.confirm is not None:
            await self._confirm(session, ticket, mail, message, sm, outcome, now)
            return
        if sm.parsed.errors:
            outcome.reason += "; bad tags: nothing applied, kept as a note"
            ctx.update(errors=sm.parsed.errors, accepted=list(ACCEPTED.values()))
            await self.outgoing.answer(
                session, ticket, "command_error", ctx, sender, message, now, outcome
            )
            return
        planned = plan(as_state(ticket), sm.parsed, sm.steward.name, self.config)
        if planned.errors:
            message.is_note = True
            outcome.reason += "; a command cannot be carried out: nothing applied, kept as a note"
            errors = [_PlanError(*e.split(": ", 1)) for e in planned.errors]
            ctx.update(errors=errors, accepted=list(ACCEPTED.values()))
            await self.outgoing.answer(
                session, ticket, "command_error", ctx, sender, message, now, outcome
            )
            return
        if planned.canned and not planned.note and not planned.silent:
            try:  # a broken override is a bad tag, not a lost mail
                self.renderer.canned(planned.canned, self._canned_context(ticket, sm.steward, now))
            except TemplateError as exc:
                message.is_note = True
                outcome.reason += "; the canned reply failed: nothing applied or relayed"
                bad = [_PlanError(f"[reply={planned.canned}]", str(exc))]
                ctx.update(errors=bad, accepted=list(ACCEPTED.values()))
                await self.outgoing.answer(
                    session, ticket, "command_error", ctx, sender, message, now, outcome
                )
                return
        if sm.action == "hold":
            await self._hold(session, ticket, mail, message, sm, outcome, now)
            return
        if sm.action == "note":
            return
        await self._apply_steward(session, ticket, mail, message, sm.steward, planned, outcome, now)

    async def _apply_steward(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        steward: Steward,
        planned: Plan,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """Carry out a steward's checked plan: changes, relay, receipt."""
        before = ticket.status
        await self.carry_out(
            session, ticket, planned, steward.name, steward, now, outcome,
            reply=(mail, message),
        )  # fmt: skip
        await self.postmortem_mail(session, ticket, before, now, outcome)
        if self.config.commands.receipts == "always" and planned.changes:
            ctx = self.outgoing.context(ticket, mail, {"changes": planned.describe()})
            sender = mail.from_addr or steward.addresses[0]
            await self.outgoing.answer(
                session, ticket, "receipt", ctx, sender, message, now, outcome
            )

    async def _hold(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        sm: StewardMail,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """Keep an unauthenticated steward mail as a note and ask its steward to confirm."""
        token = secrets.token_urlsafe(12)
        expires = now + self.config.commands.confirm_within
        if message.id is None:
            await session.flush()  # the held row names the message by its id
        session.add(
            HeldCommand(
                token=token,
                ticket_id=ticket.id,
                steward=sm.steward.name,
                message_pk=message.id,
                created_at=now,
                expires_at=expires,
            )
        )
        why = "; ".join(sm.findings) or "not authenticated"
        line = (
            f"held until {sm.steward.name} confirms (the mail is not authenticated: {why}); "
            f"nothing applied or relayed yet"
        )
        outcome.reason += "; not authenticated: held until the steward confirms"
        outcome.policy.append(line)
        record(session, ticket.id, now, "note", text=line)
        # to the steward's configured address (the From is one), never to Reply-To
        to = mail.from_addr if mail.from_addr in sm.steward.addresses else sm.steward.addresses[0]
        ctx = self.outgoing.context(
            ticket,
            mail,
            {
                "steward": sm.steward.name,
                "token": token,
                "findings": list(sm.findings),
                "commands": [c.source for c in sm.parsed.commands],
                "relays": not sm.parsed.has("note") and not sm.parsed.has("silent"),
                "expires": self._local(expires),
            },
        )
        await self.outgoing.queue(
            session,
            ticket,
            "confirm_command",
            ctx,
            to=[to],
            reply_to_mail=message,
            automatic="auto-replied",
            now=now,
            outcome=outcome,
        )

    async def _confirm(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        sm: StewardMail,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """``[confirm=TOKEN]``: apply a held mail exactly once, for its own steward, in time."""
        token = sm.confirm or ""
        held = await session.scalar(
            select(HeldCommand).where(HeldCommand.token == token).with_for_update()
        )
        problem = None
        if held is None or held.steward != sm.steward.name:
            problem = "no held mail of yours has this token"
        elif held.confirmed_at is not None:
            problem = "this token was already used"
        elif held.expires_at < now:
            problem = (
                "this token expired (commands.confirm_within = "
                f"{_hours(self.config.commands.confirm_within)} h); send the commands again"
            )
        sender = mail.from_addr or sm.steward.addresses[0]
        if held is None or problem is not None:
            outcome.reason += f"; confirmation refused: {problem}"
            outcome.policy.append(f"[confirm={token}] refused: {problem}")
            ctx = self.outgoing.context(ticket, mail)
            ctx.update(errors=[_PlanError(f"[confirm={token}]", problem or "")], accepted=[])
            await self.outgoing.answer(
                session, ticket, "command_error", ctx, sender, message, now, outcome
            )
            return
        held.confirmed_at = now
        target = ticket
        if held.ticket_id != ticket.id:
            found = await session.get(Ticket, held.ticket_id, with_for_update=True)
            if found is None:
                raise LookupError(f"ticket #{held.ticket_id} of a held mail vanished")
            target = found
        original = await session.get(Message, held.message_pk)
        if original is None:
            raise LookupError(f"held message {held.message_pk} vanished")
        held_mail = parse_mail(original.raw)
        parsed = _steward_tags(
            self.config, held_mail.subject, target.subject, self.renderer.reply_names()
        )
        line = f"{sm.steward.name} confirmed the held mail <{original.message_id}>; applied now"
        outcome.reason += f"; confirmed the held mail on #{target.id}"
        outcome.policy.append(line)
        record(session, target.id, now, "note", text=line)
        on_behalf = parsed.get("requester")
        if (
            on_behalf is not None
            and on_behalf.value
            and target.requester in sm.steward.addresses
            and target.message_count <= 2
        ):
            # a held "open a ticket for someone" mail: the ticket becomes theirs now
            await self._change_requester(session, target, on_behalf.value, sm.steward.name, now)
        planned = plan(as_state(target), parsed, sm.steward.name, self.config)
        if planned.errors:
            ctx = self.outgoing.context(target, held_mail)
            errors = [_PlanError(*e.split(": ", 1)) for e in planned.errors]
            ctx.update(errors=errors, accepted=list(ACCEPTED.values()))
            await self.outgoing.answer(
                session, target, "command_error", ctx, sender, message, now, outcome
            )
            return
        original.is_note = planned.note
        if target is not ticket:
            target.updated_at = now
            target.last_activity_at = now
        await self._apply_steward(
            session, target, held_mail, original, sm.steward, planned, outcome, now
        )
        if target is not ticket:
            await refresh_dues(session, target, self.config, self.calendar)

    async def _change_requester(
        self, session: AsyncSession, ticket: Ticket, requester: str, actor: str, now: datetime
    ) -> None:
        old = ticket.requester
        await session.execute(
            delete(Participant).where(
                Participant.ticket_id == ticket.id,
                Participant.address == old,
                Participant.role == "requester",
            )
        )
        session.add(Participant(ticket_id=ticket.id, address=requester, role="requester"))
        ticket.requester = requester
        community = self.config.community_for(requester)
        ticket.community = community.name if community else None
        record(session, ticket.id, now, "change", actor, field="requester", old=old, new=requester)

    async def carry_out(
        self,
        session: AsyncSession,
        ticket: Ticket,
        planned: Plan,
        actor: str,
        steward: Steward | None,
        now: datetime,
        outcome: Outcome,
        *,
        reply: tuple[InboundMail, Message] | None = None,
    ) -> None:
        """Apply a plan and send what it calls for: the relay, the resolution, the closing."""
        before = ticket.status
        cc_before = set(ticket.cc)
        set_fields(session, ticket, planned.changes, actor, now)
        removed = cc_before - set(ticket.cc)
        if removed:
            await session.execute(
                delete(Participant).where(
                    Participant.ticket_id == ticket.id,
                    Participant.address.in_(removed),
                    Participant.role == "cc",
                )
            )
        if planned.note:
            return
        requester_is_steward = self.config.steward_by_address(ticket.requester) is not None
        relay = reply is not None and not planned.silent and not requester_is_steward
        if relay and reply is not None:
            mail, message = reply
            # a status set by this mail's own tags wins over the relay's "open"
            move(
                session,
                ticket,
                "relay" if planned.status is None else "relay_after_set",
                actor,
                now,
            )
            parent = await self.outgoing.last_requester_message(session, ticket) or message
            # SPEC 6: quoted text and signatures stay in storage, not in relays
            body = mail.new_text.strip()
            if planned.canned:
                canned = self.renderer.canned(
                    planned.canned, self._canned_context(ticket, steward, now)
                )
                body = f"{body}\n\n{canned}" if body else canned
            tag = f"[{self.config.support.tag} #{ticket.id}]"
            # from the ticket, never the steward's own subject: that may be the
            # "Not applied: …" or "Update due: …" mail the steward answered
            subject = f"Re: {tag} {policy.clip(ticket.subject, policy.ACK_SUBJECT_MAX)[0]}"
            ctx = self.outgoing.context(
                ticket,
                mail,
                {
                    "subject": subject,
                    "body": body,
                    "resolved": ticket.status == "resolved" and before != "resolved",
                    "closed": ticket.status == "closed" and before != "closed",
                    "auto_close_hours": _hours(self.config.tickets.auto_close_after),
                    "next_update": self._next_update_text(ticket, now),
                },
            )
            display = steward.display_name if steward else actor
            resolved_incident = ticket.type == "incident" and ctx["resolved"]
            # a Reply-All already reached some of them directly: not twice
            direct = set(mail.to) | set(mail.cc)
            people = [a for a in (ticket.requester, *ticket.cc) if a and a not in direct]
            if not people:
                outcome.reason += "; everyone on the thread got the steward's mail directly"
                return
            # the stewards' copy goes to who did not get the steward's mail already
            bcc = [
                a
                for a in self._other_stewards(steward, now)
                if not any(d in direct for d in self.outgoing.all_addresses_of(a))
            ]
            await self.outgoing.queue(
                session,
                ticket,
                "incident_resolved" if resolved_incident else "relay",
                ctx,
                to=people[:1],
                cc=people[1:],
                bcc=bcc,
                reply_to_mail=parent,
                automatic=None,
                now=now,
                from_name=display,  # SPEC 3: the steward's name as the display name
                attachments=forwarded(mail),
                outcome=outcome,
            )
            return
        if planned.silent or requester_is_steward or not ticket.requester:
            return
        # no relay (an operator's command): the requester still hears of the outcome
        if ticket.status == before:
            return
        if ticket.status == "closed":
            ctx = self.outgoing.ticket_context(ticket, {"reason": None})
            await self.outgoing.notify_requester(
                session, ticket, "closed", ctx, "closed notice", now, outcome
            )
        elif ticket.status == "resolved":
            tag = f"[{self.config.support.tag} #{ticket.id}]"
            ctx = self.outgoing.ticket_context(
                ticket,
                {
                    "subject": f"{tag} {ticket.subject}",
                    "body": "",
                    "resolved": True,
                    "closed": False,
                    "auto_close_hours": _hours(self.config.tickets.auto_close_after),
                    "next_update": None,
                },
            )
            template = "incident_resolved" if ticket.type == "incident" else "relay"
            await self.outgoing.notify_requester(
                session, ticket, template, ctx, "resolved notice", now, outcome
            )

    async def postmortem_mail(
        self, session: AsyncSession, ticket: Ticket, before: str, now: datetime, outcome: Outcome
    ) -> None:
        """With ``incidents.postmortem_mail``, mail the outline of an incident just resolved
        to its incident commander, else to the stewards on duty."""
        if not self.config.incidents.postmortem_mail or ticket.type != "incident":
            return
        if before in ("resolved", "closed") or ticket.status not in ("resolved", "closed"):
            return
        ic = self.config.steward_by_name(ticket.incident_commander or "")
        to = (
            [ic.addresses[0]]
            if ic is not None
            else self.outgoing.steward_addresses(on_duty(self.config, now))
        )
        if not to:
            return
        await session.flush()
        data = await postmortem(session, self.config, ticket.id, now)
        if data is None:
            return
        await self.outgoing.queue(
            session,
            ticket,
            "postmortem",
            postmortem_context(self.config, data),
            to=to,
            reply_to_mail=await self.outgoing.latest_message(session, ticket),
            automatic="auto-generated",
            now=now,
            outcome=outcome,
        )

    def _other_stewards(self, steward: Steward | None, now: datetime) -> list[str]:
        names = [n for n in on_duty(self.config, now) if steward is None or n != steward.name]
        return self.outgoing.steward_addresses(names)

    def _local(self, when: datetime) -> str:
        tz = ZoneInfo(self.config.hours.timezone)
        return when.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")

    def _next_update_text(self, ticket: Ticket, now: datetime) -> str | None:
        """When the next incident update is due, for mail that must say so."""
        if ticket.type != "incident" or ticket.status in ("resolved", "closed"):
            return None
        every = (
            timedelta(minutes=ticket.update_every_minutes)
            if ticket.update_every_minutes
            else self.config.incidents.update_every
        )
        due = (ticket.last_update_at or now) + every
        tz = ZoneInfo(self.config.hours.timezone)
        return due.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")

    def _canned_context(
        self, ticket: Ticket, steward: Steward | None, now: datetime
    ) -> dict[str, Any]:
        """What a canned reply may use: the ticket, the steward, the next update, the budget."""
        community = self.config.community_by_name(ticket.community) if ticket.community else None
        return self.outgoing.ticket_context(
            ticket,
            {
                "steward": {
                    "name": steward.name if steward else None,
                    "display_name": steward.display_name if steward else self.config.support.name,
                },
                "next_update": self._next_update_text(ticket, now),
                "budget_hours": community.budget_hours_per_month if community else None,
            },
        )


@dataclass(frozen=True, slots=True)
class _PlanError:
    """A command that parsed but cannot be carried out; shaped like a TagError."""

    tag: str
    message: str


def _steward_tags(
    config: Config, subject: str, ticket_subject: str, replies: Sequence[str] | None
) -> ParsedSubject:
    """A steward's subject read with the configured names (SPEC 3)."""
    return parse_subject(
        subject,
        stewards=[s.name for s in config.stewards],
        communities=[c.name for c in config.communities],
        ticket_subject=ticket_subject,
        replies=replies,
    )


def _hours(delta: timedelta) -> int:
    return round(delta.total_seconds() / 3600)
