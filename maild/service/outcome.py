"""What handling one mail (or one operator command, one scheduler action) did.

The pipeline fills an :class:`Outcome` per mail; the outgoing-mail layer adds
each mail it queued (a :class:`PlannedMail`) and each one it left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from maild.core.classify import Classification
from maild.core.conversation import Decision

__all__ = ["Action", "Outcome", "PlannedMail"]

Action = Literal["created", "appended", "duplicate", "quarantined"]


@dataclass(frozen=True, slots=True)
class PlannedMail:
    """A mail the pipeline queued (or, in a dry run, would queue)."""

    template: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    message_id: str


@dataclass(slots=True)
class Outcome:
    """What happened to one mail; the row of ``maild ingest --json``."""

    source: str
    message_id: str | None
    ticket: int | None
    action: Action
    reason: str
    classification: Classification | None = None
    decision: Decision | None = None
    sends: list[PlannedMail] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    command_errors: list[str] = field(default_factory=list)
    # the SPEC section 11 rules that applied, in words (maild explain shows them)
    policy: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.source,
            "message_id": self.message_id,
            "ticket": self.ticket,
            "action": self.action,
            "reason": self.reason,
        }
