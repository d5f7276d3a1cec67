"""What mail on many tickets needs from the store, looked up for all of them at once.

The scheduler handles its due tickets in batches, one transaction each. Mail
on a ticket needs a handful of look-ups (its reminders, the requester's last
mail and name, the mails its References are chosen from, the automatic mail
each recipient already got); asked per ticket they are most of a pass's time.
:meth:`TicketLookups.load` asks each for the whole batch in one query, and
:meth:`TicketLookups.queued` keeps the answers true as the batch queues mail,
so the second mail to an address in a batch is counted against its limits
like the first (everything is in the same transaction until it commits).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Insert,
    Select,
    Table,
    and_,
    bindparam,
    event,
    func,
    insert,
    inspect,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, defer
from sqlalchemy.sql import visitors
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.expression import TableClause, TextClause
from sqlalchemy.sql.schema import ColumnDefault

from maild.store.models import (
    Attachment,
    AutomaticSend,
    Base,
    Event,
    Message,
    Outbox,
    Reminder,
    Ticket,
)

__all__ = [
    "CHAIN",
    "CHAIN_COLUMNS",
    "CHAIN_LOOKBACK",
    "ChainRow",
    "Mail",
    "ReplyLookups",
    "SendLedger",
    "STEWARDS_WHO_WROTE",
    "SentMail",
    "TicketLookups",
    "defer_write_only",
    "flush_in_bulk",
    "forget_reply",
    "keep_for_bulk",
    "keep_message",
    "load_reply",
    "load_sends",
    "pending",
    "pending_chain",
    "stored_chain",
    "write_deferred",
    "write_later",
]

_Row = TypeVar("_Row", bound=Base)

# session.info key: the rows kept as values for flush_in_bulk (see write_later)
_LATER = "maild.write_later"

# how many of a ticket's latest mails an outgoing mail's References are chosen from
# what a reply chain reads of each mail: its id, direction and whom it went to
CHAIN_COLUMNS = (
    Message.message_id,
    Message.direction,
    Message.from_addr,
    Message.to_addrs,
    Message.cc_addrs,
    Outbox.rcpt_tos,
)
CHAIN_LOOKBACK = 200

# (message_id, direction, from_addr, to_addrs, cc_addrs, outbox rcpt_tos), newest first
ChainRow = tuple[str, str, str, list[Any] | None, list[Any] | None, list[Any] | None]


@dataclass(eq=False)
class SentMail:
    """An outgoing mail on a ticket that a session writing later (:func:`write_later`)
    keeps as plain values instead of a :class:`Message`: what the rest of the
    transaction reads of it, and its ``id`` once :func:`flush_in_bulk` inserted it."""

    ticket_id: int
    message_id: str
    from_addr: str | None
    to_addrs: list[Any]
    cc_addrs: list[Any]
    text: str
    id: int | None = None


# a mail on a ticket as the look-ups and the rows about it hold it
Mail = Message | SentMail


@dataclass
class SendLedger:
    """Automatic mail sent to some mailboxes (limit keys) in the last day, and to anyone
    in the last hour: what SPEC 11's per-address limits and global ceiling count."""

    keys: frozenset[str]
    times: dict[str, list[datetime]]
    last_hour_total: int
    hour_ago: datetime

    def covers(self, keys: Iterable[str]) -> bool:
        return all(k in self.keys for k in keys)

    def counts(
        self, keys: Mapping[str, str], now: datetime
    ) -> tuple[dict[str, int], dict[str, int], int]:
        """Per address (``keys``: address -> limit key): its mailbox's automatic mails in
        the last hour and 24 hours; and all automatic mails in the last hour."""
        hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
        last_hour = {a: sum(at > hour_ago for at in self.times.get(k, ())) for a, k in keys.items()}
        last_day = {a: sum(at > day_ago for at in self.times.get(k, ())) for a, k in keys.items()}
        return last_hour, last_day, self.last_hour_total

    def add(self, key: str, at: datetime) -> None:
        """One more automatic mail, queued in this transaction."""
        self.times.setdefault(key, []).append(at)
        if at > self.hour_ago:
            self.last_hour_total += 1


