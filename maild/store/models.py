"""SQLAlchemy models: tickets, messages, timeline events, the outbox and quarantine.

All timestamps are stored as naive UTC and handed back as aware UTC datetimes
(see :class:`UTCDateTime`), so SQLite and PostgreSQL behave the same.
Every column a hot path filters on carries an index; the index names are part
of the migration, so keep them in step with ``migrations/versions``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Attachment",
    "Base",
    "AutomaticSend",
    "Event",
    "HeldCommand",
    "ImapState",
    "Lease",
    "Message",
    "Outbox",
    "Participant",
    "Quarantine",
    "Reminder",
    "State",
    "Ticket",
    "UTCDateTime",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


_UNSEEN = object()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """The bound value of each datetime, remembered for the last few instants: a
        batch binds the same ``now`` to a dozen columns a row (on SQLite each is also
        formatted as a string). Equal aware datetimes are the same instant, so they
        bind alike."""
        process = super().bind_processor(dialect)
        if process is None:
            return None
        seen: dict[datetime, Any] = {}

        def bind(value: datetime | None) -> Any:
            if value is None:
                return process(value)
            out = seen.get(value, _UNSEEN)
            if out is not _UNSEEN:
                return out
            out = process(value)  # a naive datetime raises here: it is never remembered
            if len(seen) >= 64:
                seen.clear()
            seen[value] = out
            return out

        return bind


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(Text)
    # casefolded, cleaned subject: threading rule 4 compares on it
    subject_key: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="new")
    type: Mapped[str | None] = mapped_column(String(16), default=None)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    community: Mapped[str | None] = mapped_column(String(200), default=None)
    requester: Mapped[str] = mapped_column(String(320))
    # what opened the ticket (normal, auto_reply, bounce, list, own): no automatic
    # mail ever goes to a requester that is itself a machine
    requester_kind: Mapped[str] = mapped_column(String(16), default="normal")
    cc: Mapped[list[Any]] = mapped_column(JSON, default=list)
    assignee: Mapped[str | None] = mapped_column(String(200), default=None)
    incident_commander: Mapped[str | None] = mapped_column(String(200), default=None)
    links: Mapped[list[Any]] = mapped_column(JSON, default=list)
    time_spent_minutes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # last mail in either direction: threading rule 4's activity window
    last_activity_at: Mapped[datetime]
    last_requester_at: Mapped[datetime | None] = mapped_column(default=None)
    first_response_at: Mapped[datetime | None] = mapped_column(default=None)
    triaged_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)
    # base64 of the first 22 bytes of Outlook's Thread-Index: the conversation's root
    thread_root: Mapped[str | None] = mapped_column(String(64), default=None)
    follow_up_of: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), default=None)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    # the SLA target shown in `maild queue`: kind (triage, first_response) and due time
    next_due_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    next_due_at: Mapped[datetime | None] = mapped_column(default=None)
    triage_due_at: Mapped[datetime | None] = mapped_column(default=None)
    response_due_at: Mapped[datetime | None] = mapped_column(default=None)
    # incidents: per-ticket cadence override, last public update, next update due
    update_every_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    last_update_at: Mapped[datetime | None] = mapped_column(default=None)
    next_update_at: Mapped[datetime | None] = mapped_column(default=None)
    # resolved tickets: when the auto-close happens unless the requester writes
    close_due_at: Mapped[datetime | None] = mapped_column(default=None)
    # the earliest instant the scheduler has something to do for this ticket;
    # one indexed column lets a pass ask only for what is due
    next_action_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_tickets_status_updated", "status", "updated_at"),
        # threading rule 4: same subject, recently active
        Index("ix_tickets_subject_key", "subject_key", "last_activity_at"),
        Index("ix_tickets_thread_root", "thread_root"),
        Index("ix_tickets_next_due_at", "next_due_at"),
        Index("ix_tickets_next_action_at", "next_action_at"),
        Index("ix_tickets_requester", "requester"),
    )


class Participant(Base):
    """Addresses on a ticket's thread (requester and cc) for membership look-ups."""

    __tablename__ = "participants"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # requester | cc

    __table_args__ = (Index("ix_participants_address", "address"),)


