"""Apply steward commands to a ticket: one code path for mail tags and the CLI.

:func:`plan` checks parsed commands against the ticket and returns the field
changes they make (or nothing, if none would change anything); the caller
applies them all with :func:`apply` inside its transaction, so a mail's
commands take effect together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from maild.config import Config
from maild.core import policy
from maild.core.tags import Command, ParsedSubject
from maild.store.models import Ticket

__all__ = ["Change", "Plan", "apply", "plan"]


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...]
    note: bool
    silent: bool
    # commands that cannot be carried out on this ticket: "[tag]: why"
    errors: tuple[str, ...] = ()
    # the canned reply ([reply=NAME]) to relay after the steward's own words
    canned: str | None = None

    @property
    def status(self) -> str | None:
        for change in reversed(self.changes):
            if change.field == "status":
                return change.new
        return None

    def describe(self) -> list[str]:
        """One line per change, for receipts and the CLI."""
        lines = [f"{c.field}: {c.old or '-'} -> {c.new or '-'}" for c in self.changes]
        if self.note:
            lines.append("kept as an internal note")
        if self.silent:
            lines.append("nothing relayed to the requester")
        elif self.canned and not self.note:
            lines.append(f"canned reply {self.canned} relayed")
        return lines


def _person(cmd: Command, actor_steward: str | None) -> str | None:
    if cmd.value == "none":
        return None
    if cmd.value == "me":
        return actor_steward
    return cmd.value


def plan(ticket: Ticket, parsed: ParsedSubject, actor_steward: str | None, config: Config) -> Plan:
    """The changes ``parsed`` makes to ``ticket``. ``actor_steward`` is who ``me`` means."""
    fields: dict[str, str | None] = {}
    order: list[str] = []
    links: list[str] = []
    minutes = 0
    errors: list[str] = []
    cc = tuple(ticket.cc)

    def setf(name: str, value: str | None) -> None:
        if name not in fields:
            order.append(name)
        fields[name] = value

    for cmd in parsed.commands:
        if cmd.key in ("status", "type", "priority", "community"):
            setf(cmd.key, cmd.value)
        elif cmd.key == "assign":
            setf("assignee", _person(cmd, actor_steward))
        elif cmd.key == "ic":
            setf("incident_commander", _person(cmd, actor_steward))
        elif cmd.key == "link" and cmd.value:
            if cmd.value not in ticket.links and cmd.value not in links:
                links.append(cmd.value)
        elif cmd.key == "time" and cmd.minutes:
            minutes += cmd.minutes
        elif cmd.key == "update-every" and cmd.minutes:
            setf("update_every", str(cmd.minutes))
        elif cmd.key == "cc" and cmd.value:
            cc, why = policy.steward_cc_change(
                "-" if cmd.value.startswith("-") else "+",
                cmd.value[1:],
                requester=ticket.requester,
                current_cc=cc,
                max_cc=config.tickets.max_cc,
                internal=config.internal_addresses,
            )
            if why is not None:
                errors.append(f"{cmd.source}: {why}")

    changes: list[Change] = []
    for name in order:
        new = fields[name]
        if name == "update_every":
            old = str(ticket.update_every_minutes) if ticket.update_every_minutes else None
            if old != new:
                changes.append(Change("update_every_minutes", old, new))
            continue
        old = getattr(ticket, name)
        if old != new:
            changes.append(Change(name, old, new))
    if links:
        changes.append(Change("links", None, " ".join(links)))
    if cc != tuple(ticket.cc):
        changes.append(Change("cc", ", ".join(ticket.cc), ", ".join(cc)))
    if minutes:
        total = ticket.time_spent_minutes + minutes
        changes.append(Change("time_spent_minutes", str(ticket.time_spent_minutes), str(total)))
    return Plan(
        changes=tuple(changes),
        note=parsed.has("note"),
        silent=parsed.has("silent"),
        errors=tuple(errors),
        canned=reply.value if (reply := parsed.get("reply")) is not None else None,
    )


def apply(ticket: Ticket, changes: Sequence[Change], now: datetime) -> None:
    """Write planned changes onto ``ticket`` and keep the lifecycle time stamps in step."""
    for change in changes:
        if change.field == "links":
            ticket.links = [*ticket.links, *(change.new or "").split()]
        elif change.field == "cc":
            ticket.cc = [a for a in (change.new or "").split(", ") if a]
        elif change.field == "time_spent_minutes":
            ticket.time_spent_minutes = int(change.new or 0)
        elif change.field == "update_every_minutes":
            ticket.update_every_minutes = int(change.new) if change.new else None
        else:
            setattr(ticket, change.field, change.new)
        if change.field == "type" and change.new and ticket.triaged_at is None:
            ticket.triaged_at = now
        if change.field == "type" and change.new == "incident" and change.old != "incident":
            # the incident's update cadence counts from when it became one
            ticket.last_update_at = now
        if change.field == "status":
            if change.new == "resolved":
                ticket.resolved_at = now
                ticket.closed_at = None  # a closed ticket set back to resolved is not closed
            elif change.new == "closed":
                ticket.closed_at = now
            elif change.old in ("resolved", "closed"):
                ticket.resolved_at = None
                ticket.closed_at = None