# built once: a statement built per call costs more than SQLite takes to run it
_SENDS_TOTAL = (
    select(func.count())
    .select_from(AutomaticSend)
    .where(AutomaticSend.at > bindparam("hour_ago"))
    .execution_options(maild_deferred="counted")  # load_sends counts them (defer_write_only)
)
# both in one round trip: the hour's total on every row, and one row of NULLs beside it
# when the mailboxes got nothing (a one-row table outer-joined to the sends)
_ONE = select(literal_column("1").label("one")).subquery("one")
_SENDS_AND_TOTAL = (
    select(_SENDS_TOTAL.scalar_subquery().label("total"), AutomaticSend.address, AutomaticSend.at)
    .select_from(
        _ONE.outerjoin(
            AutomaticSend,
            and_(
                AutomaticSend.address.in_(bindparam("keys", expanding=True)),
                AutomaticSend.at > bindparam("day_ago"),
            ),
        )
    )
    .execution_options(maild_deferred="counted")
)


def _of_tickets() -> ColumnElement[bool]:
    """``Message.ticket_id`` among the batch's tickets (the parameter ``ids``)."""
    return Message.ticket_id.in_(bindparam("ids", expanding=True))


# TicketLookups.load's queries, built once like the ones above
_REMINDERS = select(Reminder.ticket_id, Reminder.kind, Reminder.stage).where(
    Reminder.ticket_id.in_(bindparam("ids", expanding=True))
)
_INBOUND = (
    select(Message.id, Message.ticket_id, Message.from_addr, Message.from_name)
    .where(_of_tickets(), Message.direction == "in")
    .order_by(Message.id.desc())
)
_RANK = (
    func.row_number().over(partition_by=Message.ticket_id, order_by=Message.id.desc()).label("rank")
)
_RECENT = (
    select(Message.id, Message.ticket_id, *CHAIN_COLUMNS, _RANK)
    .outerjoin(Outbox, Outbox.message_pk == Message.id)
    .where(_of_tickets())
    .subquery()
)
_CHAINS = (
    select(_RECENT)
    .where(_RECENT.c.rank <= CHAIN_LOOKBACK)
    .order_by(_RECENT.c.ticket_id, _RECENT.c.rank)
)
_OPENINGS = select(Message.ticket_id, Message.message_id).where(
    Message.id.in_(select(func.min(Message.id)).where(_of_tickets()).group_by(Message.ticket_id))
)
_RELAYS = (
    select(func.max(Message.id))
    .join(Ticket, Ticket.id == Message.ticket_id)
    .where(
        _of_tickets(),
        Message.direction == "out",
        Message.template == "relay",
        Message.at > func.coalesce(Ticket.last_update_at, Ticket.created_at),
    )
    .group_by(Message.ticket_id)
)
_MESSAGES = (
    select(Message)
    .options(defer(Message.raw))
    .where(Message.id.in_(bindparam("message_pks", expanding=True)))
)


def _latest_mails(*leading: ColumnElement[Any]) -> Select[*tuple[Any, ...]]:
    return (
        select(*leading, *CHAIN_COLUMNS)
        .outerjoin(Outbox, Outbox.message_pk == Message.id)
        .where(Message.ticket_id == bindparam("ticket_id"))
        .order_by(Message.id.desc())
        .limit(CHAIN_LOOKBACK)
    )


