"""One mail, start to end: parse, classify, thread, decide, commit.

Every mail is handled in exactly one database transaction: the ticket change,
the stored message, its timeline events and every outbox row it causes commit
together or not at all. Whatever goes wrong with one mail sends it to
quarantine with the reason and the raw bytes; the caller carries on with the
next one. The daemon and ``maild ingest`` both call :meth:`Pipeline.ingest`,
so they decide and queue exactly the same.

The pipeline decides; the parts it composes carry out: a steward's mail goes
to :class:`~maild.service.steward.Stewards`, every mail maild sends is queued
by :class:`~maild.service.outgoing.Outgoing`, and every timeline row is
written by :func:`maild.store.timeline.record`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, Select, bindparam, func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from maild.config import Config
from maild.core import policy
from maild.core.classify import Classification, classify, why_not_answer
from maild.core.conversation import (
    Candidates,
    Decision,
    TicketView,
    decide,
    referenced_ids,
    thread_root,
)
from maild.core.inbound import InboundMail
from maild.core.intake import Parsed, header_only, parse_for_ingest
from maild.core.lifecycle import is_confirmation
from maild.core.roster import on_duty
from maild.core.routing import reply_recipients
from maild.core.subjects import (
    clean_subject,
    find_ticket_refs,
    is_reply_subject,
    normalize_for_match,
)
from maild.core.workhours import Calendar
from maild.mail import authn
from maild.mail.outbox import fold_journaled
from maild.mail.render import Renderer, new_thread_root
from maild.service.outcome import Action, Outcome, PlannedMail
from maild.service.outgoing import Outgoing, forwarded
from maild.service.steward import StewardMail, Stewards
from maild.store.batch import (
    STEWARDS_WHO_WROTE,
    ReplyLookups,
    TicketLookups,
    flush_in_bulk,
    forget_reply,
    load_reply,
)
from maild.store.dues import refresh_dues
from maild.store.inline import StoreThread
from maild.store.models import (
    Attachment,
    Message,
    Outbox,
    Participant,
    Quarantine,
    Ticket,
)
from maild.store.timeline import move, record
from maild.store.views import as_view, ticket_views

__all__ = ["Action", "Outcome", "Pipeline", "PlannedMail"]

log = logging.getLogger(__name__)

_SUBJECT_KEY_MAX = 500


# built once: a statement built per mail costs more than SQLite takes to run it
# the stored mails of some Message-IDs, with their tickets and each ticket's participants'
# addresses as a JSON array (rule 1 decides on those: no look-up of its own for them);
# JSON, not a joined string, since an address may hold any separator
def _stored_with_tickets(members: ColumnElement[Any]) -> Select[str, Ticket, list[str] | None]:
    return (
        select(
            Message.message_id,
            Ticket,
            select(members)
            .where(Participant.ticket_id == Ticket.id)
            .scalar_subquery()
            .label("members"),
        )
        .join(Ticket, Ticket.id == Message.ticket_id)
        .where(Message.message_id.in_(bindparam("ids", expanding=True)))
    )


_STORED_WITH_TICKETS = _stored_with_tickets(func.json_group_array(Participant.address, type_=JSON))
# PostgreSQL: the same, the tickets locked as they are read (the ticket a reply joins is
# almost always one of them: no second read to lock it), their stored values read anew
_STORED_WITH_TICKETS_LOCKED = (
    _stored_with_tickets(func.json_agg(Participant.address, type_=JSON))
    .with_for_update(of=Ticket)
    .execution_options(populate_existing=True)
)


class _DryRun(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


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
        self.outgoing = Outgoing(config, self.renderer)
        self.stewards = Stewards(config, self.renderer, self.calendar, self.outgoing)
        # None: maild.mail.authn.dns_txt, looked up at each use (tests swap in their own)
        self.dns_lookup = dns_lookup

    def reconfigure(self, config: Config, renderer: Renderer) -> None:
        """Take a reloaded config and its checked templates (the daemon's SIGHUP)."""
        self.config = config
        self.renderer = renderer
        self.calendar = Calendar(config.hours)
        self.outgoing.reconfigure(config, renderer)
        self.stewards.reconfigure(config, renderer, self.calendar)

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
        self,
        raw: bytes,
        source: str,
        now: datetime,
        *,
        dry_run: bool = False,
        parsed: Parsed | None = None,
    ) -> Outcome:
        """Process one mail in one transaction. Never raises for bad input.

        With ``dry_run`` everything is decided and written, then rolled back,
        so the outcome shows exactly what a real run would do. ``parsed``:
        :func:`maild.core.intake.parse_for_ingest` of ``raw``, if the caller
        has it already (parsed in another process).
        """
        if parsed is None:
            parsed = parse_for_ingest(raw, self.config.tickets.max_message_bytes)
        mail = parsed.mail
        if mail is None:
            reason = f"unparseable: {parsed.error}"
            return await self._quarantine(raw, source, None, reason, now, dry_run)
        verdict = await self.verdict(parsed, raw)

        async def transaction(sessions: async_sessionmaker[AsyncSession]) -> Outcome:
            async with sessions() as session:
                return await self._decide(
                    session, False, mail, raw, source, now, parsed.too_large, verdict, dry_run
                )

        try:
            if self.store is not None:
                # the whole transaction in the store's thread: one hop, not ~100
                outcome = await self.store.run(transaction)
            else:
                outcome = await transaction(self.sessions)
            if outcome.dry_run:
                return outcome
        except Exception as exc:
            async with self.sessions() as session:
                failed = await self._failed(session, exc, mail, source)
            if failed.action == "quarantined":
                return await self._quarantine(
                    raw, source, mail.message_id, failed.reason, now, dry_run
                )
            return failed
        self._log(outcome)
        return outcome

    async def verdict(self, parsed: Parsed, raw: bytes) -> authn.Verdict | None:
        """The authentication verdict on a parsed mail (None: not asked, or too large)."""
        if parsed.mail is None or parsed.too_large:
            return None
        return await self._verdict(parsed.mail, raw)

    async def ingest_within(
        self,
        session: AsyncSession,
        raw: bytes,
        source: str,
        now: datetime,
        parsed: Parsed,
        verdict: authn.Verdict | None,
        *,
        dry_run: bool = False,
        alone: bool = True,
    ) -> Outcome:
        """Process one mail in a SAVEPOINT of the caller's transaction (many mails, one commit).

        A mail that fails is rolled back to its savepoint alone and its
        quarantine row added to the transaction: the others stay. With
        ``dry_run`` the savepoint is always rolled back. Store errors
        (``OperationalError``, ``InterfaceError``) propagate: the whole
        transaction is lost and the caller keeps every mail of it.
        Nothing is logged as stored here: the caller logs the outcomes
        (:meth:`log_outcome`) once the transaction committed.

        ``alone`` False: no savepoint, and whatever the mail raises propagates
        (the caller rolls the whole transaction back and goes again with a
        savepoint a mail, see :func:`maild.service.batch.commit_chunk`).
        """
        mail = parsed.mail
        if mail is None:
            failed = Outcome(source, None, None, "quarantined", f"unparseable: {parsed.error}")
        elif not alone and not dry_run:
            outcome = await self._process(
                session, mail, raw, source, now, parsed.too_large, verdict
            )
            await flush_in_bulk(session)
            return outcome
        else:
            try:
                return await self._decide(
                    session, True, mail, raw, source, now, parsed.too_large, verdict, dry_run
                )
            except Exception as exc:
                failed = await self._failed(session, exc, mail, source)
        if failed.action == "quarantined" and not dry_run:
            session.add(self._quarantine_row(raw, failed, now))
        return failed

    async def _decide(
        self,
        session: AsyncSession,
        nested: bool,
        mail: InboundMail,
        raw: bytes,
        source: str,
        now: datetime,
        too_large: bool,
        verdict: authn.Verdict | None,
        dry_run: bool,
    ) -> Outcome:
        """:meth:`_process` in a transaction of ``session`` (a SAVEPOINT if ``nested``),
        committed, or rolled back for a dry run: the outcome either way."""
        try:
            async with session.begin_nested() if nested else session.begin():
                outcome = await self._process(session, mail, raw, source, now, too_large, verdict)
                if dry_run:
                    raise _DryRun(outcome)
                # the mail's rows: its messages and the ticket in one flush, the rows
                # nobody reads back (events, outbox, ...) an INSERT per table
                await flush_in_bulk(session)
        except _DryRun as dry:
            dry.outcome.dry_run = True
            return dry.outcome
        return outcome

    async def _failed(
        self, session: AsyncSession, exc: Exception, mail: InboundMail, source: str
    ) -> Outcome:
        """What a mail whose transaction raised ``exc`` became: a duplicate or quarantined.

        Store errors are re-raised: not the mail's fault, the transport keeps
        the mail (IMAP leaves it, LMTP answers 451).
        """
        if isinstance(exc, OperationalError | InterfaceError):
            raise exc
        if isinstance(exc, IntegrityError):
            # Another process stored the same Message-ID between our check and
            # our insert: a duplicate, and nothing of ours was committed. Any
            # other constraint failing is a bug to look at, not a reason to drop
            # the mail: quarantine it.
            owner = await session.scalar(
                select(Message.ticket_id).where(Message.message_id == mail.message_id)
            )
            if owner is not None:
                return Outcome(
                    source, mail.message_id, owner, "duplicate", f"Message-ID already on #{owner}"
                )
            reason = f"processing failed: {type(exc).__name__}: {exc.orig}"
        else:
            log.exception("processing failed for Message-ID <%s>", mail.message_id, exc_info=exc)
            reason = f"processing failed: {type(exc).__name__}: {exc}"
        return Outcome(source, mail.message_id, None, "quarantined", reason)

    def log_outcome(self, outcome: Outcome) -> None:
        """Log what became of a mail: stored, a duplicate, or quarantined."""
        if outcome.action == "quarantined":
            log.warning(
                "quarantined %s message_id=<%s>: %s",
                outcome.source,
                outcome.message_id,
                outcome.reason,
            )
        else:
            self._log(outcome)

    def _log(self, outcome: Outcome) -> None:
        log.info(
            "%s ticket=#%s message_id=<%s> %s",
            outcome.action,
            outcome.ticket,
            outcome.message_id,
            outcome.reason,
        )

    @staticmethod
    def _quarantine_row(raw: bytes, outcome: Outcome, now: datetime) -> Quarantine:
        return Quarantine(
            at=now,
            source=outcome.source,
            message_id=outcome.message_id,
            reason=outcome.reason,
            raw=raw,
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
            session.add(self._quarantine_row(raw, outcome, now))
        self.log_outcome(outcome)
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
        # one look-up: is the mail stored already, and which tickets hold the mails it names
        forget_reply(session)
        refs = referenced_ids(mail)[:100]
        # PostgreSQL: lock the tickets it reads, so the scheduler cannot change the one
        # this mail joins under us (SQLite's WAL refuses a stale writer by itself)
        lock = session.get_bind().dialect.name == "postgresql"
        rows = (
            await session.execute(
                _STORED_WITH_TICKETS_LOCKED if lock else _STORED_WITH_TICKETS,
                {"ids": [mail.message_id, *refs]},
            )
        ).all()
        existing = next((t.id for mid, t, _ in rows if mid == mail.message_id), None)
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

        referenced = [
            (mid, as_view(ticket, members or ()))
            for mid, ticket, members in rows
            if mid != mail.message_id
        ]
        candidates = await self._candidates(session, mail, referenced, now)
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
            # PostgreSQL: lock the row unless the first look-up did (a ticket found by
            # the later rules); SQLite: the candidate look-up just read the row in this
            # transaction, no second query
            locked = lock and any(t.id == decision.ticket_id for _, t, _ in rows)
            existing_ticket = await session.get(
                Ticket, decision.ticket_id, with_for_update=lock and not locked
            )
            if existing_ticket is None:  # the candidate look-up just returned it
                raise LookupError(f"ticket #{decision.ticket_id} vanished")

        steward = StewardMail.read(
            self.config,
            mail,
            cls,
            existing_ticket,
            verdict,
            too_large,
            self.renderer,
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
        received = record(
            session,
            ticket.id,
            now,
            "note" if message.is_note else "received",
            cls.steward.name if cls.steward else (mail.from_addr or ""),
            message=message,
            text=decision.reason,
        )
        if steward is not None:
            outcome.commands = [c.source for c in steward.parsed.commands]
            outcome.command_errors = [f"{e.tag}: {e.message}" for e in steward.parsed.errors]
        if decision.follow_up_of is not None:
            record(session, ticket.id, now, "note", text=f"follow-up to #{decision.follow_up_of}")
            record(
                session,
                decision.follow_up_of,
                now,
                "note",
                text=f"follow-up opened as #{ticket.id}",
            )
        if decision.quoted_tag is not None:
            record(
                session,
                ticket.id,
                now,
                "note",
                text=(
                    f"the sender quoted the tag [#{decision.quoted_tag}] of a ticket "
                    "they are not on; opened a ticket of their own"
                ),
            )

        reply: ReplyLookups | None = None
        if steward is not None:
            await self.stewards.handle(
                session, ticket, mail, message, steward, outcome, now, len(raw) if too_large else 0
            )
            if message.is_note and received is not None:
                received.kind = "note"
        else:
            side: policy.Standing = "requester"
            status_before = ticket.status
            if action == "appended" and not cls.automated:
                # the reply's look-ups (reminders, stewards who wrote, its reply chain's
                # stored mails) in one round trip, before this mail's rows change anything
                names = [s.name for s in self.config.stewards]
                reply = await load_reply(session, ticket.id, names)
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
                reply,
            )
        ticket.updated_at = now
        ticket.last_activity_at = now
        # only the scheduler records reminders: a ticket opened here has none
        sent = frozenset[tuple[str, str]]() if action == "created" else None
        if reply is not None:
            sent = reply.reminders
        await refresh_dues(session, ticket, self.config, self.calendar, sent)
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
        # sent a moment ago, its outcome may still wait in the outcome journal
        claimed = {row.id for row in rows if row.claimed_by}
        if await fold_journaled(session, self.config.database.url, claimed):
            for row in rows:
                if row.id in claimed:  # the others the fold's UPDATE left alone
                    await session.refresh(row)
        for row in rows:
            if row.status == "sent":  # a report cannot be about mail not yet sent
                row.status = "bounced"
                row.last_error = (mail.new_text or mail.text)[:2000]
        reason = f"bounce of our message <{original.message_id}> on #{ticket.id}"
        record(
            session,
            ticket.id,
            now,
            "received",
            mail.from_addr or "",
            message=message,
            text=reason,
        )
        return Outcome(source, mail.message_id, ticket.id, "appended", reason, cls)

    async def _candidates(
        self,
        session: AsyncSession,
        mail: InboundMail,
        referenced: Sequence[tuple[str, TicketView]],
        now: datetime,
    ) -> Candidates:
        """The tickets each threading rule points at. ``referenced``: the stored mails the
        mail names (In-Reply-To, References) with their tickets, looked up already."""
        if referenced:
            # rule 1 decides; the later rules' look-ups would be wasted
            return Candidates(dict(referenced))

        rooted: Ticket | None = None
        root = thread_root(mail.thread_index)
        if root is not None:
            rooted = await session.scalar(
                select(Ticket).where(Ticket.thread_root == root).order_by(Ticket.id.desc()).limit(1)
            )

        numbered: Sequence[Ticket] = ()
        numbers = find_ticket_refs(mail.subject, self.config.support.tag)[:20]
        if numbers:
            numbered = (await session.scalars(select(Ticket).where(Ticket.id.in_(numbers)))).all()

        by_subject: Sequence[Ticket] = ()
        if mail.from_addr and is_reply_subject(mail.subject):
            key = normalize_for_match(mail.subject, self.config.support.tag)[:_SUBJECT_KEY_MAX]
            since = now - timedelta(days=self.config.tickets.subject_match_days)
            by_subject = (
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
        # every candidate's participants in one look-up
        views = await ticket_views(
            session, [*([rooted] if rooted is not None else []), *numbered, *by_subject]
        )
        return Candidates(
            {},
            views[rooted.id] if rooted is not None else None,
            {t.id: views[t.id] for t in numbered},
            [views[t.id] for t in by_subject],
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
                record(
                    session,
                    ticket.id,
                    now,
                    "change",
                    actor,
                    field="cc",
                    old=", ".join(old),
                    new=", ".join(ticket.cc),
                )
        if decision.reason:
            shown = ", ".join(decision.refused[:5]) + (" …" if len(decision.refused) > 5 else "")
            line = f"cc not changed ({shown}): {decision.reason}"
            outcome.policy.append(line)
            record(session, ticket.id, now, "note", text=line)

    async def _create(
        self,
        session: AsyncSession,
        mail: InboundMail,
        cls: Classification,
        decision: Decision,
        now: datetime,
        steward: StewardMail | None,
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
        """Add the inbound message and its attachments (not flushed: rows that point at
        it take the object, and get its id at the flush)."""
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
            raw=header_only(raw) if stub else raw,
        )
        session.add(message)
        ticket.message_count = (ticket.message_count or 0) + 1
        for att in mail.attachments:
            session.add(
                Attachment(
                    message=message,
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
            record(session, ticket.id, now, "note", text=line)
            outcome.reason += f"; {actor or 'the sender'} is not on this ticket"
            return side
        if cls.automated:
            return side
        ticket.last_requester_at = now
        self._cc_from(session, ticket, mail, side, actor, outcome, now)
        confirmed = self.config.tickets.confirmation_closes and is_confirmation(mail.new_text)
        if move(session, ticket, "confirm" if confirmed else "reply", actor, now) == "closed":
            outcome.reason += "; the requester confirmed the fix, so the ticket is closed"
            closing = self.outgoing.context(ticket, mail, {"reason": "you confirmed the fix"})
            await self.outgoing.greet(session, ticket, closing)
            await self.outgoing.queue(
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
        return side

    # -- the mails this mail calls for -------------------------------------------

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
        reply: ReplyLookups | None = None,
    ) -> None:
        """Queue the automatic mails this mail calls for (``oversize``: a too-large size;
        ``status_before``: the ticket's status before this mail changed it; ``reply``: the
        look-ups of a reply, done already)."""
        too_large = oversize > 0
        decision = outcome.decision
        extra = {
            "quoted_tag": decision.quoted_tag if decision else None,
            "not_on_ticket": side == "stranger",
            "cc_refused": next((p for p in outcome.policy if p.startswith("cc not changed")), None),
            "status_before": status_before,
        }
        ctx = self.outgoing.context(ticket, mail, {**extra, **self.outgoing.size_context(oversize)})
        sender = mail.from_addr or ""
        stewards = self.outgoing.steward_addresses(on_duty(self.config, now))
        # the stewards' index shows who wrote, as mailing lists do ("Rita Rep via Support")
        writer = policy.clip(mail.from_name or "", 64)[0].strip() or sender or "unknown sender"
        via = f"{writer} via {self.config.support.name}"

        why_not = why_not_answer(sender, cls, self.config, dmarc_fail=_dmarc_fail(verdict))
        if action == "created" and cls.role != "steward":
            # the ticket's one mail is this one: its reply chain needs no look-up
            known = TicketLookups.opened(ticket, message, now)
            if why_not is None:
                template = "too_large" if too_large else "ack"
                await self.outgoing.answer(
                    session, ticket, template, ctx, sender, message, now, outcome, known
                )
            else:
                outcome.suppressed.append(f"ack: {why_not}")
                outcome.policy.append(f"no acknowledgment: {why_not}")
                self.outgoing.suppressed_note(session, ticket, "acknowledgment", why_not, now)
            if cls.kind not in ("bounce", "own") and stewards:
                await self.outgoing.queue(
                    session,
                    ticket,
                    "steward_new",
                    ctx,
                    to=stewards,
                    reply_to_mail=message,
                    automatic="auto-generated",
                    now=now,
                    from_name=via,
                    attachments=forwarded(mail),
                    outcome=outcome,
                    known=known,
                )
        elif action == "appended" and cls.role != "steward" and not cls.automated:
            if too_large and side != "stranger" and why_not is None:
                await self.outgoing.answer(
                    session, ticket, "too_large", ctx, sender, message, now, outcome
                )
            to = await self._working_stewards(session, ticket, now, reply)
            if to:
                await self.outgoing.queue(
                    session,
                    ticket,
                    "requester_reply",
                    ctx,
                    to=to,
                    reply_to_mail=message,
                    automatic="auto-generated",
                    now=now,
                    from_name=via,
                    attachments=forwarded(mail),
                    outcome=outcome,
                )

    async def _working_stewards(
        self, session: AsyncSession, ticket: Ticket, now: datetime, reply: ReplyLookups | None
    ) -> list[str]:
        """Addresses of who works the ticket (assignee, IC, stewards who wrote on it),
        else of the stewards on duty: who a requester's reply goes to."""
        if reply is not None:
            actors = reply.stewards_who_wrote
        else:
            names = {s.name for s in self.config.stewards}
            # no flush: this mail's own rows are not a steward's (its sender is no steward)
            with session.no_autoflush:
                found = await session.scalars(
                    STEWARDS_WHO_WROTE, {"ticket_id": ticket.id, "names": sorted(names)}
                )
            actors = list(found.all())
        chosen = reply_recipients(
            ticket.assignee, ticket.incident_commander, actors, on_duty(self.config, now)
        )
        return self.outgoing.steward_addresses(chosen)


def _dmarc_fail(verdict: authn.Verdict | None) -> bool:
    return verdict is not None and verdict.dmarc_fail
