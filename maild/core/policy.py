"""Who is on a ticket, whom maild mails, and what a sender may make it do.

SPEC section 11 in one place. Pure: plain values in, plain values out, no
I/O, no clock of its own. The pipeline and the scheduler look up what these
functions need (who is on the ticket, how many automatic mails each address
already got) and carry out the answer; nothing else decides a recipient list.

Every answer says why, in words a steward or operator reads on the timeline
and in ``maild explain``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ACK_SUBJECT_MAX",
    "MACHINE_LOCALPARTS",
    "STEWARD_TEXT_MAX",
    "Allowance",
    "CcDecision",
    "Limits",
    "StewardAction",
    "Standing",
    "automatic_allowance",
    "cap_external",
    "cc_from_mail",
    "clip",
    "limit_key",
    "not_a_person",
    "standing",
    "steward_action",
    "steward_cc_change",
]

# an acknowledgment repeats at most this much of the subject (backscatter)
ACK_SUBJECT_MAX = 200
# the stewards' copy of a mail carries at most this much of its text
STEWARD_TEXT_MAX = 100_000

Standing = Literal["requester", "cc", "steward", "representative", "stranger"]
StewardAction = Literal["apply", "hold", "note"]

# mail from or to these local parts is a machine's (RFC 5321 section 4.5.1, bounces)
MACHINE_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})


def standing(
    sender: str,
    *,
    requester: str,
    cc: Collection[str],
    is_steward: bool,
    representatives: Collection[str] = (),
    forged: bool = False,
) -> Standing:
    """How the sender of a mail stands to a ticket it was threaded onto.

    ``forged``: the trusted Authentication-Results says ``dmarc=fail``; such a
    From proves nothing, so the sender stands as a stranger.
    """
    if forged:
        return "stranger"
    if is_steward:
        return "steward"
    if sender and sender == requester:
        return "requester"
    if sender and sender in cc:
        return "cc"
    if sender and sender in representatives:
        return "representative"
    return "stranger"


def limit_key(address: str) -> str:
    """The mailbox an address reaches, for counting limits (``a+x@B.example`` -> ``a@b.example``).

    Sub-addresses (``+tag``) and the spelling of the domain do not make a new
    mailbox, so they must not make a new allowance of automatic mail.
    """
    local, _, domain = address.strip().lower().rpartition("@")
    if not local:
        return address.strip().lower()
    local = local.split("+", 1)[0] or local
    if not domain.isascii():  # the IDNA codec hands an ASCII domain back as it is, or refuses
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return f"{local}@{domain}"


def not_a_person(address: str) -> str | None:
    """Why ``address`` must get no automatic mail by its form alone, or None."""
    if not address or "@" not in address:
        return "no usable address"
    if address.split("@", 1)[0].lower() in MACHINE_LOCALPARTS:
        return f"{address} is not a person"
    return None


@dataclass(frozen=True, slots=True)
class CcDecision:
    """Who of the addresses a mail names joins the ticket's cc, and why not the rest."""

    added: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    reason: str | None = None


def cc_from_mail(
    *,
    sender_standing: Standing,
    named: Sequence[str],
    requester: str,
    current_cc: Sequence[str],
    max_cc: int,
    internal: Collection[str],
) -> CcDecision:
    """The cc a mail adds: only the requester's own mail adds anyone.

    ``named`` are the mail's To and Cc addresses; ``internal`` are the support
    address and every steward address, who are never on a ticket's cc. A mail
    that would take the ticket past ``max_cc`` adds none of its addresses.
    """
    known = {requester, *current_cc}
    candidates = tuple(
        dict.fromkeys(a for a in named if a and "@" in a and a not in known and a not in internal)
    )
    if not candidates:
        return CcDecision()
    if sender_standing != "requester":
        return CcDecision(
            refused=candidates,
            reason="only the requester's own mail puts people on a ticket; none joined",
        )
    if len(current_cc) + len(candidates) > max_cc:
        return CcDecision(
            refused=candidates,
            reason=(
                f"the mail names {len(candidates)} new addresses, which would take the ticket "
                f"past tickets.max_cc = {max_cc}; none of them joined"
            ),
        )
    return CcDecision(added=candidates)