# a ticket's latest mails, newest first, with whom each went to (these three read the
# rows of one ticket, the parameter ticket_id: see defer_write_only)
CHAIN = _latest_mails().execution_options(maild_deferred="ticket")
# who of some stewards wrote on a ticket (the events of their mails and notes)
_WROTE = (
    Event.ticket_id == bindparam("ticket_id"),
    Event.kind.in_(("received", "note")),
    Event.message_pk.is_not(None),
    Event.actor.in_(bindparam("names", expanding=True)),
)
# ... oldest first
STEWARDS_WHO_WROTE = (
    select(Event.actor).where(*_WROTE).order_by(Event.id).execution_options(maild_deferred="ticket")
)
# a reply's look-ups on the ticket it joins, in one round trip (UNION ALL, a part number
# first): its latest mails (CHAIN), its reminders, and which of some stewards wrote on
# it, oldest first (STEWARDS_WHO_WROTE)
_CHAIN_PART = _latest_mails(
    literal_column("0").label("part"), (-Message.id).label("ord")
).subquery()
_NONE = tuple(null() for _ in range(len(CHAIN_COLUMNS) - 2))
_REPLY: CompoundSelect[*tuple[Any, ...]] = (
    union_all(
        select(_CHAIN_PART),
        select(
            literal_column("1"), literal_column("0"), Reminder.kind, Reminder.stage, *_NONE
        ).where(Reminder.ticket_id == bindparam("ticket_id")),
        select(literal_column("2"), Event.id, Event.actor, *_NONE, null()).where(*_WROTE),
    )
    .order_by(literal_column("part"), literal_column("ord"))
    .execution_options(maild_deferred="ticket")
)
# session.info key: {ticket id: its stored chain rows} read by load_reply, until a flush
_STORED_CHAIN = "maild.stored_chain"


@dataclass
class ReplyLookups:
    """What a reply on a ticket needs of the store, read by :func:`load_reply` at once."""

    reminders: frozenset[tuple[str, str]]
    # who of the stewards asked about wrote on the ticket, oldest first
    stewards_who_wrote: list[str]


async def load_reply(
    session: AsyncSession, ticket_id: int, steward_names: Collection[str]
) -> ReplyLookups:
    """The reminders of ticket ``ticket_id``, the stewards of ``steward_names`` who wrote
    on it, and its stored mails for a reply chain (:func:`stored_chain`), in one query
    without a flush. The chain rows hold until the session next flushes (after that the
    stored mails include some that were pending: they would be counted twice or missed)."""
    reminders: set[tuple[str, str]] = set()
    actors: list[str] = []
    chain: list[ChainRow] = []
    given = {"ticket_id": ticket_id, "names": sorted(steward_names)}
    with session.no_autoflush:
        rows = await session.execute(_REPLY, given)
    for part, _, a, b, c, d, e, f in rows:
        if part == 0:
            chain.append((a, b, c, d, e, f))
        elif part == 1:
            reminders.add((a, b))
        else:
            actors.append(a)
    chains: dict[int, list[ChainRow]] | None = session.info.get(_STORED_CHAIN)
    if chains is None:
        chains = session.info[_STORED_CHAIN] = {}
        event.listen(session.sync_session, "after_flush", _forget_chains)
    chains[ticket_id] = chain
    return ReplyLookups(frozenset(reminders), actors)


def _forget_chains(session: Session, _context: object) -> None:
    chains = session.info.get(_STORED_CHAIN)
    if chains:
        chains.clear()


def forget_reply(session: AsyncSession) -> None:
    """Drop what :func:`load_reply` read (a new mail begins: it may follow a rollback)."""
    chains = session.info.get(_STORED_CHAIN)
    if chains:
        chains.clear()


def stored_chain(session: AsyncSession, ticket_id: int) -> list[ChainRow] | None:
    """The stored mails of ticket ``ticket_id`` as a reply chain's rows (newest first), as
    :func:`load_reply` read them, if nothing was flushed since; None: ask the store."""
    chains: dict[int, list[ChainRow]] | None = session.info.get(_STORED_CHAIN)
    return None if chains is None else chains.get(ticket_id)


