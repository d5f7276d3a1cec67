"""The steward's subject-tag grammar (SPEC section 3): subject -> commands or errors.

Pure and total: :func:`parse_subject` never raises. It returns the subject with
the command tags removed, the commands it understood, and one error per tag it
could not accept, each saying what is accepted. Callers apply all commands or,
if there is any error, none.

Grammar: ``[key=value]`` or ``[flag]``; several in one bracket separated by
``;``; any number of brackets anywhere in the subject; keys and flags are
case-insensitive; values are trimmed. Our own ticket tags (``[support #42]``,
``[#42]``) are not commands. Bracketed text that is part of the ticket's
subject (a list prefix such as ``[pangeo-hub]`` the requester put there) is
not a command either, so a steward's plain reply never trips over it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from maild.core.durations import parse_duration
from maild.core.vocabulary import PRIORITIES, STATUSES, TYPES

__all__ = [
    "ACCEPTED",
    "Command",
    "ParsedSubject",
    "TagError",
    "parse_subject",
]


_FLAGS: dict[str, tuple[str, str | None]] = {
    "open": ("status", "open"),
    "reopen": ("status", "open"),
    "waiting": ("status", "waiting"),
    "pending": ("status", "waiting"),
    "resolved": ("status", "resolved"),
    "resolve": ("status", "resolved"),
    "closed": ("status", "closed"),
    "close": ("status", "closed"),
    "incident": ("type", "incident"),
    "change": ("type", "change"),
    "guidance": ("type", "guidance"),
    "note": ("note", None),
    "silent": ("silent", None),
}

_KEY_ALIASES = {"update_every": "update-every", "updateevery": "update-every", "assignee": "assign"}

ACCEPTED: dict[str, str] = {
    "status": "[status=new|open|waiting|resolved|closed] or [open] [reopen] [waiting] "
    "[pending] [resolved] [closed]",
    "type": "[type=incident|change|guidance] or [incident] [change] [guidance]",
    "priority": "[priority=low|normal|high|urgent]",
    "assign": "[assign=NAME] with a steward's name, [assign=me] or [assign=none]",
    "ic": "[ic=NAME] with a steward's name, [ic=me] or [ic=none]",
    "community": "[community=NAME] with a configured community",
    "link": "[link=URL] with an http(s) URL",
    "time": "[time=DURATION] such as 30m, 1h, 1h30m, 1.5h",
    "update-every": "[update-every=DURATION] such as 1h, 3h, 30m",
    "requester": "[requester=ADDRESS] on a new mail to open a ticket for someone",
    "cc": "[cc=+ADDRESS] to add an address to the ticket's cc, [cc=-ADDRESS] to remove one",
    "confirm": "[confirm=TOKEN] with the token of a confirmation mail maild sent you",
    "note": "[note]",
    "silent": "[silent]",
    "reply": "[reply=NAME] with the name of a canned reply (maild replies lists them)",
}

_TICKET_TAG = re.compile(r"^\s*(?:[\w.-]+\s*)?#\s*\d+\s*$")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_ADDRESS = re.compile(r"^[^@\s<>\[\]]+@[^@\s<>\[\]]+\.[^@\s<>\[\]]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_URL = re.compile(r"^https?://[^\s<>\"]+$", re.IGNORECASE)
_REPLY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True, slots=True)
class Command:
    """One understood command. ``value`` is normalised (lowercase names, minutes for time)."""

    key: str
    value: str | None
    source: str
    minutes: int | None = None
    duration: timedelta | None = None


@dataclass(frozen=True, slots=True)
class TagError:
    """A tag that was not accepted, and what would have been."""

    tag: str
    message: str


@dataclass(frozen=True, slots=True)
class ParsedSubject:
    subject: str
    commands: tuple[Command, ...]
    errors: tuple[TagError, ...]

    def get(self, key: str) -> Command | None:
        """The last command with ``key`` (a later tag overrides an earlier one)."""
        for cmd in reversed(self.commands):
            if cmd.key == key:
                return cmd
        return None

    def has(self, key: str) -> bool:
        return self.get(key) is not None


def _error(tag: str, key: str, problem: str) -> TagError:
    accepted = ACCEPTED.get(key)
    tail = f"; accepted: {accepted}" if accepted else ""
    return TagError(tag, f"{problem}{tail}")


def _unknown(tag: str, key: str) -> TagError:
    keys = ", ".join(sorted(ACCEPTED))
    return TagError(tag, f"unknown tag {key!r}; accepted tags: {keys}")


def _parse_item(
    item: str,
    stewards: Collection[str],
    communities: Collection[str],
    replies: Collection[str] | None = None,
) -> Command | TagError:
    text = item.strip()
    source = f"[{text}]"
    if "=" not in text:
        flag = text.lower()
        if flag in _FLAGS:
            key, value = _FLAGS[flag]
            return Command(key, value, source)
        if flag in ACCEPTED:
            return _error(source, flag, f"{flag!r} needs a value")
        return _unknown(source, flag)
    raw_key, _, raw_value = text.partition("=")
    key = raw_key.strip().lower()
    key = _KEY_ALIASES.get(key, key)
    value = raw_value.strip()
    if key not in ACCEPTED:
        return _unknown(source, key)
    if not value:
        return _error(source, key, f"{key!r} needs a value")
    low = value.lower()
    if key == "status":
        if low == "pending":
            low = "waiting"
        if low == "reopen":
            low = "open"
        if low not in STATUSES:
            return _error(source, key, f"{value!r} is not a status")
        return Command(key, low, source)
    if key == "type":
        if low not in TYPES:
            return _error(source, key, f"{value!r} is not a ticket type")
        return Command(key, low, source)
    if key == "priority":
        if low not in PRIORITIES:
            return _error(source, key, f"{value!r} is not a priority")
        return Command(key, low, source)
    if key in ("assign", "ic"):
        if low in ("me", "none"):
            return Command(key, low, source)
        if low not in {s.lower() for s in stewards}:
            return _error(source, key, f"{value!r} is not a steward")
        return Command(key, low, source)
    if key == "community":
        names = {c.lower(): c for c in communities}
        if low not in names:
            return _error(source, key, f"{value!r} is not a configured community")
        return Command(key, names[low], source)
    if key == "link":
        if not _URL.match(value):
            return _error(source, key, f"{value!r} is not an http(s) URL")
        return Command(key, value, source)
    if key in ("time", "update-every"):
        try:
            duration = parse_duration(value)
        except ValueError:
            return _error(source, key, f"{value!r} is not a duration")
        minutes = round(duration.total_seconds() / 60)
        if minutes <= 0:
            return _error(source, key, f"{value!r} is shorter than a minute")
        return Command(key, low, source, minutes=minutes, duration=duration)
    if key == "requester":
        if not _ADDRESS.match(value):
            return _error(source, key, f"{value!r} is not a mail address")
        return Command(key, low, source)
    if key == "cc":
        op, address = (value[0], value[1:].strip()) if value[0] in "+-" else ("+", value)
        if not _ADDRESS.match(address):
            return _error(source, key, f"{address!r} is not a mail address")
        return Command(key, op + address.lower(), source)
    if key == "confirm":
        if not _TOKEN.match(value):
            return _error(source, key, f"{value!r} is not a confirmation token")
        return Command(key, value, source)
    if key == "reply":
        if not _REPLY_NAME.match(low) or (replies is not None and low not in replies):
            known = ", ".join(sorted(replies)) if replies else "none"
            return TagError(
                source, f"{value!r} is not a canned reply; the canned replies are: {known}"
            )
        return Command(key, low, source)
    return _error(source, key, f"{key!r} takes no value")  # note, silent


def parse_subject(
    subject: str,
    *,
    stewards: Collection[str] = (),
    communities: Collection[str] = (),
    ticket_subject: str = "",
    replies: Collection[str] | None = None,
) -> ParsedSubject:
    """Split a steward's subject into (subject without command tags, commands, errors).

    ``stewards`` and ``communities`` are the configured names that ``assign``,
    ``ic`` and ``community`` accept. Brackets whose text occurs in
    ``ticket_subject`` are left in the subject as plain text. ``replies`` are the
    canned replies ``reply`` accepts (``None``: any well-formed name).
    """
    commands: list[Command] = []
    errors: list[TagError] = []
    # each bracket of the ticket's subject excuses one occurrence, no more: a
    # ticket called "[Note] billing" must not swallow a steward's real [note]
    known = Counter(m.group(0).casefold() for m in _BRACKET.finditer(ticket_subject))
    kept: list[str] = []
    pos = 0
    for match in _BRACKET.finditer(subject):
        inner = match.group(1)
        kept.append(subject[pos : match.start()])
        pos = match.end()
        if _TICKET_TAG.match(inner) or not inner.strip():
            kept.append(match.group(0))
            continue
        text = match.group(0).casefold()
        if known[text] > 0:
            known[text] -= 1
            kept.append(match.group(0))
            continue
        kept.append(" ")
        for item in inner.split(";"):
            if not item.strip():
                continue
            result = _parse_item(item, stewards, communities, replies)
            if isinstance(result, Command):
                commands.append(result)
            else:
                errors.append(result)
    kept.append(subject[pos:])
    clean = " ".join("".join(kept).split())
    return ParsedSubject(clean, tuple(commands), tuple(errors))
