"""Which stewards hear of a requester's reply (SPEC section 7, ``requester_reply``).

Pure: names in, names out. The people working a ticket are its assignee, its
incident commander and every steward who has written on it, whether they are
on duty today or not: an incident commander off the roster still needs the
requester's answer. Only a ticket nobody has touched goes to the stewards on
duty.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["reply_recipients"]


def reply_recipients(
    assignee: str | None,
    incident_commander: str | None,
    wrote: Iterable[str],
    on_duty: Iterable[str],
) -> list[str]:
    """Steward names to get a requester's reply, each once, in that order.

    ``wrote`` are the stewards who have written on the ticket (oldest first);
    ``on_duty`` is used only when there is nobody else.
    """
    working = [n for n in (assignee, incident_commander, *wrote) if n]
    names = list(dict.fromkeys(n.lower() for n in working))
    if names:
        return names
    return list(dict.fromkeys(n.lower() for n in on_duty if n))
