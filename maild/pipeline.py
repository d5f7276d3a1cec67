"""One mail, start to end: parse, classify, thread, decide, commit.

Every mail is handled in exactly one database transaction: the ticket change,
the stored message, its timeline events and every outbox row it causes commit
together or not at all. Whatever goes wrong with one mail sends it to
quarantine with the reason and the raw bytes; the caller carries on with the
next one. The daemon and ``maild ingest`` both call :meth:`Pipeline.ingest`,
so they decide and queue exactly the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from maild.classify import Classification, classify, sender_authenticated
from maild.commands import Change, Plan, apply, plan
from maild.config import Config, Steward
from maild.conversation import (
    Candidates,
    Decision,
    TicketView,
    decide,
    referenced_ids,
    thread_root,
)
from maild.dues import refresh_dues
from maild.inbound import InboundMail, ParseError, parse_mail
from maild.lifecycle import is_confirmation
from maild.render import (
    Renderer,
    TemplateError,
    build_message,
    new_message_id,
    new_thread_root,
    thread_index_for,
)
from maild.roster import on_duty
from maild.routing import reply_recipients
from maild.store.models import Attachment, Event, Message, Outbox, Participant, Quarantine, Ticket
from maild.store.reports import postmortem, postmortem_context
from maild.subjects import clean_subject, find_ticket_refs, is_reply_subject, normalize_for_match
from maild.tags import ACCEPTED, ParsedSubject, parse_subject
from maild.workhours import Calendar

__all__ = ["Action", "Outcome", "Pipeline", "PlannedMail"]

log = logging.getLogger(__name__)

Action = Literal["created", "appended", "duplicate", "quarantined"]

_SUBJECT_KEY_MAX = 500
# attachments passed on between requester and stewards, at most this much per mail
FORWARD_LIMIT = 10 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class PlannedMail:
    """A mail the pipeline queued (or, in a dry run, would queue)."""

    template: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str


@dataclass(slots=True)
class Outcome:
    """What happened to one mail; the row of ``maild ingest --json``."""

    source: str
    message_id: str | None
    ticket: int | None
    action: Action
    reason: str
    classification: Classification | None = None
    decision: Decision | None = None
    sends: list[PlannedMail] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    command_errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "message_id": self.message_id,
            "ticket": self.ticket,
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class _StewardMail:
    """A steward's mail: its parsed tags and whether the sender is vouched for."""

    steward: Steward
    parsed: ParsedSubject
    authenticated: bool
    findings: tuple[str, ...]
    oversize: bool = False

    @property
    def is_note(self) -> bool:
        return (
            self.oversize
            or not self.authenticated
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
        oversize: bool = False,
        replies: Sequence[str] | None = None,
    ) -> _StewardMail | None:
        steward = classification.steward
        if steward is None or classification.automated:
            return None
        authenticated: bool = True
        findings: tuple[str, ...] = ()
        if config.commands.require_authenticated:
            authenticated, findings = sender_authenticated(mail, config.commands.authserv_id)
        parsed = parse_subject(
            mail.subject,
            stewards=[s.name for s in config.stewards],
            communities=[c.name for c in config.communities],
            ticket_subject=ticket.subject if ticket is not None else "",
            replies=replies,
        )
        return cls(steward, parsed, authenticated, findings, oversize)


