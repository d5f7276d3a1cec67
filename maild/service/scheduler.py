"""Due work, found with one indexed query per pass: auto-close, incident updates,
nudges, SLA reminders and the roster handoff.

A pass asks the store only for tickets whose ``next_action_at`` has come, and
handles them in batches: one transaction per batch writes the outbox rows and
records what it did (reminders in the ``reminders`` table, updates in
``last_update_at``), so repeating a pass, or a restart in the middle of one,
sends nothing twice. What the batch's mail needs from the store is looked up
for the whole batch at once (:class:`maild.store.batch.TicketLookups`). A
ticket that fails inside a batch undoes the batch; the others are done again
without it and it is tried alone, in its own transaction, and put off for
a while if it fails again: one broken ticket never holds up the rest. After
downtime each ticket gets at most one catch-up action of each kind: the next
update is planned from now, not from when it was missed.

Why not a savepoint per ticket: with SQLite's driver a transaction only
begins at its first write, so a savepoint opened first is a transaction of
its own, committed by its release whatever happens to the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer

from maild.config import Config
from maild.core import policy
from maild.core.roster import duty_at
from maild.mail.render import support_context
from maild.service.pipeline import Outcome, Pipeline
from maild.store.batch import TicketLookups, flush_in_bulk, keep_for_bulk, write_later
from maild.store.dues import refresh_dues, reminders_sent
from maild.store.models import Message, Reminder, State, Ticket
from maild.store.queries import ACTIVE_STATUSES
from maild.store.reports import (
    BUDGET_THRESHOLDS,
    budget_use,
    month_key,
    weekly_report,
    weekly_slot,
)
from maild.store.timeline import move

__all__ = ["PassResult", "Scheduler"]

log = logging.getLogger(__name__)

# due tickets asked for, and handled in one transaction, at a time
_BATCH = 200
# failures inside one batch after which its other tickets go one at a time
_BATCH_FAILURES = 3
RETRY_FAILED = timedelta(minutes=10)
_KIND_TEXT = {
    "triage": "triage (setting the ticket type)",
    "first_response": "the first response to the requester",
    "nudge": "the next incident update",
}


@dataclass
class PassResult:
    """What one pass did: the number of mails queued and a line per action."""

    sent: int = 0
    actions: list[str] = field(default_factory=list)

    def add(self, other: PassResult) -> None:
        self.sent += other.sent
        self.actions += other.actions


class _TicketFailed(Exception):
    """A ticket's work raised inside a batch; the batch was rolled back."""

    def __init__(self, ticket_id: int) -> None:
        super().__init__(f"ticket #{ticket_id}")
        self.ticket_id = ticket_id


def local(config: Config, at: datetime | None) -> str:
    """A due time as the stewards read it: local time in the working-hours zone."""
    if at is None:
        return "-"
    return at.astimezone(ZoneInfo(config.hours.timezone)).strftime("%a %Y-%m-%d %H:%M %Z")


