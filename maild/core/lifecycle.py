"""Ticket states, every status change, and the clock (SPEC section 4).

Pure. Every status change maild makes is a row of :data:`TRANSITIONS`:
(current status, event) -> new status; :func:`step` reads it and says which
time stamps the change sets or clears (:data:`ENTERING`, :data:`REOPENING`,
:data:`EVENT_STAMPS`), and :func:`retype` does the same for a change of type.
Callers write the result onto their ticket; nothing here touches a store.

The one judgement call is :func:`is_confirmation`: a reply to a resolved
ticket that only confirms the fix closes it, while anything that also reports
a remaining problem, asks a question or says more reopens it. When in doubt
it answers False: reopening by mistake costs a steward a glance, closing by
mistake loses a request.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, Protocol, get_args

from maild.config import Config
from maild.core.vocabulary import DONE_STATUSES, STATUSES
from maild.core.workhours import Calendar

__all__ = [
    "DONE",
    "ENTERING",
    "EVENTS",
    "EVENT_STAMPS",
    "REOPENING",
    "RETYPING",
    "STATUSES",
    "TRANSITIONS",
    "Clocked",
    "Dues",
    "Event",
    "Reminder",
    "Stage",
    "Step",
    "compute_dues",
    "is_confirmation",
    "retype",
    "set_event",
    "step",
]

DONE = DONE_STATUSES  # no clock runs; leaving them reopens the ticket

# -- every status change: (current status, event) -> new status ----------------------

Event = Literal[
    # a steward's tag ([resolved], [reopen], [status=X]...) or an operator's verb
    # (maild resolve/close/reopen): any status may be set, SPEC 3 and 8
    "set_new",
    "set_open",
    "set_waiting",
    "set_resolved",
    "set_closed",
    # a steward's reply relayed to the requester: the first human response
    "relay",
    # the same, in a mail whose own tags set the status: the tags win
    "relay_after_set",
    # the requester writes: an answer to a waiting ticket, a new problem on a resolved one
    "reply",
    # the requester writes only to confirm the fix (is_confirmation, tickets.confirmation_closes)
    "confirm",
    # the scheduler: resolved with no mail from the requester for tickets.auto_close_after
    "auto_close",
]
EVENTS: tuple[Event, ...] = get_args(Event)
_SET: Mapping[str, Event] = MappingProxyType(
    {
        "new": "set_new",
        "open": "set_open",
        "waiting": "set_waiting",
        "resolved": "set_resolved",
        "closed": "set_closed",
    }
)

# Every status change maild makes. A pair not listed leaves the status as it is
# (a requester's reply to an open ticket, a relay on a waiting one...).
TRANSITIONS: Mapping[tuple[str, Event], str] = MappingProxyType(
    {
        # a steward or operator may set any status on any ticket, closed ones included
        **{(s, _SET[t]): t for s in STATUSES for t in STATUSES if s != t},
        ("new", "relay"): "open",  # SPEC 4: the first relayed steward reply opens it
        ("waiting", "reply"): "open",  # SPEC 4: the requester answered
        ("resolved", "reply"): "open",  # SPEC 4: a reply that is not only thanks reopens
        ("waiting", "confirm"): "open",  # thanks on a waiting ticket is still an answer
        ("resolved", "confirm"): "closed",  # SPEC 4: "Thanks, that works now!" closes
        ("resolved", "auto_close"): "closed",  # SPEC 4 and 10: 48 working hours of silence
        # closed is final for mail: a requester's reply opens a follow-up ticket
        # (conversation.decide), so no event but a steward's or operator's moves it
    }
)

NOW: Final = "now"  # the stamp is set to the time of the event
FIRST: Final = "first"  # ... unless it is already set
CLEAR: Final = "clear"  # the stamp is cleared
Stamp = Literal["now", "first", "clear"]

# What entering a status does to the time stamps ...
ENTERING: Mapping[str, Mapping[str, Stamp]] = MappingProxyType(
    {
        "resolved": {"resolved_at": NOW, "closed_at": CLEAR},  # closed -> resolved is not closed
        "closed": {"closed_at": NOW},
    }
)
# ... and leaving resolved or closed for an active status (the ticket is reopened).
REOPENING: Mapping[str, Stamp] = MappingProxyType({"resolved_at": CLEAR, "closed_at": CLEAR})
# What an event stamps whether or not the status moves.
EVENT_STAMPS: Mapping[Event, Mapping[str, Stamp]] = MappingProxyType(
    {
        # SPEC 4: first human response; a relayed reply counts as an incident update
        "relay": {"first_response_at": FIRST, "last_update_at": NOW},
        "relay_after_set": {"first_response_at": FIRST, "last_update_at": NOW},
    }
)
# What a change of type stamps: setting any type triages the ticket; becoming
# an incident starts its update cadence now.
RETYPING: Mapping[str, Mapping[str, Stamp]] = MappingProxyType(
    {"triaged": {"triaged_at": FIRST}, "incident": {"last_update_at": NOW}}
)


class Stage(Protocol):
    """The ticket fields a lifecycle step reads."""

    @property
    def status(self) -> str: ...
    @property
    def type(self) -> str | None: ...
    @property
    def triaged_at(self) -> datetime | None: ...
    @property
    def first_response_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Step:
    """What one event does: the new status (None: unchanged) and the time stamps
    it sets (to a time) or clears (to None)."""

    status: str | None
    stamps: Mapping[str, datetime | None]


def set_event(status: str) -> Event:
    """The event of a steward or operator setting ``status``."""
    try:
        return _SET[status]
    except KeyError:
        raise ValueError(f"not a ticket status: {status!r}") from None


def _resolve(
    t: Stage, marks: Mapping[str, Stamp], now: datetime, into: dict[str, datetime | None]
) -> None:
    for name, mark in marks.items():
        if mark == NOW:
            into[name] = now
        elif mark == CLEAR:
            into[name] = None
        elif getattr(t, name) is None and name not in into:  # FIRST
            into[name] = now


def step(t: Stage, event: Event, now: datetime) -> Step:
    """The status ``event`` moves ``t`` to, by :data:`TRANSITIONS`, and the stamps it sets."""
    new = TRANSITIONS.get((t.status, event))
    stamps: dict[str, datetime | None] = {}
    if new is not None:
        if new in ENTERING:
            _resolve(t, ENTERING[new], now, stamps)
        elif t.status in DONE:
            _resolve(t, REOPENING, now, stamps)
    _resolve(t, EVENT_STAMPS.get(event, {}), now, stamps)
    return Step(new, stamps)


def retype(t: Stage, new_type: str | None, now: datetime) -> dict[str, datetime | None]:
    """The stamps a change of ``t``'s type to ``new_type`` sets."""
    stamps: dict[str, datetime | None] = {}
    if new_type:
        _resolve(t, RETYPING["triaged"], now, stamps)
    if new_type == "incident" and t.type != "incident":
        _resolve(t, RETYPING["incident"], now, stamps)
    return stamps