def pending(session: AsyncSession, model: type[_Row]) -> list[_Row]:
    """``model``'s rows added to ``session`` and not flushed yet, in the order added.

    A look-up run without autoflush sees the stored rows only; these are the
    rest, so the caller need not flush the whole transaction to read them.
    """
    rows = [o for o in session.new if isinstance(o, model)]
    rows.sort(key=lambda o: inspect(o).insert_order or 0)
    return rows


def write_later(session: AsyncSession) -> None:
    """From now on ``session`` keeps its new event rows, the outgoing messages on tickets
    (:func:`keep_message`) with their outbox and automatic-send rows, and whatever
    else its caller keeps (the scheduler's reminders), as plain values until
    :func:`flush_in_bulk` writes them: no ORM object per row. For a transaction in
    which nothing reads those rows back but through :class:`TicketLookups` (the
    scheduler's batches); the session is discarded if the transaction fails."""
    session.info[_LATER] = []


def keep_for_bulk(
    session: AsyncSession, model: type[Base], values: dict[str, Any], message: Mail | None
) -> bool:
    """Keep a row's ``values`` (and the ``message`` it is about, for its id) for
    :func:`flush_in_bulk` if ``session`` writes later (:func:`write_later`); False: the
    caller adds the row as an object."""
    later: list[tuple[type[Base], dict[str, Any], Mail | None]] | None = session.info.get(_LATER)
    if later is None:
        return False
    later.append((model, values, message))
    return True


def keep_message(session: AsyncSession, values: dict[str, Any]) -> SentMail | None:
    """Keep an outgoing message's ``values`` (every column of :class:`Message` but its
    id) for :func:`flush_in_bulk` if ``session`` writes later, and return what the
    transaction reads of it (the rows about it point at that, for its id); None: the
    caller adds a :class:`Message`."""
    if _LATER not in session.info:
        return None
    mail = SentMail(
        values["ticket_id"],
        values["message_id"],
        values["from_addr"],
        values["to_addrs"],
        values["cc_addrs"],
        values["text"],
    )
    keep_for_bulk(session, Message, values, mail)
    return mail


def _kept(session: AsyncSession, model: type[Base]) -> list[tuple[dict[str, Any], Mail | None]]:
    """``model``'s rows the transaction holds as values, not written yet: those kept for
    :func:`flush_in_bulk` (:func:`write_later`) with the mail each is about, then those
    kept to its end (:func:`defer_write_only`; their mail is in ``message_pk``)."""
    kept = [(v, m) for kind, v, m in session.info.get(_LATER, ()) if kind is model]
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None:
        kept += [(v, None) for v in deferred.rows.get(model, ())]
    return kept


def pending_chain(session: AsyncSession, ticket_id: int) -> list[ChainRow]:
    """The messages on ticket ``ticket_id`` not flushed yet, as :data:`ChainRow` s, newest
    first: the mails an outgoing mail's References are chosen from that a query without
    autoflush does not see (they are all newer than the stored ones)."""
    messages = [m for m in pending(session, Message) if m.ticket_id == ticket_id]
    if not messages:
        return []
    rcpts: dict[int, list[Any]] = {}
    for row in pending(session, Outbox):
        linked = row.__dict__.get("message")
        if linked is not None:
            rcpts.setdefault(id(linked), row.rcpt_tos)
    for values, linked in _kept(session, Outbox):
        if linked is not None:
            rcpts.setdefault(id(linked), values["rcpt_tos"])
    return [
        (m.message_id, m.direction, m.from_addr or "", m.to_addrs, m.cc_addrs, rcpts.get(id(m)))
        for m in reversed(messages)
    ]