def steward_cc_change(
    op: Literal["+", "-"],
    address: str,
    *,
    requester: str,
    current_cc: Sequence[str],
    max_cc: int,
    internal: Collection[str],
) -> tuple[tuple[str, ...], str | None]:
    """A steward's ``[cc=+ADDR]``/``[cc=-ADDR]``: the new cc, or the old one and why not."""
    cc = tuple(current_cc)
    if op == "-":
        if address not in cc:
            return cc, f"{address} is not on the ticket's cc"
        return tuple(a for a in cc if a != address), None
    if address in internal:
        return cc, f"{address} is a steward or the support address, never on a cc"
    if address == requester or address in cc:
        return cc, f"{address} is already on the ticket"
    if len(cc) >= max_cc:
        return cc, f"the ticket already has tickets.max_cc = {max_cc} addresses on its cc"
    return (*cc, address), None


def cap_external(
    to: Sequence[str],
    cc: Sequence[str],
    *,
    internal: Collection[str],
    max_cc: int,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """At most ``max_cc + 1`` external recipients on any mail: (to, cc, dropped).

    ``internal`` addresses (stewards, the support address) do not count. The
    first external recipients in To-then-Cc order are kept.
    """
    room = max_cc + 1
    kept_to: list[str] = []
    kept_cc: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for target, addrs in ((kept_to, to), (kept_cc, cc)):
        for addr in addrs:
            if addr in seen:
                continue
            seen.add(addr)
            if addr in internal:
                target.append(addr)
            elif room > 0:
                room -= 1
                target.append(addr)
            else:
                dropped.append(addr)
    return tuple(kept_to), tuple(kept_cc), tuple(dropped)


@dataclass(frozen=True, slots=True)
class Limits:
    """The automatic-mail limits of SPEC section 11."""

    per_hour: int
    per_day: int
    global_per_hour: int


@dataclass(frozen=True, slots=True)
class Allowance:
    """Which recipients of one automatic mail may get it, and why the others not.

    ``ceiling`` is True when the all-addresses ceiling stopped the mail.
    """

    allowed: tuple[str, ...]
    refused: Mapping[str, str] = field(default_factory=dict)
    ceiling: bool = False


def automatic_allowance(
    recipients: Sequence[str],
    *,
    last_hour: Mapping[str, int],
    last_day: Mapping[str, int],
    global_last_hour: int,
    limits: Limits,
    internal: Collection[str],
) -> Allowance:
    """Apply the per-address and global limits to one automatic mail.

    ``last_hour``/``last_day`` count the automatic mails each external
    recipient already got in the hour / 24 hours before now;
    ``global_last_hour`` counts them over all addresses. Internal recipients
    (stewards) are the team, not the public: never limited.
    """
    external = [r for r in dict.fromkeys(recipients) if r not in internal]
    if external and global_last_hour >= limits.global_per_hour:
        why = (
            f"maild already sent {global_last_hour} automatic mails this hour "
            f"(hygiene.max_automatic_per_hour = {limits.global_per_hour})"
        )
        team = tuple(r for r in dict.fromkeys(recipients) if r in internal)
        return Allowance(team, {r: why for r in external}, ceiling=True)
    allowed: list[str] = []
    refused: dict[str, str] = {}
    for rcpt in dict.fromkeys(recipients):
        if rcpt in internal:
            allowed.append(rcpt)
            continue
        machine = not_a_person(rcpt)
        hour = last_hour.get(rcpt, 0)
        day = last_day.get(rcpt, 0)
        if machine is not None:
            refused[rcpt] = machine
        elif hour >= limits.per_hour:
            refused[rcpt] = (
                f"{rcpt} already got {hour} automatic mails this hour "
                f"(tickets.ack_rate_per_hour = {limits.per_hour})"
            )
        elif day >= limits.per_day:
            refused[rcpt] = (
                f"{rcpt} already got {day} automatic mails in 24 hours "
                f"(tickets.auto_per_day = {limits.per_day})"
            )
        else:
            allowed.append(rcpt)
    return Allowance(tuple(allowed), refused)


def steward_action(
    *,
    authenticated: bool,
    require_authenticated: bool,
    has_commands: bool,
    relays: bool,
) -> StewardAction:
    """What a steward's mail may do now: apply, hold for confirmation, or stay a note.

    A mail with nothing to apply and nothing to relay (a plain ``[note]``) is
    a note either way; anything else needs authentication when it is required.
    """
    if not has_commands and not relays:
        return "note"
    if authenticated or not require_authenticated:
        return "apply"
    return "hold"


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True