class Message(Base):
    """One mail on a ticket, inbound or outbound, with its raw bytes."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    # unique and set by us: SQLAlchemy matches the ids SQLite returns for many rows
    # inserted at once by it (the sentinel), instead of inserting row by row
    message_id: Mapped[str] = mapped_column(String(998), insert_sentinel=True)
    from_addr: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str] = mapped_column(Text, default="")
    to_addrs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    cc_addrs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime | None] = mapped_column(default=None)
    at: Mapped[datetime]
    in_reply_to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    references: Mapped[list[Any]] = mapped_column(JSON, default=list)
    headers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    text: Mapped[str] = mapped_column(Text, default="")
    new_text: Mapped[str] = mapped_column(Text, default="")
    classification: Mapped[str] = mapped_column(String(32), default="normal")
    defects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    is_note: Mapped[bool] = mapped_column(Boolean, default=False)
    template: Mapped[str | None] = mapped_column(String(64), default=None)
    stub: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        UniqueConstraint("message_id", name="uq_messages_message_id"),
        Index("ix_messages_ticket_id", "ticket_id", "id"),
    )


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    # set instead of message_pk when the message is not flushed yet (its id comes at the flush)
    message: Mapped[Message | None] = relationship(lazy="raise")
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_attachments_message_pk", "message_pk"),)


class Event(Base):
    """The timeline: received, sent, note, change."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(320))
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)
    # set instead of message_pk when the message is not flushed yet (its id comes at the flush)
    message: Mapped[Message | None] = relationship(lazy="raise")
    field: Mapped[str | None] = mapped_column(String(64), default=None)
    old: Mapped[str | None] = mapped_column(Text, default=None)
    new: Mapped[str | None] = mapped_column(Text, default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (Index("ix_events_ticket_id", "ticket_id", "id"),)


class Outbox(Base):
    """A mail to send, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), default=None)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), default=None)
    # set instead of message_pk when the message is not flushed yet (its id comes at the flush)
    message: Mapped[Message | None] = relationship(lazy="raise")
    template: Mapped[str] = mapped_column(String(64))
    automatic: Mapped[bool] = mapped_column(Boolean, default=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_tos: Mapped[list[Any]] = mapped_column(JSON)
    # the first recipient, for the per-sender rate limit on automatic mail
    primary_rcpt: Mapped[str] = mapped_column(String(320))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # the instance sending it now; its claim lasts until next_attempt_at, after
    # which another instance may take the row over (the sender froze or died)
    claimed_by: Mapped[str | None] = mapped_column(String(200), default=None)

    __table_args__ = (
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_outbox_rcpt_created", "primary_rcpt", "created_at"),
        Index("ix_outbox_message_pk", "message_pk"),
    )


class AutomaticSend(Base):
    """One automatic mail to one external address: what the rate limits count."""

    __tablename__ = "automatic_sends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime]
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), default=None)
    template: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_automatic_sends_address_at", "address", "at"),
        Index("ix_automatic_sends_at", "at"),
    )


class HeldCommand(Base):
    """A steward's unauthenticated mail, held until the steward confirms it by reply."""

    __tablename__ = "held_commands"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    steward: Mapped[str] = mapped_column(String(200))
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_held_commands_message_pk", "message_pk"),)


class Quarantine(Base):
    """A mail that could not be parsed or processed, kept whole with the reason."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998), default=None)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_quarantine_message_id", "message_id"),)


class Reminder(Base):
    """A reminder or nudge already sent: (ticket, what, stage) never goes twice."""

    __tablename__ = "reminders"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime]


class State(Base):
    """Small named facts the daemon keeps between runs (the roster period handed over...)."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class Lease(Base):
    """Who holds a role among several daemons on one database, and until when."""

    __tablename__ = "leases"

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # the fencing token: one more each time the role changes hands; work done
    # in the role commits only while the lease still carries the epoch it began with
    epoch: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")


class ImapState(Base):
    """Per-folder IMAP progress: UIDVALIDITY and the highest UID handled."""

    __tablename__ = "imap_state"

    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    # UIDVALIDITY is an unsigned 32-bit number: too big for a signed INTEGER
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(Integer, default=0)
    last_sync_at: Mapped[datetime | None] = mapped_column(default=None)