class Scheduler:
    def __init__(
        self, config: Config, sessions: async_sessionmaker[AsyncSession], pipeline: Pipeline
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.pipeline = pipeline
        self.outgoing = pipeline.outgoing

    async def run_pass(self, now: datetime) -> PassResult:
        """Do everything due at ``now`` (aware)."""
        result = PassResult()
        await self._handoff(now, result)
        await self._budget_warnings(now, result)
        await self._weekly_report(now, result)
        seen: set[int] = set()
        while True:
            async with self.sessions() as session:
                ids = [
                    i
                    for i in (
                        await session.scalars(
                            select(Ticket.id)
                            .where(Ticket.next_action_at <= now)
                            .order_by(Ticket.next_action_at, Ticket.id)
                            .limit(_BATCH)
                        )
                    ).all()
                    if i not in seen
                ]
            if not ids:
                break
            seen.update(ids)
            await self._batch(ids, now, result)
        return result

    async def _batch(self, ids: list[int], now: datetime, result: PassResult) -> None:
        """The due tickets ``ids`` in one transaction; any that fails, alone.

        After a few failures in one batch (a broken template fails them all) the
        rest go one at a time, so a batch never costs a retry per ticket. A batch
        that fails as a whole (another pass did some of its work, or the store
        refuses a row at the bulk write) goes one at a time: the ticket at fault
        is put off alone and every other one still gets its mail.
        """
        pending = list(ids)
        failures = 0
        while pending:
            try:
                await self._together(pending, now, result)
                return
            except _TicketFailed as failed:
                log.info(
                    "ticket #%s failed inside a batch (%s); doing the batch without it",
                    failed.ticket_id,
                    failed.__cause__,
                )
                pending.remove(failed.ticket_id)
                await self._alone(failed.ticket_id, now, result)
                failures += 1
                if failures < _BATCH_FAILURES:
                    continue
                log.info("%d tickets failed inside one batch; the rest one at a time", failures)
            except (OperationalError, InterfaceError):
                raise  # the store is away (or the lease lost): the pass retries later
            except Exception as exc:
                log.info("a batch of due tickets failed as a whole (%s); one at a time", exc)
            for ticket_id in pending:
                await self._alone(ticket_id, now, result)
            return

    async def _together(self, ids: list[int], now: datetime, result: PassResult) -> None:
        done = PassResult()
        async with self.sessions() as session, session.begin():
            # nothing in the batch reads its messages, reminders, events and outbox
            # rows back: they are written as plain rows by flush_in_bulk, not built
            # as ORM objects
            write_later(session)
            stmt = (
                select(Ticket)
                .where(Ticket.id.in_(ids), Ticket.next_action_at <= now)
                .order_by(Ticket.next_action_at, Ticket.id)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            tickets = (await session.scalars(stmt)).all()
            keys = {policy.limit_key(a) for t in tickets for a in (t.requester, *t.cc) if a}
            known = await TicketLookups.load(session, tickets, keys, now)
            for ticket in tickets:
                try:
                    await self._ticket(session, ticket, now, done, known)
                except (OperationalError, InterfaceError):
                    raise  # the store is away (or the lease lost): the pass retries later
                except Exception as exc:
                    raise _TicketFailed(ticket.id) from exc
            await flush_in_bulk(session)
        # committed: only now is it done
        result.add(done)

    async def _alone(self, ticket_id: int, now: datetime, result: PassResult) -> None:
        """One due ticket in its own transaction, put off for a while if it fails."""
        done = PassResult()
        try:
            async with self.sessions() as session, session.begin():
                stmt = select(Ticket).where(Ticket.id == ticket_id)
                if session.get_bind().dialect.name == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                ticket = await session.scalar(stmt)
                if ticket is None or ticket.next_action_at is None or ticket.next_action_at > now:
                    return
                await self._ticket(session, ticket, now, done, None)
        except IntegrityError:
            if not await self._still_due(ticket_id, now):
                # another scheduler did this ticket's work at the same moment
                log.info("ticket #%s was handled by another pass", ticket_id)
                return
            # nobody else did it: the store refuses this ticket's rows (SQLite reports
            # a trigger's or a CHECK's refusal so too), a failure like any other below
            await self._failed(ticket_id, now, result)
            return
        except (OperationalError, InterfaceError):
            raise  # the store is away: the whole pass retries later
        except Exception:
            # one broken ticket (a bad template override...) must not
            # stop the clock for all the others: look again later
            await self._failed(ticket_id, now, result)
            return
        result.add(done)

    async def _failed(self, ticket_id: int, now: datetime, result: PassResult) -> None:
        """Called from an ``except``: log the failure and look at the ticket again later."""
        log.exception("scheduler failed on ticket #%s; retrying it later", ticket_id)
        await self._postpone(ticket_id, now)
        result.actions.append(f"#{ticket_id} failed, postponed")

    async def _still_due(self, ticket_id: int, now: datetime) -> bool:
        async with self.sessions() as session:
            due = await session.scalar(select(Ticket.next_action_at).where(Ticket.id == ticket_id))
        return due is not None and due <= now

    async def _postpone(self, ticket_id: int, now: datetime) -> None:
        async with self.sessions() as session, session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                ticket.next_action_at = now + RETRY_FAILED

    async def _ticket(
        self,
        session: AsyncSession,
        ticket: Ticket,
        now: datetime,
        result: PassResult,
        known: TicketLookups | None,
    ) -> None:
        """The due work of ``ticket`` in ``session``'s transaction; ``known``: the batch's
        look-ups (None: ask the store)."""
        outcome = Outcome(f"tick:{ticket.id}", None, ticket.id, "appended", "scheduler")
        calendar = self.pipeline.calendar
        sent = set(
            known.reminders.get(ticket.id, ())
            if known is not None
            else await reminders_sent(session, ticket.id)
        )
        dues = await refresh_dues(session, ticket, self.config, calendar, sent)

        if dues.close_due_at is not None and dues.close_due_at <= now:
            await self._auto_close(session, ticket, now, outcome, known)
            result.actions.append(f"#{ticket.id} closed after the quiet period")
        elif dues.next_update_at is not None and dues.next_update_at <= now:
            await self._incident_update(session, ticket, now, outcome, known, sent)
            result.actions.append(f"#{ticket.id} incident update")

        due_reminders = [r for r in dues.reminders if r.at <= now]
        breached = {r.kind for r in due_reminders if r.stage == "breach"}
        for reminder in due_reminders:
            row = {
                "ticket_id": ticket.id,
                "kind": reminder.kind,
                "stage": reminder.stage,
                "at": now,
            }
            if not keep_for_bulk(session, Reminder, row, None):
                session.add(Reminder(**row))
            sent.add((reminder.kind, reminder.stage))
            if reminder.stage == "warn" and reminder.kind in breached:
                continue  # caught up late: the breach says it all, once
            if reminder.kind == "nudge" and (
                dues.next_update_at is None or dues.next_update_at <= now
            ):
                continue  # the update itself went out in this pass
            await self._remind(session, ticket, reminder.kind, reminder.stage, now, outcome, known)
            result.actions.append(f"#{ticket.id} reminder {reminder.kind} {reminder.stage}")
        await refresh_dues(session, ticket, self.config, calendar, sent)
        result.sent += len(outcome.sends)

    # -- the actions -----------------------------------------------------------------

    async def _auto_close(
        self,
        session: AsyncSession,
        ticket: Ticket,
        now: datetime,
        outcome: Outcome,
        known: TicketLookups | None,
    ) -> None:
        hours = round(self.config.tickets.auto_close_after.total_seconds() / 3600)
        move(session, ticket, "auto_close", "maild", now)
        ticket.updated_at = now
        ctx = self.outgoing.ticket_context(
            ticket, {"reason": f"no reply for {hours} working hours after it was resolved"}
        )
        sent = await self.outgoing.notify_requester(
            session, ticket, "closed", ctx, "closing notice", now, known=known
        )
        if sent is not None:
            outcome.sends.append(sent)

    async def _incident_update(
        self,
        session: AsyncSession,
        ticket: Ticket,
        now: datetime,
        outcome: Outcome,
        known: TicketLookups | None,
        reminded: set[tuple[str, str]],
    ) -> None:
        since = ticket.last_update_at or ticket.created_at
        latest = (
            known.relay_since_update.get(ticket.id)
            if known is not None
            else await session.scalar(
                select(Message)
                .options(defer(Message.raw))
                .where(
                    Message.ticket_id == ticket.id,
                    Message.direction == "out",
                    Message.template == "relay",
                    Message.at > since,
                )
                .order_by(Message.id.desc())
                .limit(1)
            )
        )
        ticket.last_update_at = now
        dues = await refresh_dues(session, ticket, self.config, self.pipeline.calendar, reminded)
        ctx = self.outgoing.ticket_context(
            ticket,
            {
                "latest_reply": latest.text if latest is not None else None,
                "next_update": local(self.config, dues.next_update_at),
                "since": local(self.config, since),
            },
        )
        sent = await self.outgoing.notify_requester(
            session, ticket, "incident_update", ctx, "incident update", now, known=known
        )
        if sent is not None:
            outcome.sends.append(sent)

    async def _remind(
        self,
        session: AsyncSession,
        ticket: Ticket,
        kind: str,
        stage: str,
        now: datetime,
        outcome: Outcome,
        known: TicketLookups | None,
    ) -> None:
        to: list[str] = []
        if kind == "nudge" and ticket.incident_commander:
            ic = self.config.steward_by_name(ticket.incident_commander)
            if ic is not None:
                to = [ic.addresses[0]]
        if not to and ticket.assignee and kind != "nudge":
            assignee = self.config.steward_by_name(ticket.assignee)
            if assignee is not None:
                to = [assignee.addresses[0]]
        duty = duty_at(self.config, now).on_duty
        for name in duty:
            steward = self.config.steward_by_name(name)
            if steward is not None and steward.addresses[0] not in to and kind != "nudge":
                to.append(steward.addresses[0])
        if not to:
            to = self.outgoing.steward_addresses(duty)
        if not to:
            return
        due = {
            "triage": ticket.triage_due_at,
            "first_response": ticket.response_due_at,
            "nudge": ticket.next_update_at,
        }.get(kind)
        ctx: dict[str, Any] = self.outgoing.ticket_context(
            ticket,
            {
                "kind": kind,
                "what": _KIND_TEXT.get(kind, kind),
                "stage": "breach"
                if stage == "breach"
                else ("nudge" if kind == "nudge" else "warn"),
                "due": local(self.config, due),
            },
        )
        await self.outgoing.queue(
            session,
            ticket,
            "sla_reminder",
            ctx,
            to=to,
            reply_to_mail=(
                known.latest.get(ticket.id)
                if known is not None
                else await self.outgoing.latest_message(session, ticket)
            ),
            automatic="auto-generated",
            now=now,
            outcome=outcome,
            known=known,
        )

    async def _handoff(self, now: datetime, result: PassResult) -> None:
        """On a roster change, tell the incoming and outgoing stewards what is open."""
        if self.config.roster is None:
            return
        duty = duty_at(self.config, now)
        current = ",".join(duty.on_duty)
        async with self.sessions() as session, session.begin():
            state = await session.get(State, "roster.on_duty")
            if state is None:
                session.add(State(key="roster.on_duty", value=current, at=now))
                return
            if state.value == current:
                return
            previous = [n for n in state.value.split(",") if n]
            state.value, state.at = current, now
            tickets = (
                await session.scalars(
                    select(Ticket)
                    .where(Ticket.status.in_(ACTIVE_STATUSES))
                    .order_by(Ticket.next_due_at.is_(None), Ticket.next_due_at, Ticket.id)
                    .limit(200)
                )
            ).all()
            incoming = [n for n in duty.on_duty if n not in previous]
            outgoing = [n for n in previous if n not in duty.on_duty]
            to = self.outgoing.steward_addresses(list(dict.fromkeys([*incoming, *outgoing])))
            if not to:
                return
            ctx = {
                "support": support_context(self.config),
                "on_duty": list(duty.on_duty),
                "incoming": incoming,
                "outgoing": outgoing,
                "next_change": local(self.config, duty.next_change),
                "tickets": [
                    {
                        "tag": f"[{self.config.support.tag} #{t.id}]",
                        "subject": t.subject,
                        "status": t.status,
                        "type": t.type,
                        "priority": t.priority,
                        "due_kind": t.next_due_kind,
                        "due": local(self.config, t.next_due_at),
                    }
                    for t in tickets
                ],
            }
            await self.outgoing.queue(
                session, None, "handoff", ctx, to=to, now=now, automatic="auto-generated"
            )
            result.sent += 1
            result.actions.append(f"handoff: {', '.join(outgoing)} -> {', '.join(incoming)}")

    def _support(self) -> dict[str, str]:
        support = self.config.support
        return {"name": support.name, "address": support.address, "tag": support.tag}

    async def _budget_warnings(self, now: datetime, result: PassResult) -> None:
        """Tell the stewards on duty when a community passes 80 % and 100 % of its
        monthly budget: once each per month, recorded in ``state`` with the mail."""
        if not any(c.budget_hours_per_month for c in self.config.communities):
            return
        month = month_key(now, self.config.hours.timezone)
        try:
            async with self.sessions() as session, session.begin():
                for row in await budget_use(session, self.config, now):
                    budget = row["budget_hours"]
                    if not budget or row["warning"] is None:
                        continue
                    reached = [
                        p for p in BUDGET_THRESHOLDS if row["used_hours"] * 100 >= budget * p
                    ]
                    keys = {p: f"budget:{month}:{p}:{row['community']}"[:100] for p in reached}
                    done = set(
                        (
                            await session.scalars(
                                select(State.key).where(State.key.in_(list(keys.values())))
                            )
                        ).all()
                    )
                    new = [p for p in reached if keys[p] not in done]
                    if not new:
                        continue
                    for p in new:
                        session.add(State(key=keys[p], value=str(row["used_hours"]), at=now))
                    to = self.outgoing.steward_addresses(duty_at(self.config, now).on_duty)
                    if not to:
                        continue
                    # caught up past both at once: one mail, the higher one says it all
                    ctx = {
                        "support": self._support(),
                        "budget": {**row, "month": month, "threshold": f"{max(new)}%"},
                    }
                    await self.outgoing.queue(
                        session,
                        None,
                        "budget_warning",
                        ctx,
                        to=to,
                        now=now,
                        automatic="auto-generated",
                    )
                    result.sent += 1
                    result.actions.append(f"budget warning: {row['community']} {max(new)}%")
        except IntegrityError:
            log.info("budget warnings were sent by another pass")

    async def _weekly_report(self, now: datetime, result: PassResult) -> None:
        """The weekly report at ``reports.weekly``: once per week, after downtime once,
        late, never twice (the week sent is recorded in ``state`` with the mail)."""
        weekly = self.config.reports.weekly
        if weekly is None:
            return
        slot = weekly_slot(now, weekly[0], weekly[1], self.config.hours.timezone)
        stamp = slot.astimezone(UTC).isoformat()
        key = "reports.weekly"
        try:
            async with self.sessions() as session, session.begin():
                state = await session.get(State, key)
                if state is not None and datetime.fromisoformat(state.value) >= slot:
                    return
                if state is None:
                    session.add(State(key=key, value=stamp, at=now))
                    if now - slot > timedelta(days=1):
                        return  # a new installation: no report for a week it did not see
                else:
                    state.value, state.at = stamp, now
                to = [s.addresses[0] for s in self.config.stewards if s.addresses]
                if not to:
                    return
                ctx = {
                    "support": self._support(),
                    "report": await weekly_report(session, self.config, now, slot),
                }
                await self.outgoing.queue(
                    session, None, "weekly_report", ctx, to=to, now=now, automatic="auto-generated"
                )
                result.sent += 1
                late = " (late)" if now - slot > timedelta(hours=1) else ""
                result.actions.append(f"weekly report for {local(self.config, slot)}{late}")
        except IntegrityError:
            log.info("the weekly report was sent by another pass")
