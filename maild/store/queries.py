"""Read-side queries for the CLI: the queue, one ticket with its timeline, the outbox.

Each function returns plain JSON-ready dicts in the shapes of SPEC section 8;
timestamps are ISO 8601 in UTC with offset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, or_, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from maild.store.models import (
    Attachment,
    Event,
    HeldCommand,
    Message,
    Outbox,
    Quarantine,
    Ticket,
)
from maild.store.serialize import (
    ACTIVE_STATUSES,
    PRIORITY_RANK,
    TICKET_FIELDS,
    QueuePage,
    iso,
    ticket_dict,
    ticket_dicts,
    ticket_values,
)

__all__ = [
    "ACTIVE_STATUSES",
    "iso",
    "outbox_rows",
    "queue",
    "queue_page",
    "quarantine_rows",
    "ticket_attachments",
    "ticket_detail",
    "ticket_json",
]


def ticket_json(ticket: Ticket, now: datetime) -> dict[str, Any]:
    """A ticket (ORM object) in the ``queue --json`` shape."""
    return ticket_dict(ticket_values(ticket), now)


# what ticket_dict reads, and nothing else. Dates and JSON come back as the
# database's text and are converted there: SQLAlchemy's per-value processing is
# most of the time of a 10,000-ticket queue.
_RAW = String()
_AS_TEXT = frozenset({"cc", "links", "created_at", "updated_at", "next_due_at"})
QUEUE_COLUMNS = tuple(
    type_coerce(getattr(Ticket, name), _RAW) if name in _AS_TEXT else getattr(Ticket, name)
    for name in TICKET_FIELDS
)


def _queue_filters(
    now: datetime,
    *,
    statuses: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    community: str | None = None,
    overdue: bool = False,
    include_all: bool = False,
) -> list[ColumnElement[bool]]:
    """The conditions of :func:`queue`'s filters (ANDed)."""
    where: list[ColumnElement[bool]] = []
    if statuses:
        where.append(Ticket.status.in_(list(statuses)))
    elif not include_all:
        where.append(Ticket.status.in_(ACTIVE_STATUSES))
    if types:
        wanted = [t for t in types if t != "null"]
        if "null" in types:
            where.append(or_(Ticket.type.in_(wanted), Ticket.type.is_(None)))
        else:
            where.append(Ticket.type.in_(wanted))
    if community is not None:
        where.append(Ticket.community == community)
    if overdue:
        where.extend((Ticket.next_due_at.is_not(None), Ticket.next_due_at <= now))
    return where


