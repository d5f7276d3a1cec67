"""Which ticket a mail belongs to: the threading rules of SPEC section 2.

Pure: the pipeline looks up the candidate tickets in the store (each look-up an
index hit) and hands them to :func:`decide` with the mail; :func:`decide`
applies the rules in order and says which matched and why. ``maild explain``
prints that reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from maild.config import Config
from maild.core.classify import Classification
from maild.core.inbound import InboundMail
from maild.core.subjects import find_ticket_refs, is_reply_subject, normalize_for_match

__all__ = [
    "Candidates",
    "Decision",
    "Rule",
    "TicketView",
    "decide",
    "referenced_ids",
    "thread_root",
]

Rule = Literal["references", "thread-index", "subject-tag", "reply-subject", "new"]

# Outlook's Thread-Index: 22 bytes for the conversation (1 reserved, 5 time,
# 16 GUID), then 5 bytes per reply. The first 22 name the thread.
_THREAD_ROOT_BYTES = 22


@dataclass(frozen=True, slots=True)
class TicketView:
    """What threading needs to know of one ticket."""

    id: int
    status: str
    requester: str
    community: str | None
    subject_key: str
    last_activity_at: datetime
    members: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Tickets the store found for a mail, one field per rule."""

    by_message_id: Mapping[str, TicketView] = field(default_factory=dict)
    by_thread_root: TicketView | None = None
    by_number: Mapping[int, TicketView] = field(default_factory=dict)
    by_subject: Sequence[TicketView] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome: an existing ticket to append to, or a new ticket.

    ``ticket_id`` is None for a new ticket. ``follow_up_of`` is set when the
    matched ticket is closed (the mail opens a follow-up). ``quoted_tag`` is a
    ticket number a stranger quoted, recorded on their new ticket.
    """

    rule: Rule
    ticket_id: int | None
    reason: str
    follow_up_of: int | None = None
    quoted_tag: int | None = None


def referenced_ids(mail: InboundMail) -> tuple[str, ...]:
    """Message-IDs the mail refers to, most specific first (In-Reply-To, then newest reference)."""
    seen: dict[str, None] = {}
    for mid in (*mail.in_reply_to, *reversed(mail.references)):
        if mid and mid != mail.message_id:
            seen.setdefault(mid, None)
    return tuple(seen)


def thread_root(thread_index: str | None) -> str | None:
    """The conversation part of an Outlook Thread-Index, re-encoded; None if unusable."""
    if not thread_index:
        return None
    text = "".join(thread_index.split())
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _THREAD_ROOT_BYTES:
        return None
    return base64.b64encode(raw[:_THREAD_ROOT_BYTES]).decode("ascii")


def _belongs(ticket: TicketView, sender: str, cls: Classification, config: Config) -> bool:
    if cls.steward is not None or sender in ticket.members or sender == ticket.requester:
        return True
    if ticket.community is not None:
        community = config.community_by_name(ticket.community)
        if community is not None and sender in community.representatives:
            return True
    return False


def _found(rule: Rule, ticket: TicketView, reason: str, steward: bool = False) -> Decision:
    if ticket.status == "closed" and not steward:
        return Decision(
            rule=rule,
            ticket_id=None,
            reason=f"{reason}; #{ticket.id} is closed, so this opens a follow-up",
            follow_up_of=ticket.id,
        )
    if ticket.status == "closed":
        # a steward may write on a closed ticket (to reopen it, or a last word)
        reason += f"; #{ticket.id} is closed but the sender is a steward"
    return Decision(rule=rule, ticket_id=ticket.id, reason=reason)


def decide(
    mail: InboundMail,
    cls: Classification,
    candidates: Candidates,
    config: Config,
    now: datetime,
) -> Decision:
    """Apply the threading rules in order; the first that matches wins."""
    steward = cls.steward is not None
    for mid in referenced_ids(mail):
        ticket = candidates.by_message_id.get(mid)
        if ticket is not None:
            header = "In-Reply-To" if mid in mail.in_reply_to else "References"
            return _found(
                "references", ticket, f"{header} <{mid}> is a message on #{ticket.id}", steward
            )

    root = thread_root(mail.thread_index)
    ticket = candidates.by_thread_root
    if root is not None and ticket is not None:
        topic = normalize_for_match(mail.thread_topic or mail.subject, config.support.tag)
        if topic == ticket.subject_key:
            return _found(
                "thread-index",
                ticket,
                f"Outlook Thread-Index and Thread-Topic match the thread of #{ticket.id}",
                steward,
            )

    sender = mail.from_addr or ""
    quoted: int | None = None
    for number in find_ticket_refs(mail.subject, config.support.tag):
        ticket = candidates.by_number.get(number)
        if ticket is None:
            continue
        if _belongs(ticket, sender, cls, config):
            return _found(
                "subject-tag",
                ticket,
                f"subject tag #{number} and the sender {sender} belongs to #{number}",
                steward,
            )
        quoted = quoted if quoted is not None else number

    if sender and is_reply_subject(mail.subject):
        key = normalize_for_match(mail.subject, config.support.tag)
        window = now - timedelta(days=config.tickets.subject_match_days)
        matches = [
            t
            for t in candidates.by_subject
            if t.subject_key == key
            and t.last_activity_at >= window
            and (sender == t.requester or sender in t.members)
        ]
        if key and matches:
            best = max(matches, key=lambda t: (t.last_activity_at, t.id))
            return _found(
                "reply-subject",
                best,
                f"reply subject matches #{best.id}, where {sender} is on the thread, "
                f"active within {config.tickets.subject_match_days} days",
                steward,
            )

    if quoted is not None:
        return Decision(
            rule="new",
            ticket_id=None,
            reason=f"quotes tag #{quoted} but {sender or 'the sender'} is not on that ticket",
            quoted_tag=quoted,
        )
    return Decision(rule="new", ticket_id=None, reason="no thread matched: a new ticket")
