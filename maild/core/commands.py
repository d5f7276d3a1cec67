"""Apply steward commands to a ticket: one code path for mail tags and the CLI.

Pure, on plain values: a :class:`TicketState` is the snapshot of the ticket
fields the rules read. :func:`plan` checks parsed commands against it and
returns the field changes they make (or nothing, if none would change
anything); :func:`apply` works out what those changes write, time stamps
included (by :mod:`maild.core.lifecycle`), and :func:`transition` does the
same for a status change that is not a command (a requester's reply, a
relay, the auto-close). The caller writes the :class:`Applied` result onto
its ticket inside its transaction, so a mail's commands take effect together
or not at all (the ORM's side: ``maild.store.views.as_state`` reads a
ticket, ``maild.store.ticketstate`` writes the result back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from maild.config import Config
from maild.core import lifecycle, policy
from maild.core.tags import Command, ParsedSubject

__all__ = ["Applied", "Change", "Plan", "TicketState", "apply", "plan", "transition"]


@dataclass(frozen=True, slots=True)
class TicketState:
    """The ticket fields commands and the lifecycle read (datetimes aware)."""

    status: str
    type: str | None
    priority: str
    community: str | None
    requester: str
    cc: tuple[str, ...]
    assignee: str | None
    incident_commander: str | None
    links: tuple[str, ...]
    time_spent_minutes: int
    update_every_minutes: int | None
    triaged_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    last_update_at: datetime | None


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


def plan(
    ticket: TicketState, parsed: ParsedSubject, actor_steward: str | None, config: Config
) -> Plan:
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


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying changes writes: ``fields`` maps each field that changes to its
    new value (sequences as tuples), ``state`` is the ticket afterwards, and
    ``changes`` the field changes for the timeline."""

    fields: Mapping[str, object]
    state: TicketState
    changes: tuple[Change, ...]


def apply(ticket: TicketState, changes: Sequence[Change], now: datetime) -> Applied:
    """What planned changes write onto ``ticket``, the lifecycle time stamps included."""
    fields: dict[str, object] = {}
    state = ticket
    for change in changes:
        written: dict[str, object] = {}
        if change.field == "links":
            written["links"] = (*state.links, *(change.new or "").split())
        elif change.field == "cc":
            written["cc"] = tuple(a for a in (change.new or "").split(", ") if a)
        elif change.field == "time_spent_minutes":
            written["time_spent_minutes"] = int(change.new or 0)
        elif change.field == "update_every_minutes":
            written["update_every_minutes"] = int(change.new) if change.new else None
        elif change.field == "status":
            if change.new is None:
                raise ValueError("a ticket always has a status")
            moved = lifecycle.step(state, lifecycle.set_event(change.new), now)
            written["status"] = change.new
            written.update(moved.stamps)
        else:
            if change.field == "type":
                written.update(lifecycle.retype(state, change.new, now))
            written[change.field] = change.new
        state = dataclasses.replace(state, **written)  # type: ignore[arg-type]
        fields.update(written)
    return Applied(fields, state, tuple(changes))


def transition(ticket: TicketState, event: lifecycle.Event, now: datetime) -> Applied:
    """What ``event`` (a relay, a requester's reply, the auto-close...) does to
    ``ticket``: the status change it makes, if any, and its time stamps."""
    moved = lifecycle.step(ticket, event, now)
    fields: dict[str, object] = dict(moved.stamps)
    changes: tuple[Change, ...] = ()
    if moved.status is not None:
        fields["status"] = moved.status
        changes = (Change("status", ticket.status, moved.status),)
    state = dataclasses.replace(ticket, **fields)  # type: ignore[arg-type]
    return Applied(fields, state, changes)