async def load_sends(session: AsyncSession, keys: Collection[str], now: datetime) -> SendLedger:
    """The automatic mail sent to ``keys`` in the last 24 hours and to anyone in the hour,
    counting the rows of this transaction not flushed yet (read without a flush)."""
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
    times: dict[str, list[datetime]] = {}
    wanted = set(keys)
    total = 0
    with session.no_autoflush:
        if keys:
            given = {"keys": sorted(wanted), "day_ago": day_ago, "hour_ago": hour_ago}
            rows = (await session.execute(_SENDS_AND_TOTAL, given)).all()
            total = rows[0].total  # a row at least, the total on each
            for _, key, at in rows:
                if key is not None:
                    times.setdefault(key, []).append(at)
        else:
            total = await session.scalar(_SENDS_TOTAL, {"hour_ago": hour_ago}) or 0
    kept = [(v["address"], v["at"]) for v, _ in _kept(session, AutomaticSend)]
    for address, at in [(s.address, s.at) for s in pending(session, AutomaticSend)] + kept:
        if address in wanted and at > day_ago:
            times.setdefault(address, []).append(at)
        if at > hour_ago:
            total += 1
    return SendLedger(frozenset(keys), times, total, hour_ago)


@dataclass
class TicketLookups:
    """The look-ups of :mod:`maild.service.pipeline` for a batch of tickets, done in advance.

    Only valid inside the transaction that loaded them: mail queued there must
    be told to :meth:`queued`.
    """

    reminders: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    # the latest message either way (one queued in this transaction may be a SentMail);
    # the requester side's latest inbound mail
    latest: dict[int, Mail] = field(default_factory=dict)
    requester_last: dict[int, Mail] = field(default_factory=dict)
    # the requester's display name from their latest mail that had one
    requester_name: dict[int, str] = field(default_factory=dict)
    # the latest relay to the stewards since the ticket's last incident update
    relay_since_update: dict[int, Mail] = field(default_factory=dict)
    chain: dict[int, list[ChainRow]] = field(default_factory=dict)
    opening: dict[int, str] = field(default_factory=dict)
    sends: SendLedger = field(default_factory=lambda: SendLedger(frozenset(), {}, 0, datetime.min))

    @classmethod
    def opened(cls, ticket: Ticket, message: Message, now: datetime) -> TicketLookups:
        """The look-ups of a ticket that ``message`` opened in this transaction: nothing
        to ask the store, its one mail is ``message`` (the automatic mail counts are
        still looked up, per address, when a mail needs them)."""
        out = cls(sends=SendLedger(frozenset(), {}, 0, now - timedelta(hours=1)))
        tid = ticket.id
        out.reminders[tid] = set()
        out.latest[tid] = message
        sender = message.from_addr
        if message.direction == "in" and sender in [a for a in (ticket.requester, *ticket.cc) if a]:
            out.requester_last[tid] = message
            if message.from_name and sender == ticket.requester:
                out.requester_name[tid] = message.from_name
        out.chain[tid] = [
            (
                message.message_id,
                message.direction,
                sender or "",
                list(message.to_addrs),
                list(message.cc_addrs),
                None,
            )
        ]
        out.opening[tid] = message.message_id
        return out

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        tickets: Sequence[Ticket],
        send_keys: Collection[str],
        now: datetime,
    ) -> TicketLookups:
        """Everything for ``tickets`` in a fixed number of queries; the automatic mail
        counts for the mailboxes ``send_keys``."""
        out = cls()
        ids = [t.id for t in tickets]
        if not ids:
            return out
        given = {"ids": ids}
        for tid, kind, stage in await session.execute(_REMINDERS, given):
            out.reminders.setdefault(tid, set()).add((kind, stage))

        by_id = {t.id: t for t in tickets}
        # message id -> the maps (by its ticket) it is the answer in
        wanted: dict[int, list[dict[int, Mail]]] = {}
        found: set[int] = set()
        for mid, tid, sender, name in await session.execute(_INBOUND, given):
            ticket = by_id[tid]
            if tid not in out.requester_name and name and sender == ticket.requester:
                out.requester_name[tid] = name
            people = [a for a in (ticket.requester, *ticket.cc) if a]
            if tid not in found and sender in people:
                found.add(tid)
                wanted.setdefault(mid, []).append(out.requester_last)

        for row in await session.execute(_CHAINS, given):
            if row.rank == 1:
                wanted.setdefault(row.id, []).append(out.latest)
            out.chain.setdefault(row.ticket_id, []).append(
                (
                    row.message_id,
                    row.direction,
                    row.from_addr,
                    row.to_addrs,
                    row.cc_addrs,
                    row.rcpt_tos,
                )
            )
        for tid, opening in await session.execute(_OPENINGS, given):
            out.opening[tid] = opening

        for (relay,) in await session.execute(_RELAYS, given):
            wanted.setdefault(relay, []).append(out.relay_since_update)
        if wanted:
            for message in await session.scalars(_MESSAGES, {"message_pks": list(wanted)}):
                for target in wanted[message.id]:
                    target[message.ticket_id] = message
        out.sends = await load_sends(session, send_keys, now)
        return out

    def queued(
        self,
        ticket_id: int,
        message: Mail,
        recipients: Sequence[str],
        automatic_keys: Sequence[str],
        now: datetime,
    ) -> None:
        """A mail this transaction queued on the ticket: the next one threads under it
        and counts it."""
        self.latest[ticket_id] = message
        rows = self.chain.setdefault(ticket_id, [])
        rows.insert(
            0,
            (
                message.message_id,
                "out",
                message.from_addr or "",
                list(message.to_addrs),
                list(message.cc_addrs),
                list(recipients),
            ),
        )
        del rows[CHAIN_LOOKBACK:]
        self.opening.setdefault(ticket_id, message.message_id)
        for key in automatic_keys:
            self.sends.add(key, now)