async def queue(
    session: AsyncSession, now: datetime, *, limit: int | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """Tickets, most urgent first: earliest due time, then priority, then age.

    ``filters``: ``statuses``, ``types`` (``"null"``: untriaged), ``community``,
    ``overdue``, ``include_all`` (resolved and closed too); ``limit`` (None: all)
    keeps the most urgent (:func:`queue_page` also counts the rest).
    """
    # plain rows, not ORM objects: a queue of 10,000 would spend most of its
    # time building objects nobody modifies
    rank = case(PRIORITY_RANK, value=Ticket.priority, else_=2)
    stmt = (
        select(*QUEUE_COLUMNS)
        .where(*_queue_filters(now, **filters))
        .order_by(
            Ticket.next_due_at.is_(None), Ticket.next_due_at, rank, Ticket.created_at, Ticket.id
        )
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await session.execute(stmt)).all()
    return ticket_dicts(rows, now)


async def queue_page(
    session: AsyncSession, now: datetime, *, limit: int | None = None, **filters: Any
) -> QueuePage:
    """:func:`queue`, and how many tickets it would list without ``limit``: counted
    (one ``count(*)``, the same filters) only when the limit left some out."""
    tickets = await queue(session, now, limit=limit, **filters)
    total = len(tickets)
    if limit is not None and total >= limit:
        stmt = select(func.count()).select_from(Ticket).where(*_queue_filters(now, **filters))
        total = int((await session.execute(stmt)).scalar_one())
    return QueuePage(tickets, total)


async def ticket_detail(
    session: AsyncSession, ticket_id: int, now: datetime
) -> dict[str, Any] | None:
    """The ticket with its whole timeline, or None if there is no such ticket."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    out = ticket_json(ticket, now)
    events = (
        # in time order: a rehearsed or late-recorded event is written after
        # later ones but belongs where its time puts it
        await session.scalars(
            select(Event).where(Event.ticket_id == ticket_id).order_by(Event.at, Event.id)
        )
    ).all()
    message_pks = [e.message_pk for e in events if e.message_pk is not None]
    messages: dict[int, Message] = {}
    attachments: dict[int, list[dict[str, Any]]] = defaultdict(list)
    delivery: dict[int, str] = {}
    envelope: dict[int, list[str]] = {}
    held: dict[int, dict[str, Any]] = {}
    if message_pks:
        for row in (
            await session.scalars(
                select(Message).options(defer(Message.raw)).where(Message.id.in_(message_pks))
            )
        ).all():
            messages[row.id] = row
        rows = await session.execute(
            select(
                Attachment.message_pk, Attachment.filename, Attachment.content_type, Attachment.size
            )
            .where(Attachment.message_pk.in_(message_pks))
            .order_by(Attachment.id)
        )
        for att_pk, filename, ctype, size in rows.all():
            attachments[att_pk].append({"filename": filename, "content_type": ctype, "size": size})
        for out_pk, status, rcpt_tos in (
            await session.execute(
                select(Outbox.message_pk, Outbox.status, Outbox.rcpt_tos).where(
                    Outbox.message_pk.in_(message_pks)
                )
            )
        ).all():
            if out_pk is not None:
                delivery[out_pk] = status
                envelope[out_pk] = list(rcpt_tos or [])
        for hold in (
            await session.scalars(
                select(HeldCommand).where(HeldCommand.message_pk.in_(message_pks))
            )
        ).all():
            # SPEC 11: a held steward mail shows as held until confirmed or expired
            state = (
                "confirmed"
                if hold.confirmed_at is not None
                else ("expired" if hold.expires_at < now else "held")
            )
            held[hold.message_pk] = {
                "state": state,
                "steward": hold.steward,
                "expires_at": iso(hold.expires_at),
                "confirmed_at": iso(hold.confirmed_at),
            }
    timeline = []
    for ev in events:
        item: dict[str, Any] = {"at": iso(ev.at), "kind": ev.kind, "actor": ev.actor}
        msg = messages.get(ev.message_pk) if ev.message_pk is not None else None
        if msg is not None:
            item.update(
                {
                    "message_id": msg.message_id,
                    "from": msg.from_addr,
                    "from_name": msg.from_name,
                    "to": list(msg.to_addrs),
                    "cc": list(msg.cc_addrs),
                    "subject": msg.subject,
                    "text": msg.text,
                    "new_text": msg.new_text,
                    "attachments": attachments.get(msg.id, []),
                    "classification": msg.classification,
                }
            )
            if msg.stub:
                item["stub"] = True
            if msg.direction == "out":
                item["template"] = msg.template
                item["delivery"] = delivery.get(msg.id, "queued")
                # the stewards' blind copy: in the envelope, never in the headers
                named = {*msg.to_addrs, *msg.cc_addrs}
                item["bcc"] = [a for a in envelope.get(msg.id, []) if a not in named]
            if ev.text and ev.kind in ("received", "note"):
                item["threading"] = ev.text
            if msg.id in held:
                item["held"] = held[msg.id]
        elif ev.kind == "change":
            item.update({"field": ev.field, "old": ev.old, "new": ev.new})
        if ev.kind == "note" and msg is None:
            item["text"] = ev.text or ""
        timeline.append(item)
    out["timeline"] = timeline
    return out


async def outbox_rows(
    session: AsyncSession, *, failed_only: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    """Outgoing mail, newest first, with delivery state."""
    stmt = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if failed_only:
        stmt = stmt.where(Outbox.status.in_(("failed", "bounced")))
    return [
        {
            "id": row.id,
            "ticket": row.ticket_id,
            "template": row.template,
            "to": list(row.rcpt_tos),
            "status": row.status,
            "attempts": row.attempts,
            "created_at": iso(row.created_at),
            "next_attempt_at": iso(row.next_attempt_at) if row.status == "queued" else None,
            "sent_at": iso(row.sent_at),
            "last_error": row.last_error,
        }
        for row in (await session.scalars(stmt)).all()
    ]


async def outbox_top(session: AsyncSession) -> int:
    """The highest outbox id so far (0 for none): mail queued later has a higher one."""
    return int(await session.scalar(select(func.max(Outbox.id))) or 0)


async def outbox_after(session: AsyncSession, after: int) -> list[dict[str, Any]]:
    """The outbox rows queued after id ``after``: ``{id, ticket, template, to}``."""
    rows = (
        await session.execute(
            select(Outbox.id, Outbox.ticket_id, Outbox.template, Outbox.rcpt_tos)
            .where(Outbox.id > after)
            .order_by(Outbox.id)
        )
    ).all()
    return [{"id": i, "ticket": t, "template": tpl, "to": list(to)} for i, t, tpl, to in rows]


async def requeue_outbox(session: AsyncSession, row_id: int, now: datetime) -> bool:
    """Queue a failed or bounced outbox row again, due ``now``; False if there is none."""
    result = await session.execute(
        update(Outbox)
        .where(Outbox.id == row_id, Outbox.status.in_(("failed", "bounced")))
        .values(status="queued", next_attempt_at=now, last_error=None)
    )
    return bool(getattr(result, "rowcount", 0))


async def quarantine_rows(session: AsyncSession, limit: int = 200) -> list[dict[str, Any]]:
    stmt = select(Quarantine).order_by(Quarantine.id.desc()).limit(limit)
    return [
        {
            "id": q.id,
            "at": iso(q.at),
            "source": q.source,
            "message_id": q.message_id,
            "reason": q.reason,
            "size": len(q.raw),
        }
        for q in (await session.scalars(stmt)).all()
    ]


async def health(session: AsyncSession, now: datetime) -> dict[str, Any]:
    """What ``maild status`` reports, read from the store alone."""
    import json

    from maild.store.models import ImapState, Lease, State

    lease = await session.get(Lease, "leader")
    if lease is not None and lease.expires_at <= now:
        lease = None  # nobody leads right now
    leader = (
        {
            "holder": lease.holder,
            "since": iso(lease.acquired_at),
            "expires_at": iso(lease.expires_at),
            "epoch": lease.epoch,
        }
        if lease is not None
        else None
    )
    instances = []
    for row in (
        await session.scalars(
            select(State).where(State.key.like("heartbeat:%")).order_by(State.at.desc())
        )
    ).all():
        inst = {"heartbeat_at": iso(row.at), **json.loads(row.value)}
        # the lease says who leads now; the heartbeat may be a period old
        inst["leader"] = lease is not None and inst.get("instance") == lease.holder
        # not heard from for three heartbeats: stopped without a goodbye, or hung
        every = float(inst.get("every") or 30.0)
        inst["gone"] = (now - row.at).total_seconds() > 3 * every
        inst["role"] = "gone" if inst["gone"] else "leader" if inst["leader"] else "standby"
        instances.append(inst)
    live = [i for i in instances if not i["gone"]]
    newest = live or instances
    daemon: dict[str, Any] | None = newest[0] if newest else None
    last_sync = await session.scalar(select(func.max(ImapState.last_sync_at)))
    queued, oldest = (
        await session.execute(
            select(func.count(), func.min(Outbox.created_at)).where(Outbox.status == "queued")
        )
    ).one()
    failed = await session.scalar(
        select(func.count()).select_from(Outbox).where(Outbox.status.in_(("failed", "bounced")))
    )
    quarantined = await session.scalar(select(func.count()).select_from(Quarantine))
    next_action = await session.scalar(select(func.min(Ticket.next_action_at)))
    roster = await session.get(State, "roster.on_duty")
    return {
        "at": iso(now),
        "daemon": daemon,
        "instances": instances,
        "leader": leader,
        "last_imap_sync_at": iso(last_sync),
        "outbox": {
            "queued": int(queued or 0),
            "oldest_queued_at": iso(oldest),
            "failed": int(failed or 0),
        },
        "quarantined": int(quarantined or 0),
        "next_scheduler_action_at": iso(next_action),
        "on_duty": roster.value.split(",") if roster is not None else None,
    }


async def ticket_attachments(session: AsyncSession, ticket_id: int) -> list[dict[str, Any]] | None:
    """Every stored attachment of a ticket's mail, oldest first, with its bytes;
    None if there is no such ticket."""
    if await session.get(Ticket, ticket_id) is None:
        return None
    rows = await session.execute(
        select(
            Attachment.filename,
            Attachment.content_type,
            Attachment.size,
            Attachment.content,
            Message.message_id,
            Message.at,
            Message.direction,
        )
        .join(Message, Message.id == Attachment.message_pk)
        .where(Message.ticket_id == ticket_id)
        .order_by(Message.id, Attachment.id)
    )
    return [
        {
            "filename": filename,
            "content_type": ctype,
            "size": size,
            "content": bytes(content),
            "message_id": mid,
            "at": iso(at),
            "direction": direction,
        }
        for filename, ctype, size, content, mid, at, direction in rows.all()
    ]
