"""In-Reply-To and References for a mail maild sends, seen from its readers' mailboxes.

Mail clients (NeoMutt, Thunderbird, Apple Mail; the JWZ algorithm) put a mail
into a thread by the ids in its ``References`` that they already hold. A
ticket's mails do not all reach the same people: the requester has their own
mails and what maild sent them (acknowledgment, relays, notices); the
stewards have what maild sent them (the new request, the requester's
replies passed on, errors, reminders, Bcc copies of relays) and their own
mails. So each outgoing mail refers to the mails *its* readers already have
of the ticket, oldest first, ending with the one it answers.

Every chain starts with a fixed id for the ticket (``maild-ticket-N@domain``,
never the id of a real mail), the habit of Request Tracker's
``RT-Ticket-N@…``, and then the id of the mail that opened the ticket.
Clients group mails whose common ancestor is missing under one placeholder,
so a mail one reader holds none of the others of (a steward just come on
duty, the Bcc copy of a relay) still joins the ticket's thread.

Pure: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["Chain", "Seen", "reply_chain", "ticket_root"]

MAX_REFERENCES = 20


@dataclass(frozen=True, slots=True)
class Seen:
    """A mail on the ticket, as far as who holds it goes.

    ``senders`` wrote it (it is in their sent folder); ``readers`` got it
    (To, Cc and the envelope's Bcc). Addresses lowercased.
    """

    message_id: str
    senders: frozenset[str]
    readers: frozenset[str]

    def held_by(self, audience: Collection[str]) -> bool:
        return any(a in audience for a in (*self.senders, *self.readers))

    def written_by(self, audience: Collection[str]) -> bool:
        return any(a in audience for a in self.senders)


@dataclass(frozen=True, slots=True)
class Chain:
    in_reply_to: str | None
    references: tuple[str, ...]


def ticket_root(ticket_id: int, domain: str) -> str:
    """The ticket's placeholder id, first in every chain (no real mail carries it)."""
    return f"maild-ticket-{ticket_id}@{domain}"


def reply_chain(
    mails: Sequence[Seen],
    audience: Collection[str],
    trigger: str | None,
    root: str,
    *,
    opening: str | None = None,
    prefer_own: bool = False,
) -> Chain:
    """The threading headers of a mail to ``audience``.

    ``mails`` are the ticket's mails, oldest first. ``trigger`` is the id of
    the mail that caused this one. The parent (``In-Reply-To``) is the
    trigger when the audience holds it; else, with ``prefer_own``, the latest
    mail the audience wrote itself (a relay answers the requester's last
    mail); else the latest mail the audience holds; else the trigger.
    ``References`` are ``root``, the ticket's ``opening`` mail, then the mails
    the audience holds up to the parent, oldest first, ending with the parent;
    at most ``MAX_REFERENCES`` ids, the first two and the newest kept.
    """
    held = [m for m in mails if m.held_by(audience)]
    parent: str | None = None
    if trigger is not None and any(m.message_id == trigger for m in held):
        parent = trigger
    if parent is None and prefer_own:
        own = [m for m in held if m.written_by(audience)]
        parent = own[-1].message_id if own else None
    if parent is None and held:
        parent = held[-1].message_id
    if parent is None:
        parent = trigger
    ids: list[str] = []
    for m in held:
        if m.message_id == parent:
            break
        ids.append(m.message_id)
    if parent is not None:
        ids.append(parent)
    refs = list(dict.fromkeys([root, *([opening] if opening else []), *ids]))
    if len(refs) > MAX_REFERENCES:
        refs = [*refs[:2], *refs[-(MAX_REFERENCES - 2) :]]
    return Chain(parent, tuple(refs))