# rows a batch adds many of and nobody reads the ids of
_WRITE_ONLY: tuple[type[Base], ...] = (Outbox, Event, AutomaticSend, Attachment)


@dataclass(frozen=True)
class _Writer:
    """How a model's rows are inserted with Core: an INSERT of every column but the
    generated id, and each column's scalar default (what the ORM would have filled in)."""

    insert: Insert
    columns: tuple[tuple[str, Any], ...]
    # every column with its default; the columns whose default is not None
    blank: dict[str, Any] = field(init=False)
    defaults: tuple[tuple[str, Any], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blank", dict(self.columns))
        defaults = tuple((k, d) for k, d in self.columns if d is not None)
        object.__setattr__(self, "defaults", defaults)

    @classmethod
    def of(cls, model: type[Base]) -> _Writer:
        table = cast(Table, model.__table__)
        columns = tuple(
            (
                column.key,
                column.default.arg
                if isinstance(column.default, ColumnDefault) and column.default.is_scalar
                else None,
            )
            for column in table.columns
            if column is not table.autoincrement_column
        )
        return cls(insert(table), columns)

    def values(self, given: Mapping[str, Any], message: Mail | None) -> dict[str, Any]:
        """The row to insert: ``given`` (an object's state or kept values), the defaults
        for what is not set, and the id of ``message`` if it is about one."""
        values = {
            key: default if (value := given.get(key)) is None else value
            for key, default in self.columns
        }
        if message is not None:
            values["message_pk"] = message.id
        return values

    def kept(self, given: Mapping[str, Any], message: Mail | None) -> dict[str, Any]:
        """:meth:`values` of kept values (:func:`keep_for_bulk`), whose keys are all
        columns of the table: a copy laid over the defaults, without a look-up per column."""
        values = {**self.blank, **given}
        for key, default in self.defaults:
            if values[key] is None:
                values[key] = default
        if message is not None:
            values["message_pk"] = message.id
        return values


# the kept rows' models (write_later): the write-only ones, reminders and messages
_KEPT: tuple[type[Base], ...] = (*_WRITE_ONLY, Reminder, Message)
_WRITERS = {model: _Writer.of(model) for model in _KEPT}
# the kept messages' ids, by their unique Message-ID: an executemany INSERT and this
# SELECT take less than an INSERT .. RETURNING of many rows (measured: rendered as
# one statement per batch, its rows matched to the ids returned)
_MESSAGE_IDS = select(Message.id, Message.message_id).where(
    Message.message_id.in_(bindparam("message_ids", expanding=True))
)


async def flush_in_bulk(session: AsyncSession) -> None:
    """Flush ``session``, its new outbox, event, automatic-send and attachment rows as
    one INSERT per table; and the rows it kept as values (:func:`write_later`).

    The unit of work inserts rows whose ids it must read back one at a time on
    SQLite (it cannot match many returned ids to their rows without a column
    like ``Message.message_id``): for a batch of mails, a statement per row.
    Nothing reads these rows' ids, so they are taken out of the session and
    written with one executemany each (a Core INSERT naming every column), in
    the order they were added, after the flush that gives their messages an
    id. They are not in the session afterwards. The kept messages go first
    (one executemany, then one SELECT of their ids by Message-ID gives each
    :class:`SentMail` its id), then the rest of the kept rows in the order
    they came. After :func:`defer_write_only`, the write-only rows are kept
    until :func:`write_deferred` instead.
    """
    rows = sorted(
        (o for o in session.new if isinstance(o, _WRITE_ONLY)),
        key=lambda o: inspect(o).insert_order or 0,
    )
    for row in rows:
        session.expunge(row)
    kept = session.info.get(_LATER)
    if kept is not None:
        session.info[_LATER] = []
    await session.flush()
    mails = [(v, m) for model, v, m in kept or () if isinstance(m, SentMail) and model is Message]
    if mails:
        writer = _WRITERS[Message]
        await session.execute(writer.insert, [writer.kept(given, None) for given, _ in mails])
        found = await session.execute(
            _MESSAGE_IDS, {"message_ids": [mail.message_id for _, mail in mails]}
        )
        ids = {message_id: pk for pk, message_id in found.tuples()}
        for _, mail in mails:
            mail.id = ids[mail.message_id]
    by_model: dict[type[Base], list[dict[str, Any]]] = {}
    # the kept rows (on tickets: in the order they came), then the objects
    for model, given, message in kept or ():
        if model is not Message:
            by_model.setdefault(model, []).append(_WRITERS[model].kept(given, message))
    for row in rows:
        state = row.__dict__
        by_model.setdefault(type(row), []).append(
            _WRITERS[type(row)].values(state, state.get("message"))
        )
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    for model, values_list in by_model.items():
        if deferred is not None and model in _WRITE_ONLY:
            deferred.keep(model, values_list)
        else:
            await session.execute(_WRITERS[model].insert, values_list)
    if deferred is not None and deferred.size > DEFERRED_BYTES:
        await session.run_sync(_write_deferred)  # mail with large attachments: not all kept


# the kept rows are written once the mail they hold passes this many bytes
DEFERRED_BYTES = 4 * 1024 * 1024


# session.info key: the write-only rows kept until the transaction's end (defer_write_only)
_DEFERRED = "maild.deferred"


@dataclass
class _Deferred:
    """The write-only rows of a transaction's earlier mails, by model, in the order they
    came; and the tickets they are on."""

    rows: dict[type[Base], list[dict[str, Any]]] = field(default_factory=dict)
    tickets: set[int] = field(default_factory=set)

    # the bytes of the mail they hold (outbox raw, attachment content)
    size: int = 0

    def keep(self, model: type[Base], values: list[dict[str, Any]]) -> None:
        self.rows.setdefault(model, []).extend(values)
        self.tickets.update(v["ticket_id"] for v in values if v.get("ticket_id") is not None)
        self.size += sum(_mail_bytes(v) for v in values)


def defer_write_only(session: AsyncSession) -> None:
    """From now on :func:`flush_in_bulk` keeps ``session``'s write-only rows (events,
    outbox, automatic sends, attachments) and :func:`write_deferred` writes them all,
    an executemany a table (in batches of about ``WRITE_BATCH_BYTES`` of mail): a
    chunk of mails in one transaction pays those round trips once, not once a mail.
    The caller calls :func:`write_deferred` before the commit.

    Whatever reads those tables meanwhile reads them written: any statement run
    through the session that names one of their tables writes them first, and
    so does a flush holding such rows as objects (their ids stay in the order
    the rows came). Two kinds of statement say they need not
    (``execution_options(maild_deferred=...)``): ``"counted"``, whose caller
    counts the kept rows itself (:func:`load_sends`), and ``"ticket"``, which
    read one ticket's rows (the parameter ``ticket_id``) and write them first
    only if some are on that ticket.
    """
    session.info[_DEFERRED] = _Deferred()
    sync = session.sync_session
    event.listen(sync, "do_orm_execute", _deferred_before_reading)
    event.listen(sync, "before_flush", _deferred_before_flushing)


async def write_deferred(session: AsyncSession) -> None:
    """Write the rows :func:`defer_write_only` kept (nothing if it was not called)."""
    if session.info.get(_DEFERRED) is not None:
        await session.run_sync(_write_deferred)


def _write_deferred(session: Session) -> None:
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is None or not deferred.rows:
        return
    rows = deferred.rows
    deferred.rows, deferred.tickets, deferred.size = {}, set(), 0
    connection = session.connection()
    for model, values in rows.items():
        for batch in _batches(values):
            connection.execute(_WRITERS[model].insert, batch)


# an executemany of the kept rows carries about this much at most: on PostgreSQL it
# leaves in one write, not drained over many (a process frozen between two writes
# would leave the server waiting for the rest inside the transaction, where no
# idle-in-transaction timeout runs, the rows and tickets it locked held)
WRITE_BATCH_BYTES = 48 * 1024


def _batches(values: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for row in values:
        n = _mail_bytes(row) + 256  # the other columns, roughly
        if batch and size + n > WRITE_BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += n
    if batch:
        yield batch


def _mail_bytes(row: Mapping[str, Any]) -> int:
    """The bytes of mail a kept row holds (an outbox row's raw, an attachment's content)."""
    return len(row.get("raw") or row.get("content") or b"")


def _deferred_before_reading(state: ORMExecuteState) -> None:
    deferred: _Deferred | None = state.session.info.get(_DEFERRED)
    if deferred is None or not deferred.rows:
        return
    scope = state.execution_options.get("maild_deferred")
    if scope == "counted":
        return
    if scope == "ticket":
        given = state.parameters
        ticket = given.get("ticket_id") if isinstance(given, Mapping) else None
        if ticket is not None and ticket not in deferred.tickets:
            return
    elif not _names_write_only(state.statement):
        return
    _write_deferred(state.session)


def _deferred_before_flushing(session: Session, _context: object, _instances: object) -> None:
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is not None and deferred.rows:
        if any(isinstance(o, _WRITE_ONLY) for o in session.new):
            _write_deferred(session)


_WRITE_ONLY_TABLES = frozenset(cast(Table, model.__table__).name for model in _WRITE_ONLY)
# statement -> whether it names a write-only table, for as long as the statement lives:
# the ones built once are looked at once (a walk of a statement's tree takes 20-150 us)
_NAMES_WRITE_ONLY: weakref.WeakKeyDictionary[Executable, bool] = weakref.WeakKeyDictionary()


def _names_write_only(statement: Executable) -> bool:
    """Whether ``statement`` reads or writes a write-only table; SQL text counts as one."""
    try:
        known = _NAMES_WRITE_ONLY.get(statement)
    except TypeError:  # a statement that takes no weak reference: walked every time
        known = None
    if known is not None:
        return known
    names = any(
        isinstance(e, TextClause) or (isinstance(e, TableClause) and e.name in _WRITE_ONLY_TABLES)
        for e in visitors.iterate(cast(visitors.ExternallyTraversible, statement))
    )
    with contextlib.suppress(TypeError):
        _NAMES_WRITE_ONLY[statement] = names
    return names