# Thanks / it works, in the languages our communities write in.
_POSITIVE = re.compile(
    r"""
    \b(thanks?|thank\s+you|thx|ty|cheers|great|perfect|excellent|awesome|wonderful|
       (it|that|this|all|everything)('?s|\s+is)?\s+(now\s+)?(works?|working|fixed|solved|
       resolved|fine|good|ok(ay)?|back)|
       works?\s+(now|again|fine|great|perfectly)|(is|are)\s+(now\s+)?(working|fixed|back)|
       problem\s+solved|all\s+good|looks\s+good|confirmed?|
       danke|vielen\s+dank|funktioniert(\s+(jetzt|wieder))?|klappt(\s+(jetzt|wieder))?|
       merci|ça\s+marche|ca\s+marche|fonctionne|
       gracias|funciona|
       grazie|
       dank\s*(je|u)(\s+wel)?|werkt(\s+weer)?|
       tack|fungerar|virker|takk|kiitos|
       obrigad[oa]|
       спасибо|работает|
       谢谢|感谢|好了|可以了|ありがとう)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

# A remaining problem, a doubt or a new request.
_NEGATIVE = re.compile(
    r"""
    \b(but|however|still|yet|though|although|except|unfortunately|again\s+(down|failing|broken)|
       not|no|never|doesn'?t|don'?t|isn'?t|aren'?t|won'?t|can'?t|cannot|couldn'?t|didn'?t|
       fail(s|ed|ing|ure)?|error|errors|broken|issue|issues|problem|problems|bug|crash(es|ed)?|
       wrong|slow|timeout|missing|another|also|one\s+more|
       aber|noch|nicht|kein|leider|fehler|immer\s+noch|
       mais|toujours|pas|encore|erreur|
       pero|todavía|todavia|sigue|error|
       ma|ancora|
       maar|nog|niet|
       men|fortfarande|inte|ikke|
       но|ещё|еще|не|
       但|还是|仍然|不)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

_MAX_WORDS = 40


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return text.replace("\u2019", "'")


def is_confirmation(new_text: str) -> bool:
    """True if a reply's new text (quotes and signature already removed) only confirms a fix."""
    text = _normalise(new_text).strip()
    if not text:
        return False
    if "?" in text:
        return False
    if len(text.split()) > _MAX_WORDS:
        return False
    if _NEGATIVE.search(text):
        return False
    return bool(_POSITIVE.search(text))


# -- the clock: when each promise falls due ------------------------------------------


@dataclass(frozen=True, slots=True)
class Clocked:
    """The ticket fields the clock reads (all datetimes aware)."""

    status: str
    type: str | None
    created_at: datetime
    triaged_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    update_every_minutes: int | None
    last_update_at: datetime | None


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder the scheduler owes: ``kind`` (triage, first_response, nudge) and stage."""

    kind: str
    stage: str  # warn | breach | an ISO time for nudges
    at: datetime


@dataclass(frozen=True, slots=True)
class Dues:
    """Every due time of one ticket, and the earliest instant with work for the scheduler."""

    triage_due_at: datetime | None
    response_due_at: datetime | None
    close_due_at: datetime | None
    next_update_at: datetime | None
    next_due_kind: str | None
    next_due_at: datetime | None
    reminders: tuple[Reminder, ...]
    next_action_at: datetime | None


def _sla_due(
    calendar: Calendar, start: datetime, target: timedelta | None, clock: str, fraction: float
) -> tuple[datetime, datetime] | None:
    if target is None:
        return None
    if clock == "wall":
        return start + target * fraction, start + target
    return calendar.add(start, target * fraction), calendar.add(start, target)


def compute_dues(
    t: Clocked,
    config: Config,
    calendar: Calendar,
    sent: frozenset[tuple[str, str]] = frozenset(),
) -> Dues:
    """All due times of ``t``; ``sent`` holds the (kind, stage) reminders already sent."""
    active = t.status not in DONE
    target = config.sla.target_for(t.type)
    warn_at = config.sla.warn_at
    reminders: list[Reminder] = []
    triage_due = response_due = None
    open_targets: list[tuple[datetime, str]] = []
    if active and t.triaged_at is None:
        dues = _sla_due(calendar, t.created_at, target.triage, target.clock, warn_at)
        if dues is not None:
            warn, triage_due = dues
            open_targets.append((triage_due, "triage"))
            reminders += [
                Reminder("triage", "warn", warn),
                Reminder("triage", "breach", triage_due),
            ]
    if active and t.first_response_at is None:
        dues = _sla_due(calendar, t.created_at, target.first_response, target.clock, warn_at)
        if dues is not None:
            warn, response_due = dues
            open_targets.append((response_due, "first_response"))
            reminders += [
                Reminder("first_response", "warn", warn),
                Reminder("first_response", "breach", response_due),
            ]
    next_update = None
    if active and t.type == "incident":
        every = (
            timedelta(minutes=t.update_every_minutes)
            if t.update_every_minutes
            else config.incidents.update_every
        )
        base = t.last_update_at or t.triaged_at or t.created_at
        next_update = base + every
        open_targets.append((next_update, "update"))
        nudge = config.incidents.nudge_before
        if nudge > timedelta(0):
            reminders.append(Reminder("nudge", next_update.isoformat(), next_update - nudge))
    close_due = None
    if t.status == "resolved" and t.resolved_at is not None:
        close_due = calendar.add(t.resolved_at, config.tickets.auto_close_after)
    owed = tuple(r for r in reminders if (r.kind, r.stage) not in sent)
    candidates = [r.at for r in owed]
    candidates += [d for d in (next_update, close_due) if d is not None]
    due_at, due_kind = min(open_targets) if open_targets else (None, None)
    return Dues(
        triage_due_at=triage_due,
        response_due_at=response_due,
        close_due_at=close_due,
        next_update_at=next_update,
        next_due_kind=due_kind,
        next_due_at=due_at,
        reminders=owed,
        next_action_at=min(candidates) if candidates else None,
    )
