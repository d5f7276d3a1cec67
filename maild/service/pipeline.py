"""One mail, start to end: parse, classify, thread, decide, commit.

Every mail is handled in exactly one database transaction: the ticket change,
the stored message, its timeline events and every outbox row it causes commit
together or not at all. Whatever goes wrong with one mail sends it to
quarantine with the reason and the raw bytes; the caller carries on with the
next one. The daemon and ``maild ingest`` both call :meth:`Pipeline.ingest`,
so they decide and queue exactly the same.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Row, delete, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from maild.config import Config, Steward
from maild.core import policy
from maild.core.classify import Classification, classify
from maild.core.commands import Change, Plan, apply, plan
from maild.core.conversation import (
    Candidates,
    Decision,
    TicketView,
    decide,
    referenced_ids,
    thread_root,
)
from maild.core.inbound import InboundMail, ParseError, parse_mail
from maild.core.lifecycle import is_confirmation
from maild.core.replychain import Chain, Seen, reply_chain, ticket_root
from maild.core.roster import on_duty
from maild.core.routing import reply_recipients
from maild.core.subjects import (
    clean_subject,
    find_ticket_refs,
    is_reply_subject,
    normalize_for_match,
)
from maild.core.tags import ACCEPTED, ParsedSubject, parse_subject
from maild.core.workhours import Calendar
from maild.mail import authn
from maild.mail.render import (
    OutAttachment,
    Renderer,
    TemplateError,
    build_message,
    new_message_id,
    new_thread_root,
    support_context,
    thread_index_for,
)
from maild.store.batch import CHAIN_LOOKBACK, ChainRow, TicketLookups, load_sends
from maild.store.dues import refresh_dues
from maild.store.inline import StoreThread
from maild.store.models import (
    Attachment,
    AutomaticSend,
    Event,
    HeldCommand,
    Message,
    Outbox,
    Participant,
    Quarantine,
    Ticket,
)
from maild.store.reports import postmortem, postmortem_context

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
    # the SPEC section 11 rules that applied, in words (maild explain shows them)
    policy: list[str] = field(default_factory=list)
    dry_run: bool = False

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
        replies: Sequence[str] | None = None,
    ) -> _StewardMail | None:
        steward = classification.steward
        if steward is None or classification.automated:
            return None
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
        dns_lookup: authn.DnsLookup | None = None,
        store: StoreThread | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        # None: each mail's transaction runs in the caller's loop through ``sessions``
        self.store = store
        self.renderer = renderer or Renderer(config)
        self.calendar = Calendar(config.hours)
        # None: maild.mail.authn.dns_txt, looked up at each use (tests swap in their own)
        self.dns_lookup = dns_lookup

    def reconfigure(self, config: Config, renderer: Renderer) -> None:
        """Take a reloaded config and its checked templates (the daemon's SIGHUP)."""
        self.config = config
        self.renderer = renderer
        self.calendar = Calendar(config.hours)

    async def _verdict(self, mail: InboundMail, raw: bytes) -> authn.Verdict | None:
        """SPEC 11: is the mail authenticated for its From domain? None: not asked.

        Only a steward's mail needs maild's own DKIM check (DNS, in a worker
        thread under a time-out); any other mail only has its trusted
        Authentication-Results read (for ``dmarc=fail``).
        """
        commands = self.config.commands
        sender = mail.from_addr or ""
        # as written by the MX: never RFC 2047-decoded (SPEC 11, RFC 8601 syntax)
        results = authn.raw_headers(raw, "authentication-results")
        try:
            if self.config.steward_by_address(sender) is None or not commands.require_authenticated:
                # no DNS where nothing depends on it (a lab trusts steward mail as sent)
                if not commands.authserv_id or not results:
                    return None
                return authn.results_verdict(results, commands.authserv_id, sender)
            lookup = self.dns_lookup or authn.dns_txt
            timeout = commands.dns_timeout.total_seconds()
            return await asyncio.wait_for(
                asyncio.to_thread(
                    authn.check, raw, sender, results, commands.authserv_id, lookup, timeout
                ),
                timeout * 4 + 1,
            )
        except TimeoutError:
            return authn.Verdict(False, ("DKIM check timed out (DNS)",))
        except Exception as exc:  # a hostile mail is not authenticated, never a retry loop
            log.warning("authentication check failed for <%s>: %s", mail.message_id, exc)
            return authn.Verdict(False, (f"authentication check failed: {type(exc).__name__}",))

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
        verdict = await self._verdict(mail, raw) if not too_large else None

        async def transaction(sessions: async_sessionmaker[AsyncSession]) -> Outcome:
            async with sessions() as session:
                try:
                    async with session.begin():
                        outcome = await self._process(
                            session, mail, raw, source, now, too_large, verdict
                        )
                        if dry_run:
                            raise _DryRun(outcome)
                except _DryRun as dry:
                    dry.outcome.dry_run = True
                    return dry.outcome
            return outcome

        try:
            if self.store is not None:
                # the whole transaction in the store's thread: one hop, not ~100
                outcome = await self.store.run(transaction)
            else:
                outcome = await transaction(self.sessions)
            if outcome.dry_run:
                return outcome
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
        verdict: authn.Verdict | None = None,
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
            self.config,
            mail,
            cls,
            existing_ticket,
            verdict,
            too_large,
            self.renderer.reply_names(),
        )
        outcome = Outcome(source, mail.message_id, None, "created", decision.reason, cls, decision)
        if existing_ticket is None:
            ticket = await self._create(session, mail, cls, decision, now, steward, outcome)
            action: Action = "created"
        else:
            ticket = existing_ticket
            action = "appended"
        outcome.ticket, outcome.action = ticket.id, action

        message = await self._store_message(
            session,
            ticket,
            mail,
            raw,
            cls,
            now,
            too_large,
            is_note=steward is not None and steward.is_note,
        )
        received = Event(
            ticket_id=ticket.id,
            at=now,
            kind="note" if message.is_note else "received",
            actor=cls.steward.name if cls.steward else (mail.from_addr or ""),
            message_pk=message.id,
            text=decision.reason,
        )
        session.add(received)
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
            if message.is_note:
                received.kind = "note"
        else:
            side: policy.Standing = "requester"
            status_before = ticket.status
            if action == "appended":
                side = await self._requester_activity(
                    session, ticket, mail, message, cls, outcome, now, verdict
                )
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
                side,
                verdict,
                status_before,
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

    def _cc_from(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        side: policy.Standing,
        actor: str,
        outcome: Outcome,
        now: datetime,
        *,
        opening: bool = False,
    ) -> None:
        """SPEC 11: who of the mail's To/Cc joins the ticket's cc (policy decides).

        ``opening``: the mail opens the ticket, whose cc is part of its creation
        rather than a change on the timeline.
        """
        decision = policy.cc_from_mail(
            sender_standing=side,
            named=[*mail.to, *mail.cc],
            requester=ticket.requester,
            current_cc=ticket.cc,
            max_cc=self.config.tickets.max_cc,
            internal=self.config.internal_addresses,
        )
        if decision.added:
            old = list(ticket.cc)
            ticket.cc = [*old, *decision.added]
            for addr in decision.added:
                session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))
            if not opening:
                self._change(
                    session, ticket, "cc", ", ".join(old), ", ".join(ticket.cc), actor, now
                )
        if decision.reason:
            shown = ", ".join(decision.refused[:5]) + (" …" if len(decision.refused) > 5 else "")
            line = f"cc not changed ({shown}): {decision.reason}"
            outcome.policy.append(line)
            session.add(Event(ticket_id=ticket.id, at=now, kind="note", actor="maild", text=line))

    async def _create(
        self,
        session: AsyncSession,
        mail: InboundMail,
        cls: Classification,
        decision: Decision,
        now: datetime,
        steward: _StewardMail | None,
        outcome: Outcome,
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
        ticket = Ticket(
            subject=subject,
            subject_key=normalize_for_match(raw_subject, tag)[:_SUBJECT_KEY_MAX],
            status="new",
            priority="normal",
            community=community.name if community else None,
            requester=requester,
            requester_kind=cls.kind if steward is None else "normal",
            cc=[],
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
        if steward is None or not steward.is_note:
            # the opening mail is the requester's own (or a steward's on their behalf)
            self._cc_from(session, ticket, mail, "requester", requester, outcome, now, opening=True)
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
        *,
        is_note: bool = False,
    ) -> Message:
        """Add the inbound message and its attachments; flushed, so ``message.id`` is set."""
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
            is_note=is_note,
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
        verdict: authn.Verdict | None = None,
    ) -> policy.Standing:
        """A mail from the requester's side: new cc people, and the status it implies.

        Returns how the sender stands to the ticket; a stranger's mail (threaded
        here by its headers alone) changes nothing and adds nobody. Nor does a
        mail our MX saw fail DMARC: its From is likely forged.
        """
        actor = mail.from_addr or ""
        community = self.config.community_by_name(ticket.community) if ticket.community else None
        side = policy.standing(
            actor,
            requester=ticket.requester,
            cc=ticket.cc,
            is_steward=False,
            representatives=community.representatives if community else (),
            forged=verdict is not None and verdict.dmarc_fail,
        )
        if side == "stranger":
            line = (
                f"{actor or 'the sender'} is not on this ticket: the mail is kept and shown "
                "to the stewards, but changes nothing and puts nobody on the ticket"
            )
            if verdict is not None and verdict.dmarc_fail:
                line += " (the MX reports dmarc=fail: the From is likely forged)"
            outcome.policy.append(line)
            session.add(Event(ticket_id=ticket.id, at=now, kind="note", actor="maild", text=line))
            outcome.reason += f"; {actor or 'the sender'} is not on this ticket"
            return side
        if cls.automated:
            return side
        ticket.last_requester_at = now
        self._cc_from(session, ticket, mail, side, actor, outcome, now)
        if ticket.status == "resolved" and (
            self.config.tickets.confirmation_closes and is_confirmation(mail.new_text)
        ):
            self.set_fields(session, ticket, [Change("status", "resolved", "closed")], actor, now)
            outcome.reason += "; the requester confirmed the fix, so the ticket is closed"
            closing = self._context(ticket, mail, {"reason": "you confirmed the fix"})
            await self._greet(session, ticket, closing)
            await self.queue_mail(
                session,
                ticket,
                "closed",
                closing,
                to=[ticket.requester],
                cc=ticket.cc,
                reply_to_mail=message,
                automatic="auto-replied",
                now=now,
                outcome=outcome,
            )
        elif ticket.status in ("waiting", "resolved"):
            self.set_fields(session, ticket, [Change("status", ticket.status, "open")], actor, now)
        return side

    def set_fields(
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
        before = set(ticket.cc)
        apply(ticket, changes, now)
        for addr in set(ticket.cc) - before:
            session.add(Participant(ticket_id=ticket.id, address=addr, role="cc"))

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

    def _may_answer(
        self, to: str, cls: Classification, verdict: authn.Verdict | None = None
    ) -> str | None:
        """Why the sender of a mail may get no automatic answer at all, or None.

        The one "may we answer this automatically" rule: not machines (SPEC 6),
        not ourselves, not a sender our MX saw fail DMARC (SPEC 11). The
        per-address limits are applied to every automatic mail in
        :meth:`queue_mail`.
        """
        if cls.automated:
            return f"{cls.kind}: " + "; ".join(cls.reasons)
        if to == self.config.support.address:
            return "our own address"
        if verdict is not None and verdict.dmarc_fail:
            return (
                f"{self.config.commands.authserv_id} reports dmarc=fail for the sender's "
                "domain: the From address is likely forged (no backscatter)"
            )
        return policy.not_a_person(to)

    def requester_blocked(self, ticket: Ticket) -> str | None:
        """Why no automatic mail may go to the ticket's requester at all, or None."""
        if ticket.requester_kind != "normal":
            return f"the ticket was opened by automatic mail ({ticket.requester_kind})"
        if self.config.steward_by_address(ticket.requester) is not None:
            return None
        return policy.not_a_person(ticket.requester)

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
        await self.queue_standalone(
            session, "automatic_ceiling", ctx, to=to, now=now, automatic="auto-generated"
        )

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

    async def _greet(
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
        if known is not None:
            ctx["ticket"]["requester_name"] = (
                policy.clip(known.requester_name.get(ticket.id, ""), 64)[0] or None
            )
            return
        name = await session.scalar(
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
        ctx["ticket"]["requester_name"] = policy.clip(name or "", 64)[0] or None

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
        attachments: Sequence[OutAttachment] = (),
        outcome: Outcome | None = None,
        known: TicketLookups | None = None,
    ) -> PlannedMail | None:
        """Render ``template`` and store it as an outbound message plus an outbox row.

        SPEC 11 is enforced here for every mail on a ticket: at most
        ``max_cc + 1`` external recipients, and an automatic mail goes only to
        the recipients under the per-address limits and the global ceiling.
        Whoever is left out is named on the timeline (and in ``outcome``);
        None when nobody is left to send to. ``known``: the ticket's look-ups
        done in advance for a batch (the scheduler), kept up to date here.
        """
        internal = self.config.internal_addresses
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
                session.add(
                    Event(ticket_id=ticket.id, at=now, kind="note", actor="maild", text=line)
                )
                if outcome is not None:
                    outcome.suppressed.append(f"{template} to {addr}: {why}")
        if not to and cc:
            to, cc = cc[:1], cc[1:]
        if not to:
            return None
        rendered = self.renderer.render(template, context)
        message_id = new_message_id(self.config, ticket.id)
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
            followup_to=support if for_stewards else None,
            thread_index=thread_index_for(root, now),
            thread_topic=policy.clip(ticket.subject, policy.ACK_SUBJECT_MAX)[0],
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
        # Bcc exists only in the envelope: the message headers never name them.
        recipients = list(dict.fromkeys([*to, *cc, *bcc]))
        # the rows point at ``out`` itself: its id comes with the flush at commit,
        # which then writes the whole transaction's rows together
        session.add(
            Outbox(
                ticket_id=ticket.id,
                message=out,
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
                message=out,
                text=template,
            )
        )
        ticket.message_count = (ticket.message_count or 0) + 1
        counted = (
            [policy.limit_key(a) for a in recipients if a not in internal]
            if automatic is not None
            else []
        )
        for key in counted:
            session.add(AutomaticSend(address=key, at=now, ticket_id=ticket.id, template=template))
        if known is not None:
            known.queued(ticket.id, out, recipients, counted, now)
        planned = PlannedMail(template, tuple(to), tuple(cc), rendered.subject, message_id)
        if outcome is not None:
            outcome.sends.append(planned)
        return planned

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
        rows: Sequence[ChainRow | Row[Any]] = (
            known.chain.get(ticket.id, [])
            if known is not None
            else (
                await session.execute(
                    select(
                        Message.message_id,
                        Message.direction,
                        Message.from_addr,
                        Message.to_addrs,
                        Message.cc_addrs,
                        Outbox.rcpt_tos,
                    )
                    .outerjoin(Outbox, Outbox.message_pk == Message.id)
                    .where(Message.ticket_id == ticket.id)
                    .order_by(Message.id.desc())
                    .limit(CHAIN_LOOKBACK)
                )
            ).all()
        )
        mails = [
            Seen(
                message_id=mid,
                senders=frozenset([sender] if direction == "in" and sender else []),
                readers=frozenset([*(to or []), *(cc or []), *(rcpts or [])]),
            )
            for mid, direction, sender, to, cc, rcpts in reversed(rows)
        ]
        internal = self.config.internal_addresses
        if for_stewards:
            # every address of each steward it goes to: a steward may write from another
            audience = frozenset(a for r in named for a in self._all_addresses_of(r)) - {
                self.config.support.address
            }
        else:
            people = {ticket.requester, *ticket.cc, *named}
            audience = frozenset(a for a in people if a and a not in internal)
        opening = (
            known.opening.get(ticket.id)
            if known is not None
            else await session.scalar(
                select(Message.message_id)
                .where(Message.ticket_id == ticket.id)
                .order_by(Message.id)
                .limit(1)
            )
        )
        root = ticket_root(ticket.id, self.config.support.message_id_domain)
        return reply_chain(
            mails, audience, trigger, root, opening=opening, prefer_own=not for_stewards
        )

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

    def steward_addresses(self, names: Sequence[str]) -> list[str]:
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
        outcome: Outcome,
    ) -> PlannedMail | None:
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
            outcome=outcome,
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
        side: policy.Standing = "requester",
        verdict: authn.Verdict | None = None,
        status_before: str | None = None,
    ) -> None:
        """Queue the automatic mails this mail calls for (``oversize``: a too-large size;
        ``status_before``: the ticket's status before this mail changed it)."""
        too_large = oversize > 0
        decision = outcome.decision
        extra = {
            "quoted_tag": decision.quoted_tag if decision else None,
            "not_on_ticket": side == "stranger",
            "cc_refused": next((p for p in outcome.policy if p.startswith("cc not changed")), None),
            "status_before": status_before,
        }
        ctx = self._context(ticket, mail, {**extra, **self._size_context(oversize)})
        sender = mail.from_addr or ""
        stewards = self.steward_addresses(on_duty(self.config, now))
        # the stewards' index shows who wrote, as mailing lists do ("Rita Rep via Support")
        writer = policy.clip(mail.from_name or "", 64)[0].strip() or sender or "unknown sender"
        via = f"{writer} via {self.config.support.name}"

        if action == "created" and cls.role != "steward":
            why_not = self._may_answer(sender, cls, verdict)
            if why_not is None:
                template = "too_large" if too_large else "ack"
                await self._answer(session, ticket, template, ctx, sender, message, now, outcome)
            else:
                outcome.suppressed.append(f"ack: {why_not}")
                outcome.policy.append(f"no acknowledgment: {why_not}")
                self.suppressed_note(session, ticket, "acknowledgment", why_not, now)
            if cls.kind not in ("bounce", "own") and stewards:
                await self.queue_mail(
                    session,
                    ticket,
                    "steward_new",
                    ctx,
                    to=stewards,
                    reply_to_mail=message,
                    automatic="auto-generated",
                    now=now,
                    from_name=via,
                    attachments=self.forwarded(mail),
                    outcome=outcome,
                )
        elif action == "appended" and cls.role != "steward" and not cls.automated:
            if too_large and side != "stranger" and self._may_answer(sender, cls, verdict) is None:
                await self._answer(session, ticket, "too_large", ctx, sender, message, now, outcome)
            to = await self._working_stewards(session, ticket, now)
            if to:
                await self.queue_mail(
                    session,
                    ticket,
                    "requester_reply",
                    ctx,
                    to=to,
                    reply_to_mail=message,
                    automatic="auto-generated",
                    now=now,
                    from_name=via,
                    attachments=self.forwarded(mail),
                    outcome=outcome,
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
        return self.steward_addresses(chosen)

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

    def _all_addresses_of(self, addr: str) -> tuple[str, ...]:
        """Every address of the steward who has ``addr`` (just ``addr`` for anyone else)."""
        steward = self.config.steward_by_address(addr)
        return steward.addresses if steward is not None else (addr,)

    def _other_stewards(self, steward: Steward | None, now: datetime) -> list[str]:
        names = [n for n in on_duty(self.config, now) if steward is None or n != steward.name]
        return self.steward_addresses(names)

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
        """A steward wrote: check, apply the tags, relay, answer errors.

        Only a mail that is authenticated (or from a lab that does not require
        it) applies at once; any other is held until its steward confirms it
        with the token maild mails to the steward's own address (SPEC 11).
        """
        ctx = self._context(ticket, mail)
        sender = mail.from_addr or sm.steward.addresses[0]
        if oversize:
            # only the headers were kept: relaying would send an empty reply
            outcome.reason += "; too large: kept as a note, nothing applied or relayed"
            ctx.update(self._size_context(oversize))
            await self._answer(session, ticket, "too_large", ctx, sender, message, now, outcome)
            return
        if sm.confirm is not None:
            await self._confirm(session, ticket, mail, message, sm, outcome, now)
            return
        if sm.parsed.errors:
            outcome.reason += "; bad tags: nothing applied, kept as a note"
            ctx.update(errors=sm.parsed.errors, accepted=list(ACCEPTED.values()))
            await self._answer(session, ticket, "command_error", ctx, sender, message, now, outcome)
            return
        planned = plan(ticket, sm.parsed, sm.steward.name, self.config)
        if planned.errors:
            message.is_note = True
            outcome.reason += "; a command cannot be carried out: nothing applied, kept as a note"
            errors = [_PlanError(*e.split(": ", 1)) for e in planned.errors]
            ctx.update(errors=errors, accepted=list(ACCEPTED.values()))
            await self._answer(session, ticket, "command_error", ctx, sender, message, now, outcome)
            return
        if planned.canned and not planned.note and not planned.silent:
            try:  # a broken override is a bad tag, not a lost mail
                self.renderer.canned(planned.canned, self._canned_context(ticket, sm.steward, now))
            except TemplateError as exc:
                message.is_note = True
                outcome.reason += "; the canned reply failed: nothing applied or relayed"
                bad = [_PlanError(f"[reply={planned.canned}]", str(exc))]
                ctx.update(errors=bad, accepted=list(ACCEPTED.values()))
                await self._answer(
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
        await self._carry_out(
            session, ticket, planned, steward.name, steward, now, outcome,
            reply=(mail, message),
        )  # fmt: skip
        await self._postmortem_mail(session, ticket, before, now, outcome)
        if self.config.commands.receipts == "always" and planned.changes:
            ctx = self._context(ticket, mail, {"changes": planned.describe()})
            sender = mail.from_addr or steward.addresses[0]
            await self._answer(session, ticket, "receipt", ctx, sender, message, now, outcome)

    async def _hold(
        self,
        session: AsyncSession,
        ticket: Ticket,
        mail: InboundMail,
        message: Message,
        sm: _StewardMail,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """Keep an unauthenticated steward mail as a note and ask its steward to confirm."""
        token = secrets.token_urlsafe(12)
        expires = now + self.config.commands.confirm_within
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
        session.add(Event(ticket_id=ticket.id, at=now, kind="note", actor="maild", text=line))
        # to the steward's configured address (the From is one), never to Reply-To
        to = mail.from_addr if mail.from_addr in sm.steward.addresses else sm.steward.addresses[0]
        ctx = self._context(
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
        await self.queue_mail(
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
        sm: _StewardMail,
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
            ctx = self._context(ticket, mail)
            ctx.update(errors=[_PlanError(f"[confirm={token}]", problem or "")], accepted=[])
            await self._answer(session, ticket, "command_error", ctx, sender, message, now, outcome)
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
        session.add(Event(ticket_id=target.id, at=now, kind="note", actor="maild", text=line))
        on_behalf = parsed.get("requester")
        if (
            on_behalf is not None
            and on_behalf.value
            and target.requester in sm.steward.addresses
            and target.message_count <= 2
        ):
            # a held "open a ticket for someone" mail: the ticket becomes theirs now
            await self._change_requester(session, target, on_behalf.value, sm.steward.name, now)
        planned = plan(target, parsed, sm.steward.name, self.config)
        if planned.errors:
            ctx = self._context(target, held_mail)
            errors = [_PlanError(*e.split(": ", 1)) for e in planned.errors]
            ctx.update(errors=errors, accepted=list(ACCEPTED.values()))
            await self._answer(session, target, "command_error", ctx, sender, message, now, outcome)
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
        self._change(session, ticket, "requester", old, requester, actor, now)

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
        reply: tuple[InboundMail, Message] | None = None,
    ) -> None:
        """Apply a plan and send what it calls for: the relay, the resolution, the closing."""
        before = ticket.status
        cc_before = set(ticket.cc)
        self.set_fields(session, ticket, planned.changes, actor, now)
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
            if planned.status is None and ticket.status == "new":
                self.set_fields(session, ticket, [Change("status", "new", "open")], actor, now)
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
            # from the ticket, never the steward's own subject: that may be the
            # "Not applied: …" or "Update due: …" mail the steward answered
            subject = f"Re: {tag} {policy.clip(ticket.subject, policy.ACK_SUBJECT_MAX)[0]}"
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
            # the stewards' copy goes to who did not get the steward's mail already
            bcc = [
                a
                for a in self._other_stewards(steward, now)
                if not any(d in direct for d in self._all_addresses_of(a))
            ]
            await self.queue_mail(
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
                from_name=f"{display} (Support)",
                attachments=self.forwarded(mail),
                outcome=outcome,
            )
            return
        if planned.silent or requester_is_steward or not ticket.requester:
            return
        # no relay (an operator's command): the requester still hears of the outcome
        if ticket.status == before:
            return
        if ticket.status == "closed":
            ctx = self.ticket_context(ticket, {"reason": None})
            await self.notify_requester(
                session, ticket, "closed", ctx, "closed notice", now, outcome
            )
        elif ticket.status == "resolved":
            tag = f"[{self.config.support.tag} #{ticket.id}]"
            ctx = self.ticket_context(
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
            await self.notify_requester(
                session, ticket, template, ctx, "resolved notice", now, outcome
            )

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
            else self.steward_addresses(on_duty(self.config, now))
        )
        if not to:
            return
        await session.flush()
        data = await postmortem(session, self.config, ticket.id, now)
        if data is None:
            return
        await self.queue_mail(
            session,
            ticket,
            "postmortem",
            postmortem_context(self.config, data),
            to=to,
            reply_to_mail=await self.latest_message(session, ticket),
            automatic="auto-generated",
            now=now,
            outcome=outcome,
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
        blocked = self.requester_blocked(ticket)
        if blocked is not None:
            self.suppressed_note(session, ticket, what, blocked, now)
            if outcome is not None:
                outcome.suppressed.append(f"{what}: {blocked}")
            return None
        await self._greet(session, ticket, ctx, known)
        return await self.queue_mail(
            session,
            ticket,
            template,
            ctx,
            to=[ticket.requester],
            cc=list(ticket.cc),
            reply_to_mail=(
                known.requester_last.get(ticket.id)
                if known is not None
                else await self._last_requester_message(session, ticket)
            ),
            automatic="auto-generated",
            now=now,
            outcome=outcome,
            known=known,
        )

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
        return self.ticket_context(
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
