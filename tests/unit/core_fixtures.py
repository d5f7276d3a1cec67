"""Small builders shared by the pure-core unit tests: a config from a few TOML-like
keys, and a parsed mail from a handful of headers (through the real parser)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from maild.config import Config, parse_config
from maild.core.commands import TicketState
from maild.core.inbound import InboundMail, parse_mail
from maild.store.models import Ticket

# Wed 25 Nov 2026, 15:00 UTC (09:00 in Chicago): a working day, mid-morning
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=2)

SUPPORT = "support@example.org"
REQUESTER = "rosa@example.net"
COLLEAGUE = "colleague@example.net"
STRANGER = "mallory@elsewhere.example"
REP = "rep@pangeo.example"
ALICE = "alice@example.org"
BOB = "bob@example.org"

BASE: dict[str, Any] = {
    "support": {"address": SUPPORT, "name": "Example Support"},
    "stewards": [
        {"name": "alice", "addresses": [ALICE]},
        {"name": "bob", "addresses": [BOB]},
        {"name": "carol", "addresses": ["carol@example.org"]},
    ],
    "communities": [
        {"name": "pangeo", "representatives": [REP], "domains": ["pangeo.example"]},
    ],
}


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def make_config(**sections: Any) -> Config:
    """The base config (three stewards, one community) with ``sections`` merged in."""
    return parse_config(_merge(copy.deepcopy(BASE), sections))


def make_mail(
    subject: str = "Hub is down",
    *,
    sender: str = REQUESTER,
    message_id: str = "m1@client.example",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    extra: Mapping[str, str] | None = None,
    body: str = "Hello,\nthe hub returns 502.\n",
) -> InboundMail:
    """A plain-text mail parsed by :func:`maild.core.inbound.parse_mail`."""
    lines = [
        f"From: Someone <{sender}>",
        f"To: {SUPPORT}",
        f"Subject: {subject}",
        "Date: Wed, 25 Nov 2026 14:59:00 +0000",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        lines.append("References: " + " ".join(f"<{r}>" for r in references))
    for name, value in (extra or {}).items():
        lines.append(f"{name}: {value}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body]
    return parse_mail("\r\n".join(lines).encode("utf-8"))


_TICKET: dict[str, Any] = {
    "id": 42,
    "subject": "Hub is down",
    "subject_key": "hub is down",
    "status": "open",
    "type": None,
    "priority": "normal",
    "community": None,
    "requester": REQUESTER,
    "cc": [COLLEAGUE],
    "assignee": None,
    "incident_commander": None,
    "links": [],
    "time_spent_minutes": 0,
    "created_at": EARLIER,
    "triaged_at": None,
    "first_response_at": None,
    "resolved_at": None,
    "closed_at": None,
    "update_every_minutes": None,
    "last_update_at": None,
}


def ticket(**fields: Any) -> Ticket:
    """A transient (never stored) ticket with the defaults a new ticket gets."""
    return Ticket(**{**copy.deepcopy(_TICKET), **fields})


def state(**fields: Any) -> TicketState:
    """The plain-value snapshot of :func:`ticket` with ``fields`` (lists become tuples)."""
    values: dict[str, Any] = {**_TICKET, **fields}
    names = TicketState.__dataclass_fields__
    plain: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names
    }
    return TicketState(**plain)
