"""Mail maild sends: rendered, stored and queued as an outbox row, in the caller's
transaction.

:meth:`Outgoing.queue` is the one way a mail leaves maild. On a ticket it
enforces SPEC 11 (the cap on external recipients, the per-address limits and
the global ceiling for automatic mail), threads the mail for its readers
(:mod:`maild.core.replychain`), stores it as an outbound message and records
it on the timeline; a mail about no single ticket (the roster handoff, the
weekly report, an alert to the stewards) is an outbox row only. The rest of
this module is what building such mail needs: the template context, the
greeting, the stewards' addresses, the attachments passed on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from maild.config import Config
from maild.core import policy
from maild.core.classify import why_not_mail_requester
from maild.core.inbound import InboundMail
from maild.core.replychain import Chain, Seen, reply_chain, ticket_root
from maild.core.roster import on_duty
from maild.mail.render import (
    OutAttachment,
    Renderer,
    build_message,
    new_message_id,
    new_thread_root,
    support_context,
    thread_index_for,
)
from maild.service.outcome import Outcome, PlannedMail
from maild.store.batch import (
    CHAIN,
    CHAIN_LOOKBACK,
    ChainRow,
    Mail,
    TicketLookups,
    keep_for_bulk,
    keep_message,
    load_sends,
    pending,
    pending_chain,
    stored_chain,
)
from maild.store.models import AutomaticSend, Message, Outbox, Ticket
from maild.store.timeline import record

__all__ = ["FORWARD_LIMIT", "Automatic", "Outgoing", "forwarded"]

log = logging.getLogger(__name__)

# attachments passed on between requester and stewards, at most this much per mail
FORWARD_LIMIT = 10 * 1024 * 1024
# the Auto-Submitted value of an automatic mail (RFC 3834); None: a person's mail
Automatic = Literal["auto-replied", "auto-generated"] | None


class Outgoing:
    """Builds and queues maild's mail; shares the pipeline's config and templates."""

    def __init__(self, config: Config, renderer: Renderer) -> None:
        self.config = config
        self.renderer = renderer
        self._internal = (config, config.internal_addresses)

    def reconfigure(self, config: Config, renderer: Renderer) -> None:
        """Take a reloaded config and its checked templates."""
        self.config = config
        self.renderer = renderer

    @property
    def internal(self) -> frozenset[str]:
        """The config's ``internal_addresses``, built once a config (a few per mail)."""
        config, internal = self._internal
        if config is not self.config:
            internal = self.config.internal_addresses
            self._internal = (self.config, internal)
        return internal

    async def queue(
        self,
        session: AsyncSession,
        ticket: Ticket | None,
        template: str,
        context: dict[str, Any],
        *,
        to: Sequence[str],
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to_mail: Mail | None = None,
        automatic: Automatic,
        now: datetime,
        from_name: str | None = None,
        attachments: Sequence[OutAttachment] = (),
        outcome: Outcome | None = None,
        known: TicketLookups | None = None,
    ) -> PlannedMail | None:
        """Render ``template`` and queue it as an outbox row; on a ticket, store it as an
        outbound message too, threaded under ``reply_to_mail``.

        SPEC 11 is enforced here for every mail on a ticket: at most
        ``max_cc + 1`` external recipients, and an automatic mail goes only to
        the recipients under the per-address limits and the global ceiling.
        Whoever is left out is named on the timeline (and in ``outcome``);
        None when nobody is left to send to.

        ``ticket`` None: a mail about no single ticket (the roster handoff, a
        report, an alert to the stewards), sent to ``to`` as given, on no
        thread and no timeline.

        ``known``: the ticket's look-ups done in advance for a batch of tickets
        (the scheduler); kept up to date here with the mail queued.
        """
        internal = self.internal
        if ticket is not None:
            to, cc, bcc = await self._allowed(
                session, ticket, template, to, cc, bcc, automatic, now, outcome, known
            )
            if not to and cc:
                to, cc = cc[:1], cc[1:]
            if not to:
                return None
        rendered = self.renderer.render(template, context)
        message_id = new_message_id(self.config, ticket.id if ticket is not None else None)
        in_reply_to: str | None = None
        references: list[str] = []
        reply_to: str | None = None
        thread_index: str | None = None
        thread_topic: str | None = None
        if ticket is not None:
            support = self.config.support.address
            for_stewards = all(a in internal for a in (*to, *cc, *bcc))
            chain = await self._chain(
                session,
                ticket,
                [*to, *cc, *bcc] if for_stewards else [*to, *cc],
                reply_to_mail.message_id if reply_to_mail is not None else None,
                for_stewards=for_stewards,
                known=known,
            )
            references = list(chain.references)
            in_reply_to = chain.in_reply_to
            # a steward's Reply-All goes to the support address only, never
            # straight to the co-stewards (who would get it twice)
            reply_to = support if for_stewards else None
            root = ticket.thread_root or new_thread_root(now)
            thread_index = thread_index_for(root, now)
            thread_topic = policy.clip(ticket.subject, policy.ACK_SUBJECT_MAX)[0]
        msg = build_message(
            config=self.config,
            rendered=rendered,
            to=to,
            cc=cc,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=references,
            now=now,
            auto=automatic,
            from_name=from_name,
            reply_to=reply_to,
            followup_to=reply_to,  # a group reply goes where Reply-To points
            thread_index=thread_index,
            thread_topic=thread_topic,
            ticket_id=ticket.id if ticket is not None else None,
            attachments=attachments,
        )
        raw = msg.as_bytes()
        out: Mail | None = None
        if ticket is not None:
            stored = {
                "ticket_id": ticket.id,
                "direction": "out",
                "message_id": message_id,
                "from_addr": self.config.support.address,
                "from_name": from_name or self.config.support.name,
                "to_addrs": list(to),
                "cc_addrs": list(cc),
                "subject": rendered.subject,
                "date": now,
                "at": now,
                "in_reply_to": [in_reply_to] if in_reply_to else [],
                "references": references,
                "headers": [],
                "text": rendered.text,
                "new_text": rendered.text,
                "classification": "normal",
                "defects": [],
                "is_note": False,
                "template": template,
                "stub": False,
                "raw": raw,
            }
            # a batch that writes later keeps it as values: no ORM object (store.batch)
            out = keep_message(session, stored)
            if out is None:
                out = Message(**stored)
                session.add(out)
        # Bcc exists only in the envelope: the message headers never name them.
        recipients = list(dict.fromkeys([*to, *cc, *bcc]))
        # the rows point at ``out`` itself: its id comes with the flush at commit,
        # which then writes the whole transaction's rows together
        row = {
            "ticket_id": ticket.id if ticket is not None else None,
            "template": template,
            "automatic": automatic is not None,
            "mail_from": self.config.support.address,
            "rcpt_tos": recipients,
            "primary_rcpt": recipients[0] if recipients else "",
            "raw": raw,
            "status": "queued",
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        # a mail on no ticket is always an object: the ceiling alert's look-up reads it back
        if out is None or not keep_for_bulk(session, Outbox, row, out):
            session.add(Outbox(**row, message=out))
        if ticket is not None and out is not None:
            record(session, ticket.id, now, "sent", text=template, message=out)
            ticket.message_count = (ticket.message_count or 0) + 1
            counted = (
                [policy.limit_key(a) for a in recipients if a not in internal]
                if automatic is not None
                else []
            )
            for key in counted:
                send = {"address": key, "at": now, "ticket_id": ticket.id, "template": template}
                if not keep_for_bulk(session, AutomaticSend, send, None):
                    session.add(AutomaticSend(**send))
            if known is not None:
                known.queued(ticket.id, out, recipients, counted, now)
        planned = PlannedMail(template, tuple(to), tuple(cc), rendered.subject, message_id)
        if outcome is not None:
            outcome.sends.append(planned)
        return planned

    async def _allowed(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        to: Sequence[str],
        cc: Sequence[str],
        bcc: Sequence[str],
        automatic: Automatic,
        now: datetime,
        outcome: Outcome | None,
        known: TicketLookups | None = None,
    ) -> tuple[Sequence[str], Sequence[str], Sequence[str]]:
        """SPEC 11: who of to, cc and bcc may get a mail on ``ticket``; whoever may not
        is named on the timeline (and in ``outcome``)."""
        internal = self.internal
        to, cc, dropped = policy.cap_external(
            to, cc, internal=internal, max_cc=self.config.tickets.max_cc
        )
        refused: dict[str, str] = {
            a: f"more than tickets.max_cc + 1 = {self.config.tickets.max_cc + 1} "
            "external recipients"
            for a in dropped
        }
        external = [a for a in dict.fromkeys([*to, *cc, *bcc]) if a not in internal]
        if automatic is not None and external:
            last_hour, last_day, total = await self._automatic_counts(session, external, now, known)
            allowance = policy.automatic_allowance(
                [*to, *cc, *bcc],
                last_hour=last_hour,
                last_day=last_day,
                global_last_hour=total,
                limits=policy.Limits(
                    per_hour=self.config.tickets.ack_rate_per_hour,
                    per_day=self.config.tickets.auto_per_day,
                    global_per_hour=self.config.hygiene.max_automatic_per_hour,
                ),
                internal=internal,
            )
            refused.update(allowance.refused)
            if allowance.ceiling:
                await self._ceiling_alert(session, next(iter(allowance.refused.values())), now)
            to = tuple(a for a in to if a not in allowance.refused)
            cc = tuple(a for a in cc if a not in allowance.refused)
            bcc = tuple(a for a in bcc if a not in allowance.refused)
        if refused:
            for addr, why in refused.items():
                line = f"no {template} sent to {addr}: {why}"
                record(session, ticket.id, now, "note", text=line)
                if outcome is not None:
                    outcome.suppressed.append(f"{template} to {addr}: {why}")
        return to, cc, bcc

    async def answer(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        ctx: dict[str, Any],
        sender: str,
        message: Message,
        now: datetime,
        outcome: Outcome,
        known: TicketLookups | None = None,
    ) -> PlannedMail | None:
        """An automatic reply to the sender of ``message``, threaded under it (``known``:
        the ticket's look-ups, if done in advance)."""
        return await self.queue(
            session,
            ticket,
            template,
            ctx,
            to=[sender],
            reply_to_mail=message,
            automatic="auto-replied",
            now=now,
            outcome=outcome,
            known=known,
        )

    async def notify_requester(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        ctx: dict[str, Any],
        what: str,
        now: datetime,
        outcome: Outcome | None = None,
        known: TicketLookups | None = None,
    ) -> PlannedMail | None:
        """Automatic mail to the requester and cc, threaded under their last mail.

        None, with a note on the timeline, when the requester must get no
        automatic mail (a machine), or when every recipient is over a limit.
        ``known``: look-ups done in advance for a batch of tickets.
        """
        if not ticket.requester:
            return None
        blocked = why_not_mail_requester(ticket.requester, ticket.requester_kind, self.config)
        if blocked is not None:
            self.suppressed_note(session, ticket, what, blocked, now)
            if outcome is not None:
                outcome.suppressed.append(f"{what}: {blocked}")
            return None
        await self.greet(session, ticket, ctx, known)
        return await self.queue(
            session,
            ticket,
            template,
            ctx,
            to=[ticket.requester],
            cc=list(ticket.cc),
            reply_to_mail=(
                known.requester_last.get(ticket.id)
                if known is not None
                else await self.last_requester_message(session, ticket)
            ),
            automatic="auto-generated",
            now=now,
            outcome=outcome,
            known=known,
        )

    async def _automatic_counts(
        self,
        session: AsyncSession,
        addresses: Sequence[str],
        now: datetime,
        known: TicketLookups | None = None,
    ) -> tuple[dict[str, int], dict[str, int], int]:
        """Automatic mails each address got in the last hour and 24 hours; all in the hour.

        Counted per mailbox (:func:`policy.limit_key`), so ``victim+1@`` and
        ``victim+2@`` share one allowance. From ``known`` when it holds them.
        """
        keys = {a: policy.limit_key(a) for a in addresses}
        if known is not None and known.sends.covers(keys.values()):
            return known.sends.counts(keys, now)
        return (await load_sends(session, keys.values(), now)).counts(keys, now)

    async def _ceiling_alert(self, session: AsyncSession, why: str, now: datetime) -> None:
        """Past the all-addresses ceiling: log an error and tell the stewards, once an hour."""
        log.error("automatic mail stopped: %s", why)
        already = await session.scalar(
            select(Outbox.id)
            .where(
                Outbox.template == "automatic_ceiling",
                Outbox.created_at > now - timedelta(hours=1),
            )
            .limit(1)
        )
        to = self.steward_addresses(on_duty(self.config, now))
        if already is not None or not to:
            return
        ctx = {
            "support": support_context(self.config),
            "why": why,
            "limit": self.config.hygiene.max_automatic_per_hour,
        }
        await self.queue(
            session, None, "automatic_ceiling", ctx, to=to, now=now, automatic="auto-generated"
        )

    def suppressed_note(
        self, session: AsyncSession, ticket: Ticket, what: str, why: str, now: datetime
    ) -> None:
        record(session, ticket.id, now, "note", text=f"no {what} sent: {why}")

    def context(
        self, ticket: Ticket, mail: InboundMail, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Template context for mail caused by the inbound ``mail``.

        SPEC 11: the text is cut to what a steward's copy may carry
        (``text_cut`` says so); the display name and subject are cut too, since
        acknowledgments repeat them to an address anyone can forge.
        """
        text, text_cut = policy.clip(mail.text, policy.STEWARD_TEXT_MAX)
        new_text, new_cut = policy.clip(mail.new_text, policy.STEWARD_TEXT_MAX)
        message = {
            "from_addr": mail.from_addr or "",
            "from_name": policy.clip(mail.from_name or "", 64)[0] or None,
            "subject": policy.clip(mail.subject, policy.ACK_SUBJECT_MAX)[0],
            "text": text,
            "new_text": new_text,
            "text_cut": text_cut or new_cut,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in mail.attachments
            ],
        }
        ctx = self.ticket_context(ticket, {"message": message, **(extra or {})})
        if mail.from_addr and mail.from_addr == ticket.requester:
            ctx["ticket"]["requester_name"] = message["from_name"]
        return ctx

    def ticket_context(self, ticket: Ticket, extra: dict[str, Any]) -> dict[str, Any]:
        """Template context for mail not caused by an inbound message."""
        support = self.config.support
        ctx: dict[str, Any] = {
            "support": support_context(self.config),
            "tag": f"[{support.tag} #{ticket.id}]",
            "ticket": {
                "id": ticket.id,
                # SPEC 11: mail repeats at most this much of a stranger's subject
                "subject": policy.clip(ticket.subject, policy.ACK_SUBJECT_MAX)[0],
                "status": ticket.status,
                "type": ticket.type,
                "priority": ticket.priority,
                "community": ticket.community,
                "requester": ticket.requester,
                "cc": list(ticket.cc),
                "assignee": ticket.assignee,
                "incident_commander": ticket.incident_commander,
                "follow_up_of": ticket.follow_up_of,
                # how mail to the requester greets them; filled where it is known
                "requester_name": None,
            },
            "quoted_tag": None,
            "message": None,
            "status_before": None,
        }
        ctx.update(extra)
        return ctx

    async def greet(
        self,
        session: AsyncSession,
        ticket: Ticket,
        ctx: dict[str, Any],
        known: TicketLookups | None = None,
    ) -> None:
        """Put the requester's display name (from their latest mail) into ``ctx``, so every
        mail to them greets them as the acknowledgment did."""
        if ctx["ticket"].get("requester_name") or not ticket.requester:
            return
        name = (
            known.requester_name.get(ticket.id)
            if known is not None
            else await session.scalar(
                select(Message.from_name)
                .where(
                    Message.ticket_id == ticket.id,
                    Message.direction == "in",
                    Message.from_addr == ticket.requester,
                    Message.from_name != "",
                )
                .order_by(Message.id.desc())
                .limit(1)
            )
        )
        ctx["ticket"]["requester_name"] = policy.clip(name or "", 64)[0] or None

    async def _chain(
        self,
        session: AsyncSession,
        ticket: Ticket,
        named: Sequence[str],
        trigger: str | None,
        *,
        for_stewards: bool,
        known: TicketLookups | None = None,
    ) -> Chain:
        """In-Reply-To/References of a mail on ``ticket``: the mails its readers already
        hold of it (see :mod:`maild.core.replychain`). ``named``: its recipients; for the
        requester's side, everyone on the ticket's side counts as one reader."""
        stored: Sequence[ChainRow | Row[Any]] = []
        every: Sequence[ChainRow | Row[Any]] = []
        if known is not None:
            rows: Sequence[ChainRow | Row[Any]] = known.chain.get(ticket.id, [])
        else:
            # the stored mails without a flush, then this transaction's own (newer)
            stored = stored_chain(session, ticket.id) or []  # read by load_reply
            if not stored:
                with session.no_autoflush:
                    stored = (await session.execute(CHAIN, {"ticket_id": ticket.id})).all()
            every = [*pending_chain(session, ticket.id), *stored]
            rows = every[:CHAIN_LOOKBACK]
        mails = [
            Seen(
                message_id=mid,
                senders=frozenset([sender] if direction == "in" and sender else []),
                readers=frozenset([*(to or []), *(cc or []), *(rcpts or [])]),
            )
            for mid, direction, sender, to, cc, rcpts in reversed(rows)
        ]
        internal = self.internal
        if for_stewards:
            # every address of each steward it goes to: a steward may write from another
            audience = frozenset(a for r in named for a in self.all_addresses_of(r)) - {
                self.config.support.address
            }
        else:
            people = {ticket.requester, *ticket.cc, *named}
            audience = frozenset(a for a in people if a and a not in internal)
        if known is not None:
            opening = known.opening.get(ticket.id)
        elif len(stored) < CHAIN_LOOKBACK:  # all of the ticket's mails: the oldest is the opening
            opening = every[-1][0] if every else None
        else:
            with session.no_autoflush:  # more than CHAIN_LOOKBACK stored: the oldest is stored
                opening = await session.scalar(
                    select(Message.message_id)
                    .where(Message.ticket_id == ticket.id)
                    .order_by(Message.id)
                    .limit(1)
                )
        root = ticket_root(ticket.id, self.config.support.message_id_domain)
        return reply_chain(
            mails, audience, trigger, root, opening=opening, prefer_own=not for_stewards
        )

    def steward_addresses(self, names: Sequence[str]) -> list[str]:
        out = []
        for name in names:
            steward = self.config.steward_by_name(name)
            if steward is not None and steward.addresses:
                out.append(steward.addresses[0])
        return out

    def size_context(self, oversize: int) -> dict[str, float]:
        """What the too_large template says: the mail's size and the limit, in MB."""
        if not oversize:
            return {}
        limit = self.config.tickets.max_message_bytes
        return {"size_mb": round(oversize / 1_048_576, 1), "limit_mb": round(limit / 1_048_576, 1)}

    async def latest_message(self, session: AsyncSession, ticket: Ticket) -> Message | None:
        """The ticket's latest message either way, to thread a notice under."""
        # this transaction's messages are the newest: the store is asked only without one
        for message in reversed(pending(session, Message)):
            if message.ticket_id == ticket.id:
                return message
        with session.no_autoflush:
            return await session.scalar(
                select(Message)
                .options(defer(Message.raw))
                .where(Message.ticket_id == ticket.id)
                .order_by(Message.id.desc())
                .limit(1)
            )

    async def last_requester_message(self, session: AsyncSession, ticket: Ticket) -> Message | None:
        """The requester side's latest mail: what a relay is threaded under."""
        people = [a for a in (ticket.requester, *ticket.cc) if a]
        # this transaction's messages are the newest: the store is asked only without one
        for message in reversed(pending(session, Message)):
            if (
                message.ticket_id == ticket.id
                and message.direction == "in"
                and message.from_addr in people
            ):
                return message
        with session.no_autoflush:
            return await session.scalar(
                select(Message)
                .options(defer(Message.raw))
                .where(
                    Message.ticket_id == ticket.id,
                    Message.direction == "in",
                    Message.from_addr.in_(people),
                )
                .order_by(Message.id.desc())
                .limit(1)
            )

    def all_addresses_of(self, addr: str) -> tuple[str, ...]:
        """Every address of the steward who has ``addr`` (just ``addr`` for anyone else)."""
        steward = self.config.steward_by_address(addr)
        return steward.addresses if steward is not None else (addr,)


def forwarded(mail: InboundMail) -> list[OutAttachment]:
    """The mail's attachments to pass on (not inline images), within FORWARD_LIMIT,
    with their type, name and charset as they came."""
    out: list[OutAttachment] = []
    total = 0
    for att in mail.attachments:
        if att.inline or total + att.size > FORWARD_LIMIT:
            continue
        total += att.size
        out.append(OutAttachment(att.filename, att.content_type, att.content, att.charset))
    return out