class _DryRun(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


def _header_only(raw: bytes) -> bytes:
    head = raw[:_HEADER_LIMIT]
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = head.find(sep)
        if pos != -1:
            return head[: pos + len(sep)]
    return head


class Pipeline:
    """Turns raw mail into ticket changes and outbox rows."""

    def __init__(
        self,
        config: Config,
        sessions: async_sessionmaker[AsyncSession],
        renderer: Renderer | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.renderer = renderer or Renderer(config)
        self.calendar = Calendar(config.hours)

    # -- entry point ---------------------------------------------------------

    async def ingest(
        self, raw: bytes, source: str, now: datetime, *, dry_run: bool = False
    ) -> Outcome:
        """Process one mail in one transaction. Never raises for bad input.

        With ``dry_run`` everything is decided and written, then rolled back,
        so the outcome shows exactly what a real run would do.
        """
        too_large = len(raw) > self.config.tickets.max_message_bytes
        try:
            mail = parse_mail(_header_only(raw) if too_large else raw)
        except ParseError as exc:
            return await self._quarantine(raw, source, None, f"unparseable: {exc}", now, dry_run)
        try:
            async with self.sessions() as session:
                try:
                    async with session.begin():
                        outcome = await self._process(session, mail, raw, source, now, too_large)
                        if dry_run:
                            raise _DryRun(outcome)
                except _DryRun as dry:
                    return dry.outcome
        except IntegrityError as exc:
            # Another process stored the same Message-ID between our check and
            # our insert: a duplicate, and nothing of ours was committed. Any
            # other constraint failing is a bug to look at, not a reason to drop
            # the mail: quarantine it.
            async with self.sessions() as session:
                owner = await session.scalar(
                    select(Message.ticket_id).where(Message.message_id == mail.message_id)
                )
            if owner is not None:
                return Outcome(
                    source, mail.message_id, owner, "duplicate", f"Message-ID already on #{owner}"
                )
            reason = f"processing failed: {type(exc).__name__}: {exc.orig}"
            return await self._quarantine(raw, source, mail.message_id, reason, now, dry_run)
        except (OperationalError, InterfaceError):
            # the store is locked, gone or restarting: not the mail's fault. The
            # transport keeps the mail (IMAP leaves it, LMTP answers 451).
            raise
        except Exception as exc:
            log.exception("processing failed for Message-ID <%s>", mail.message_id)
            reason = f"processing failed: {type(exc).__name__}: {exc}"
            return await self._quarantine(raw, source, mail.message_id, reason, now, dry_run)
        self._log(outcome)
        return outcome

    def _log(self, outcome: Outcome) -> None:
        log.info(
            "%s ticket=#%s message_id=<%s> %s",
            outcome.action,
            outcome.ticket,
            outcome.message_id,
            outcome.reason,
        )

    async def _quarantine(
        self,
        raw: bytes,
        source: str,
        message_id: str | None,
        reason: str,
        now: datetime,
        dry_run: bool,
    ) -> Outcome:
        outcome = Outcome(source, message_id, None, "quarantined", reason)
        if dry_run:
            return outcome
        async with self.sessions() as session, session.begin():
            session.add(
                Quarantine(at=now, source=source, message_id=message_id, reason=reason, raw=raw)
            )
        log.warning("quarantined %s message_id=<%s>: %s", source, message_id, reason)
        return outcome

    # -- the decision --------------------------------------------------------

    async def _process(
        self,
        session: AsyncSession,
        mail: InboundMail,
        raw: bytes,
        source: str,
        now: datetime,
        too_large: bool,
    ) -> Outcome:
        existing = await session.scalar(
            select(Message.ticket_id).where(Message.message_id == mail.message_id)
        )
        if existing is not None:
            return Outcome(
                source,
                mail.message_id,
                existing,
                "duplicate",
                f"Message-ID already on #{existing}",
            )
        cls = classify(mail, self.config)
        if cls.kind == "bounce" and cls.bounce_of:
            outcome = await self._bounce(session, mail, raw, source, cls, now)
            if outcome is not None:
                return outcome

        candidates = await self._candidates(session, mail, now)
        decision = decide(mail, cls, candidates, self.config, now)
        if decision.follow_up_of is not None and mail.from_addr:
            # a second reply to the same closed thread joins the follow-up already open
            open_follow_up = await session.scalar(
                select(Ticket.id)
                .join(Participant, Participant.ticket_id == Ticket.id)
                .where(
                    Ticket.follow_up_of == decision.follow_up_of,
                    Ticket.status != "closed",
                    Participant.address == mail.from_addr,
                )
                .order_by(Ticket.id.desc())
                .limit(1)
            )
            if open_follow_up is not None:
                decision = Decision(
                    rule=decision.rule,
                    ticket_id=open_follow_up,
                    reason=f"{decision.reason}; continues follow-up #{open_follow_up}",
                )
        existing_ticket: Ticket | None = None
        if decision.ticket_id is not None:
            # PostgreSQL: lock the row so the scheduler cannot change it under us
            # (SQLite's WAL refuses a stale writer by itself)
            existing_ticket = await session.get(Ticket, decision.ticket_id, with_for_update=True)
            if existing_ticket is None:  # the candidate look-up just returned it
                raise LookupError(f"ticket #{decision.ticket_id} vanished")

        steward = _StewardMail.read(
            self.config, mail, cls, existing_ticket, too_large, self.renderer.reply_names()
        )
        if existing_ticket is None:
            ticket = await self._create(session, mail, cls, decision, now, steward)
            action: Action = "created"
        else:
            ticket = existing_ticket
            action = "appended"

        message = await self._store_message(session, ticket, mail, raw, cls, now, too_large)
        message.is_note = steward is not None and steward.is_note
        await session.flush()
        session.add(
            Event(
                ticket_id=ticket.id,
                at=now,
                kind="note" if message.is_note else "received",
                actor=cls.steward.name if cls.steward else (mail.from_addr or ""),
                message_pk=message.id,
                text=decision.reason,
            )
        )
        outcome = Outcome(
            source, mail.message_id, ticket.id, action, decision.reason, cls, decision
        )
        if steward is not None:
            outcome.commands = [c.source for c in steward.parsed.commands]
            outcome.command_errors = [f"{e.tag}: {e.message}" for e in steward.parsed.errors]
        if decision.follow_up_of is not None:
            session.add_all(
                [
                    Event(
                        ticket_id=ticket.id,
                        at=now,
                        kind="note",
                        actor="maild",
                        text=f"follow-up to #{decision.follow_up_of}",
                    ),
                    Event(
                        ticket_id=decision.follow_up_of,
                        at=now,
                        kind="note",
                        actor="maild",
                        text=f"follow-up opened as #{ticket.id}",
                    ),
                ]
            )
        if decision.quoted_tag is not None:
            session.add(
                Event(
                    ticket_id=ticket.id,
                    at=now,
                    kind="note",
                    actor="maild",
                    text=(
                        f"the sender quoted the tag [#{decision.quoted_tag}] of a ticket "
                        "they are not on; opened a ticket of their own"
                    ),
                )
            )

        if steward is not None:
            await self._steward_mail(
                session, ticket, mail, message, steward, outcome, now, len(raw) if too_large else 0
            )
        else:
            if action == "appended":
                await self._requester_activity(session, ticket, mail, message, cls, outcome, now)
            await self._notify(
                session,
                ticket,
                mail,
                message,
                cls,
                action,
                outcome,
                now,
                len(raw) if too_large else 0,
            )
        ticket.updated_at = now
        ticket.last_activity_at = now
        await refresh_dues(session, ticket, self.config, self.calendar)
        return outcome

    async def _bounce(
        self,
        session: AsyncSession,
        mail: InboundMail,
        raw: bytes,
        source: str,
        cls: Classification,
        now: datetime,
    ) -> Outcome | None:
        """Record a bounce of one of our mails on that mail; None if it is not ours."""
        original = await session.scalar(
            select(Message)
            .options(defer(Message.raw))
            .where(Message.message_id == cls.bounce_of, Message.direction == "out")
        )
        if original is None:
            return None
        ticket = await session.get(Ticket, original.ticket_id)
        if ticket is None:
            return None
        message = await self._store_message(session, ticket, mail, raw, cls, now, False)
        await session.flush()
        rows = (await session.scalars(select(Outbox).where(Outbox.message_pk == original.id))).all()
        for row in rows:
            if row.status == "sent":  # a report cannot be about mail not yet sent
                row.status = "bounced"
                row.last_error = (mail.new_text or mail.text)[:2000]
        reason = f"bounce of our message <{original.message_id}> on #{ticket.id}"
        session.add(
            Event(
                ticket_id=ticket.id,
                at=now,
                kind="received",
                actor=mail.from_addr or "",
                message_pk=message.id,
                text=reason,
            )
        )
        return Outcome(source, mail.message_id, ticket.id, "appended", reason, cls)

    async def _candidates(
        self, session: AsyncSession, mail: InboundMail, now: datetime
    ) -> Candidates:
        by_message_id: dict[str, TicketView] = {}
        refs = referenced_ids(mail)[:100]
        if refs:
            rows = (
                await session.execute(
                    select(Message.message_id, Ticket)
                    .join(Ticket, Ticket.id == Message.ticket_id)
                    .where(Message.message_id.in_(refs))
                )
            ).all()
            for mid, ticket in rows:
                by_message_id[mid] = await self._view(session, ticket)
            if by_message_id:
                # rule 1 decides; the later rules' look-ups would be wasted
                return Candidates(by_message_id)

        by_root: TicketView | None = None
        root = thread_root(mail.thread_index)
        if root is not None:
            rooted = await session.scalar(
                select(Ticket).where(Ticket.thread_root == root).order_by(Ticket.id.desc()).limit(1)
            )
            if rooted is not None:
                by_root = await self._view(session, rooted)

        by_number: dict[int, TicketView] = {}
        numbers = find_ticket_refs(mail.subject, self.config.support.tag)[:20]
        if numbers:
            for ticket in (
                await session.scalars(select(Ticket).where(Ticket.id.in_(numbers)))
            ).all():
                by_number[ticket.id] = await self._view(session, ticket)

        by_subject: list[TicketView] = []
        if mail.from_addr and is_reply_subject(mail.subject):
            key = normalize_for_match(mail.subject, self.config.support.tag)[:_SUBJECT_KEY_MAX]
            since = now - timedelta(days=self.config.tickets.subject_match_days)
            tickets = (
                await session.scalars(
                    select(Ticket)
                    .join(Participant, Participant.ticket_id == Ticket.id)
                    .where(
                        Participant.address == mail.from_addr,
                        Ticket.subject_key == key,
                        Ticket.last_activity_at >= since,
                    )
                    .order_by(Ticket.last_activity_at.desc())
                    .limit(20)
                )
            ).all()
            by_subject = [await self._view(session, t) for t in tickets]
        return Candidates(by_message_id, by_root, by_number, by_subject)

    async def _view(self, session: AsyncSession, ticket: Ticket) -> TicketView:
        members = (
            await session.scalars(
                select(Participant.address).where(Participant.ticket_id == ticket.id)
            )
        ).all()
        return TicketView(
            id=ticket.id,
            status=ticket.status,
            requester=ticket.requester,
            community=ticket.community,
            subject_key=ticket.subject_key,
            last_activity_at=ticket.last_activity_at,
            members=frozenset(members),
        )

    def _thread_addresses(self, mail: InboundMail, requester: str) -> list[str]:
        """The To/Cc people of a mail worth keeping on the thread."""
        skip = {self.config.support.address, requester, ""}
        out: list[str] = []
        for addr in (*mail.to, *mail.cc):
            if addr in skip or addr in out or "@" not in addr:
                continue
            if self.config.steward_by_address(addr) is not None:
                continue
            out.append(addr)
        return out

    async def _create(
        self,
        session: AsyncSession,
        mail: InboundMail,
        cls: Classification,
        decision: Decision,
        now: datetime,
        steward: _StewardMail | None = None,
    ) -> Ticket:
        tag = self.config.support.tag
        raw_subject = mail.subject
        requester = mail.from_addr or ""
        community = cls.community
        if steward is not None:
            # a steward's tags are not part of the ticket's subject
            raw_subject = steward.parsed.subject
            on_behalf = steward.parsed.get("requester")
            if on_behalf and on_behalf.value and not steward.is_note:
                requester = on_behalf.value
                community = self.config.community_for(requester)
        subject = clean_subject(raw_subject, tag) or "(no subject)"
        cc = self._thread_addresses(mail, requester)
        ticket = Ticket(
            subject=subject,
            subject_key=normalize_for_match(raw_subject, tag)[:_SUBJECT_KEY_MAX],
            status="new",
            priority="normal",
            community=community.name if community else None,
            requester=requester,
            requester_kind=cls.kind if steward is None else "normal",
            cc=cc,
            links=[],
            time_spent_minutes=0,
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            last_requester_at=now,
            thread_root=thread_root(mail.thread_index) or new_thread_root(now),
            follow_up_of=decision.follow_up_of,
            message_count=0,
        )
        session.add(ticket)
        await session.flush()
        if requester:
            session.add(Participant(ticket_id=ticket.id, address=requester, role="requester"))
        for addr in cc:
            session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))
        return ticket

    async def _store_message(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        raw: bytes,
        cls: Classification,
        now: datetime,
        stub: bool,
    ) -> Message:
        message = Message(
            ticket_id=ticket.id,
            direction="in",
            message_id=mail.message_id,
            from_addr=mail.from_addr,
            from_name=mail.from_name,
            to_addrs=list(mail.to),
            cc_addrs=list(mail.cc),
            subject=mail.subject,
            date=mail.date,
            at=now,
            in_reply_to=list(mail.in_reply_to),
            references=list(mail.references),
            headers=[list(h) for h in mail.headers],
            text=mail.text,
            new_text=mail.new_text,
            classification=cls.kind,
            defects=list(mail.defects),
            is_note=False,
            stub=stub,
            raw=_header_only(raw) if stub else raw,
        )
        session.add(message)
        await session.flush()
        ticket.message_count = (ticket.message_count or 0) + 1
        for att in mail.attachments:
            session.add(
                Attachment(
                    message_pk=message.id,
                    filename=att.filename,
                    content_type=att.content_type,
                    size=att.size,
                    content=att.content,
                )
            )
        return message

    async def _requester_activity(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        cls: Classification,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """A mail from the requester's side: new cc people, and the status it implies."""
        if cls.automated:
            return
        actor = mail.from_addr or ""
        ticket.last_requester_at = now
        known = {ticket.requester, *ticket.cc}
        candidates = [mail.from_addr or "", *self._thread_addresses(mail, ticket.requester)]
        new_cc = list(dict.fromkeys(a for a in candidates if a and a not in known))
        if new_cc:
            old = list(ticket.cc)
            ticket.cc = old + new_cc
            for addr in new_cc:
                session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))
            self._change(session, ticket, "cc", ", ".join(old), ", ".join(ticket.cc), actor, now)
        if ticket.status == "resolved" and (
            self.config.tickets.confirmation_closes and is_confirmation(mail.new_text)
        ):
            self._set(session, ticket, [Change("status", "resolved", "closed")], actor, now)
            outcome.reason += "; the requester confirmed the fix, so the ticket is closed"
            outcome.sends.append(
                await self.queue_mail(
                    session,
                    ticket,
                    "closed",
                    self._context(ticket, mail, {"reason": "you confirmed the fix"}),
                    to=[ticket.requester],
                    cc=ticket.cc,
                    reply_to_mail=message,
                    automatic="auto-replied",
                    now=now,
                )
            )
        elif ticket.status in ("waiting", "resolved"):
            self._set(session, ticket, [Change("status", ticket.status, "open")], actor, now)

    def _set(
        self,
        session: AsyncSession,
        ticket: Ticket,
        changes: Sequence[Change],
        actor: str,
        now: datetime,
    ) -> None:
        """Apply field changes and record each on the timeline."""
        for change in changes:
            self._change(session, ticket, change.field, change.old, change.new, actor, now)
        apply(ticket, changes, now)

    def _change(
        self,
        session: AsyncSession,
        ticket: Ticket,
        name: str,
        old: str | None,
        new: str | None,
        actor: str,
        now: datetime,
    ) -> None:
        session.add(
            Event(
                ticket_id=ticket.id,
                at=now,
                kind="change",
                actor=actor,
                field=name,
                old=old,
                new=new,
            )
        )

    # -- mail we send ----------------------------------------------------------

    async def _may_autoreply(
        self, session: AsyncSession, to: str, cls: Classification, now: datetime
    ) -> str | None:
        """Why no automatic mail may go to ``to``, or None if it may."""
        if cls.automated:
            return f"{cls.kind}: " + "; ".join(cls.reasons)
        if not to or "@" not in to:
            return "no usable sender address"
        if to == self.config.support.address:
            return "our own address"
        if to.split("@", 1)[0] in ("mailer-daemon", "postmaster"):
            return f"{to} is not a person"
        return await self._rate_limited(session, to, now)

    async def requester_blocked(
        self, session: AsyncSession, ticket: Ticket, now: datetime
    ) -> str | None:
        """Why no automatic mail may go to the ticket's requester now, or None."""
        if ticket.requester_kind != "normal":
            return f"the ticket was opened by automatic mail ({ticket.requester_kind})"
        local = ticket.requester.split("@", 1)[0].lower()
        if not ticket.requester or local in ("mailer-daemon", "postmaster"):
            return f"{ticket.requester or 'nobody'} is not a person"
        if self.config.steward_by_address(ticket.requester) is not None:
            return None
        return await self._rate_limited(session, ticket.requester, now)

    async def _rate_limited(self, session: AsyncSession, to: str, now: datetime) -> str | None:
        sent = await session.scalar(
            select(func.count())
            .select_from(Outbox)
            .where(
                Outbox.primary_rcpt == to,
                Outbox.automatic.is_(True),
                Outbox.created_at > now - timedelta(hours=1),
            )
        )
        # SPEC 6: no automatic mail to a sender who already got MORE than the limit
        if (sent or 0) > self.config.tickets.ack_rate_per_hour:
            return f"{to} already got {sent} automatic mails this hour"
        return None

    def suppressed_note(
        self, session: AsyncSession, ticket: Ticket, what: str, why: str, now: datetime
    ) -> None:
        session.add(
            Event(
                ticket_id=ticket.id,
                at=now,
                kind="note",
                actor="maild",
                text=f"no {what} sent: {why}",
            )
        )

    def _context(
        self, ticket: Ticket, mail: InboundMail, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Template context for mail caused by the inbound ``mail``."""
        message = {
            "from_addr": mail.from_addr or "",
            "from_name": mail.from_name,
            "subject": mail.subject,
            "text": mail.text,
            "new_text": mail.new_text,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size}
                for a in mail.attachments
            ],
        }
        return self._context_bare(ticket, {"message": message, **(extra or {})})

    async def queue_mail(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        context: dict[str, Any],
        *,
        to: Sequence[str],
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        reply_to_mail: Message | None,
        automatic: Literal["auto-replied", "auto-generated"] | None,
        now: datetime,
        from_name: str | None = None,
        reply_to: str | None = None,
        attachments: Sequence[tuple[str, str, bytes]] = (),
    ) -> PlannedMail:
        """Render ``template`` and store it as an outbound message plus an outbox row."""
        rendered = self.renderer.render(template, context)
        message_id = new_message_id(self.config, ticket.id)
        references: list[str] = []
        in_reply_to = None
        if reply_to_mail is not None:
            references = [*reply_to_mail.references, reply_to_mail.message_id]
            in_reply_to = reply_to_mail.message_id
        root = ticket.thread_root or new_thread_root(now)
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
            thread_index=thread_index_for(root, now),
            thread_topic=ticket.subject,
            ticket_id=ticket.id,
            attachments=attachments,
        )
        raw = msg.as_bytes()
        out = Message(
            ticket_id=ticket.id,
            direction="out",
            message_id=message_id,
            from_addr=self.config.support.address,
            from_name=from_name or self.config.support.name,
            to_addrs=list(to),
            cc_addrs=list(cc),
            subject=rendered.subject,
            date=now,
            at=now,
            in_reply_to=[in_reply_to] if in_reply_to else [],
            references=references,
            headers=[],
            text=rendered.text,
            new_text=rendered.text,
            classification="normal",
            defects=[],
            is_note=False,
            template=template,
            stub=False,
            raw=raw,
        )
        session.add(out)
        await session.flush()
        # Bcc exists only in the envelope: the message headers never name them.
        recipients = list(dict.fromkeys([*to, *cc, *bcc]))
        session.add(
            Outbox(
                ticket_id=ticket.id,
                message_pk=out.id,
                template=template,
                automatic=automatic is not None,
                mail_from=self.config.support.address,
                rcpt_tos=recipients,
                primary_rcpt=recipients[0] if recipients else "",
                raw=raw,
                status="queued",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
        )
        session.add(
            Event(
                ticket_id=ticket.id,
                at=now,
                kind="sent",
                actor="maild",
                message_pk=out.id,
                text=template,
            )
        )
        ticket.message_count = (ticket.message_count or 0) + 1
        return PlannedMail(template, tuple(to), tuple(cc), rendered.subject, message_id)

    async def queue_standalone(
        self,
        session: AsyncSession,
        template: str,
        context: dict[str, Any],
        *,
        to: Sequence[str],
        now: datetime,
        automatic: Literal["auto-replied", "auto-generated"] | None,
    ) -> PlannedMail:
        """A mail about no single ticket (the roster handoff): an outbox row only."""
        rendered = self.renderer.render(template, context)
        message_id = new_message_id(self.config, None)
        msg = build_message(
            config=self.config,
            rendered=rendered,
            to=to,
            message_id=message_id,
            in_reply_to=None,
            references=(),
            now=now,
            auto=automatic,
        )
        raw = msg.as_bytes()
        recipients = list(dict.fromkeys(to))
        session.add(
            Outbox(
                ticket_id=None,
                message_pk=None,
                template=template,
                automatic=automatic is not None,
                mail_from=self.config.support.address,
                rcpt_tos=recipients,
                primary_rcpt=recipients[0] if recipients else "",
                raw=raw,
                status="queued",
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
        )
        return PlannedMail(template, tuple(to), (), rendered.subject, message_id)

    @staticmethod
    def forwarded(mail: InboundMail) -> list[tuple[str, str, bytes]]:
        """The mail's attachments to pass on (not inline images), within FORWARD_LIMIT."""
        out: list[tuple[str, str, bytes]] = []
        total = 0
        for att in mail.attachments:
            if att.inline or total + att.size > FORWARD_LIMIT:
                continue
            total += att.size
            out.append((att.filename, att.content_type, att.content))
        return out

    def _steward_addresses(self, names: Sequence[str]) -> list[str]:
        out = []
        for name in names:
            steward = self.config.steward_by_name(name)
            if steward is not None and steward.addresses:
                out.append(steward.addresses[0])
        return out

    def _size_context(self, oversize: int) -> dict[str, float]:
        """What the too_large template says: the mail's size and the limit, in MB."""
        if not oversize:
            return {}
        limit = self.config.tickets.max_message_bytes
        return {"size_mb": round(oversize / 1_048_576, 1), "limit_mb": round(limit / 1_048_576, 1)}

    async def _answer(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        ctx: dict[str, Any],
        sender: str,
        message: Message,
        now: datetime,
    ) -> PlannedMail:
        """An automatic reply to the sender of ``message``, threaded under it."""
        return await self.queue_mail(
            session,
            ticket,
            template,
            ctx,
            to=[sender],
            reply_to_mail=message,
            automatic="auto-replied",
            now=now,
        )

    async def _notify(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        cls: Classification,
        action: Action,
        outcome: Outcome,
        now: datetime,
        oversize: int,
    ) -> None:
        """Queue the automatic mails this mail calls for (``oversize``: a too-large size)."""
        too_large = oversize > 0
        decision = outcome.decision
        extra = {"quoted_tag": decision.quoted_tag if decision else None}
        ctx = self._context(ticket, mail, {**extra, **self._size_context(oversize)})
        sender = mail.from_addr or ""
        support = self.config.support.address
        stewards = self._steward_addresses(on_duty(self.config, now))

        if action == "created" and cls.role != "steward":
            why_not = await self._may_autoreply(session, sender, cls, now)
            if why_not is None:
                template = "too_large" if too_large else "ack"
                outcome.sends.append(
                    await self._answer(session, ticket, template, ctx, sender, message, now)
                )
            else:
                outcome.suppressed.append(f"ack: {why_not}")
                self.suppressed_note(session, ticket, "acknowledgment", why_not, now)
            if cls.kind not in ("bounce", "own") and stewards:
                outcome.sends.append(
                    await self.queue_mail(
                        session,
                        ticket,
                        "steward_new",
                        ctx,
                        to=stewards,
                        reply_to_mail=message,
                        automatic="auto-generated",
                        now=now,
                        reply_to=support,
                        attachments=self.forwarded(mail),
                    )
                )
        elif action == "appended" and cls.role != "steward" and not cls.automated:
            if too_large:
                why_not = await self._may_autoreply(session, sender, cls, now)
                if why_not is None:
                    outcome.sends.append(
                        await self._answer(session, ticket, "too_large", ctx, sender, message, now)
                    )
            to = await self._working_stewards(session, ticket, now)
            if to:
                outcome.sends.append(
                    await self.queue_mail(
                        session,
                        ticket,
                        "requester_reply",
                        ctx,
                        to=to,
                        reply_to_mail=message,
                        automatic="auto-generated",
                        now=now,
                        reply_to=support,
                        attachments=self.forwarded(mail),
                    )
                )

    # -- stewards ------------------------------------------------------------------

    async def _working_stewards(
        self, session: AsyncSession, ticket: Ticket, now: datetime
    ) -> list[str]:
        """Addresses of who works the ticket (assignee, IC, stewards who wrote on it),
        else of the stewards on duty: who a requester's reply goes to."""
        names = {s.name for s in self.config.stewards}
        actors = (
            await session.scalars(
                select(Event.actor)
                .where(
                    Event.ticket_id == ticket.id,
                    Event.kind.in_(("received", "note")),
                    Event.message_pk.is_not(None),
                    Event.actor.in_(names),
                )
                .order_by(Event.id)
            )
        ).all()
        chosen = reply_recipients(
            ticket.assignee, ticket.incident_commander, actors, on_duty(self.config, now)
        )
        return self._steward_addresses(chosen)

    async def latest_message(self, session: AsyncSession, ticket: Ticket) -> Message | None:
        """The ticket's latest message either way, to thread a notice under."""
        return await session.scalar(
            select(Message)
            .options(defer(Message.raw))
            .where(Message.ticket_id == ticket.id)
            .order_by(Message.id.desc())
            .limit(1)
        )

    async def _last_requester_message(
        self, session: AsyncSession, ticket: Ticket
    ) -> Message | None:
        """The requester side's latest mail: what a relay is threaded under."""
        people = [a for a in (ticket.requester, *ticket.cc) if a]
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

    def _other_stewards(self, steward: Steward | None, now: datetime) -> list[str]:
        names = [n for n in on_duty(self.config, now) if steward is None or n != steward.name]
        return self._steward_addresses(names)

    async def _steward_mail(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        sm: _StewardMail,
        outcome: Outcome,
        now: datetime,
        oversize: int = 0,
    ) -> None:
        """A steward wrote: check, apply the tags, relay, answer errors."""
        ctx = self._context(ticket, mail)
        sender = mail.from_addr or sm.steward.addresses[0]
        if oversize:
            # only the headers were kept: relaying would send an empty reply
            outcome.reason += "; too large: kept as a note, nothing applied or relayed"
            ctx.update(self._size_context(oversize))
            outcome.sends.append(
                await self._answer(session, ticket, "too_large", ctx, sender, message, now)
            )
            return
        if not sm.authenticated:
            outcome.reason += "; the sender is not authenticated: kept as a note, commands ignored"
            warned = self._steward_addresses(on_duty(self.config, now)) or list(
                sm.steward.addresses[:1]
            )
            ctx.update(steward=sm.steward.name, findings=list(sm.findings))
            outcome.sends.append(
                await self.queue_mail(
                    session,
                    ticket,
                    "spoof_warning",
                    ctx,
                    to=warned,
                    reply_to_mail=message,
                    automatic="auto-generated",
                    now=now,
                )  # fmt: skip
            )
            return
        if sm.parsed.errors:
            outcome.reason += "; bad tags: nothing applied, kept as a note"
            ctx.update(errors=sm.parsed.errors, accepted=list(ACCEPTED.values()))
            outcome.sends.append(
                await self._answer(session, ticket, "command_error", ctx, sender, message, now)
            )
            return
        planned = plan(ticket, sm.parsed, sm.steward.name, self.config)
        if planned.canned and not planned.note and not planned.silent:
            try:  # a broken override is a bad tag, not a lost mail
                self.renderer.canned(planned.canned, self._canned_context(ticket, sm.steward, now))
            except TemplateError as exc:
                outcome.reason += "; the canned reply failed: nothing applied or relayed"
                bad = [{"tag": f"[reply={planned.canned}]", "message": str(exc)}]
                ctx.update(errors=bad, accepted=list(ACCEPTED.values()))
                outcome.sends.append(
                    await self._answer(session, ticket, "command_error", ctx, sender, message, now)
                )
                return
        before = ticket.status
        await self._carry_out(
            session, ticket, planned, sm.steward.name, sm.steward, now, outcome,
            reply=(mail, message, sm.parsed.subject),
        )  # fmt: skip
        await self._postmortem_mail(session, ticket, before, now, outcome)
        if self.config.commands.receipts == "always" and planned.changes:
            ctx.update(changes=planned.describe())
            outcome.sends.append(
                await self._answer(session, ticket, "receipt", ctx, sender, message, now)
            )

    async def _carry_out(
        self,
        session: AsyncSession,
        ticket: Ticket,
        planned: Plan,
        actor: str,
        steward: Steward | None,
        now: datetime,
        outcome: Outcome,
        *,
        reply: tuple[InboundMail, Message, str] | None = None,
    ) -> None:
        """Apply a plan and send what it calls for: the relay, the resolution, the closing."""
        before = ticket.status
        self._set(session, ticket, planned.changes, actor, now)
        if planned.note:
            return
        requester_is_steward = self.config.steward_by_address(ticket.requester) is not None
        relay = reply is not None and not planned.silent and not requester_is_steward
        if relay and reply is not None:
            mail, message, steward_subject = reply
            if planned.status is None and ticket.status == "new":
                self._set(session, ticket, [Change("status", "new", "open")], actor, now)
            if ticket.first_response_at is None:
                ticket.first_response_at = now
            ticket.last_update_at = now
            parent = await self._last_requester_message(session, ticket) or message
            # SPEC 6: quoted text and signatures stay in storage, not in relays
            body = mail.new_text.strip()
            if planned.canned:
                canned = self.renderer.canned(
                    planned.canned, self._canned_context(ticket, steward, now)
                )
                body = f"{body}\n\n{canned}" if body else canned
            tag = f"[{self.config.support.tag} #{ticket.id}]"
            subject = _relay_subject(steward_subject, ticket, tag, self.config.support.tag)
            ctx = self._context(
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
            outcome.sends.append(
                await self.queue_mail(
                    session,
                    ticket,
                    "incident_resolved" if resolved_incident else "relay",
                    ctx,
                    to=people[:1],
                    cc=people[1:],
                    bcc=self._other_stewards(steward, now),
                    reply_to_mail=parent,
                    automatic=None,
                    now=now,
                    from_name=f"{display} (Support)",
                    attachments=self.forwarded(mail),
                )
            )
            return
        if planned.silent or requester_is_steward or not ticket.requester:
            return
        # no relay (an operator's command): the requester still hears of the outcome
        if ticket.status == before:
            return
        if ticket.status == "closed":
            ctx = self._context_bare(ticket, {"reason": None})
            sent = await self.notify_requester(session, ticket, "closed", ctx, "closed notice", now)
        elif ticket.status == "resolved":
            tag = f"[{self.config.support.tag} #{ticket.id}]"
            ctx = self._context_bare(
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
            sent = await self.notify_requester(
                session, ticket, template, ctx, "resolved notice", now
            )
        else:
            return
        if sent is None:
            outcome.suppressed.append(f"{ticket.status} notice")
        else:
            outcome.sends.append(sent)

    async def _postmortem_mail(
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
            else self._steward_addresses(on_duty(self.config, now))
        )
        if not to:
            return
        await session.flush()
        data = await postmortem(session, self.config, ticket.id, now)
        if data is None:
            return
        outcome.sends.append(
            await self.queue_mail(
                session,
                ticket,
                "postmortem",
                postmortem_context(self.config, data),
                to=to,
                reply_to_mail=await self.latest_message(session, ticket),
                automatic="auto-generated",
                now=now,
                reply_to=self.config.support.address,
            )
        )

    async def notify_requester(
        self,
        session: AsyncSession,
        ticket: Ticket,
        template: str,
        ctx: dict[str, Any],
        what: str,
        now: datetime,
    ) -> PlannedMail | None:
        """Automatic mail to the requester and cc, threaded under their last mail.

        None, with a note on the timeline, when the requester must get no
        automatic mail (a machine, or over the rate limit).
        """
        if not ticket.requester:
            return None
        blocked = await self.requester_blocked(session, ticket, now)
        if blocked is not None:
            self.suppressed_note(session, ticket, what, blocked, now)
            return None
        return await self.queue_mail(
            session,
            ticket,
            template,
            ctx,
            to=[ticket.requester],
            cc=list(ticket.cc),
            reply_to_mail=await self._last_requester_message(session, ticket),
            automatic="auto-generated",
            now=now,
        )

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
        return self._context_bare(
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

    def _context_bare(self, ticket: Ticket, extra: dict[str, Any]) -> dict[str, Any]:
        """Template context for mail not caused by an inbound message."""
        support = self.config.support
        ctx: dict[str, Any] = {
            "support": {"name": support.name, "address": support.address, "tag": support.tag},
            "tag": f"[{support.tag} #{ticket.id}]",
            "ticket": {
                "id": ticket.id,
                "subject": ticket.subject,
                "status": ticket.status,
                "type": ticket.type,
                "priority": ticket.priority,
                "community": ticket.community,
                "requester": ticket.requester,
                "cc": list(ticket.cc),
                "assignee": ticket.assignee,
                "incident_commander": ticket.incident_commander,
                "follow_up_of": ticket.follow_up_of,
            },
            "quoted_tag": None,
            "message": None,
        }
        ctx.update(extra)
        return ctx

    # -- the operator's commands -------------------------------------------------------

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
            planned = plan(ticket, parsed, steward.name if steward else actor, self.config)
            if note:
                session.add(Event(ticket_id=ticket.id, at=now, kind="note", actor=actor, text=note))
            outcome = Outcome(f"operator:{actor}", None, ticket.id, "appended", "operator command")
            before = ticket.status
            await self._carry_out(session, ticket, planned, actor, steward, now, outcome)
            await self._postmortem_mail(session, ticket, before, now, outcome)
            ticket.updated_at = now
            await refresh_dues(session, ticket, self.config, self.calendar)
            return planned, []


def _hours(delta: timedelta) -> int:
    return round(delta.total_seconds() / 3600)


def _relay_subject(subject: str, ticket: Ticket, tag: str, tag_name: str) -> str:
    """The steward's subject (command tags already removed), carrying the ticket tag."""
    subject = " ".join(subject.split())
    if ticket.id in find_ticket_refs(subject, tag_name):
        return subject
    cleaned = clean_subject(subject, tag_name) or ticket.subject
    return f"Re: {tag} {cleaned}"
