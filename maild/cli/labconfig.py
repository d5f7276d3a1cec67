"""The config of a lab instance: the one source for the tests', the benchmarks' and the demo's.

A lab is a small, made-up helpdesk: a support address, a few stewards on a
roster, a few communities, and a SQLite file. :class:`Lab` describes one
(its defaults are the test lab of ``tests/conftest.py``);
:func:`lab_template` writes it as TOML with two ``str.format`` fields left
open, ``{db}`` (the SQLite file) and ``{ack_rate}`` (acknowledgments per
hour, and with ``automatic_limits`` every other limit on automatic mail);
:func:`lab_config` fills them in. The demo ships in the package, so this
lives here rather than beside the tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Lab", "LabCommunity", "LabSteward", "lab_config", "lab_template"]


@dataclass(frozen=True, slots=True)
class LabSteward:
    name: str
    addresses: tuple[str, ...]
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class LabCommunity:
    name: str
    domains: tuple[str, ...]
    representatives: tuple[str, ...] = ()
    budget_hours_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class Lab:
    """What a lab instance looks like; the defaults are the tests' lab.

    ``automatic_limits`` applies the ``{ack_rate}`` also to the daily and the
    hourly limit on automatic mail (the benchmarks turn every limit out of
    reach). ``tables`` is further TOML (``[lmtp]``, ``[smtp]``...) written
    after ``[commands]``; ``header`` comment lines (with their ``#``) at the top.
    """

    support: str = "support@example.org"
    support_name: str = "Example Support"
    timezone: str = "America/Chicago"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    ranges: tuple[str, ...] = ("08:00-12:00", "13:00-17:00")
    stewards: tuple[LabSteward, ...] = (
        LabSteward("alice", ("alice@example.org",), "Alice Liddell"),
        LabSteward("bob", ("bob@example.org", "bob@home.example"), "Bob Builder"),
        LabSteward("carol", ("carol@example.org",)),
    )
    roster_start: str = "2026-11-02"
    communities: tuple[LabCommunity, ...] = (
        LabCommunity(
            "pangeo",
            ("pangeo.example",),
            ("rep@pangeo.example", "rep2@pangeo.example"),
            budget_hours_per_month=10,
        ),
        LabCommunity("jupyter", ("jupyter.example",), ("lead@jupyter.example",)),
    )
    automatic_limits: bool = False
    tables: str = ""
    header: str = ""


def _value(value: str | Sequence[str]) -> str:
    """A TOML string or array of strings (JSON's escapes are TOML's), braces doubled."""
    text = json.dumps(value if isinstance(value, str) else list(value), ensure_ascii=False)
    return _literal(text)


def _literal(text: str) -> str:
    """``text`` as it must appear in a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def lab_template(lab: Lab = Lab()) -> str:  # noqa: B008 -- a frozen value, safe as a default
    """``lab`` as TOML with the fields ``{db}`` and ``{ack_rate}`` left for ``str.format``."""
    out: list[str] = []
    if lab.header:
        out.append(_literal(lab.header.rstrip("\n")))
    out += [
        "",
        "[support]",
        f"address = {_value(lab.support)}",
        f"name = {_value(lab.support_name)}",
        'tag = "support"',
        "",
        "[database]",
        'url = "sqlite+aiosqlite:///{db}"',
        "",
        "[hours]",
        f"timezone = {_value(lab.timezone)}",
        f"days = {_value(lab.days)}",
        f"ranges = {_value(lab.ranges)}",
        "",
        "[tickets]",
        "ack_rate_per_hour = {ack_rate}",
    ]
    if lab.automatic_limits:
        out.append("auto_per_day = {ack_rate}")
    out += [
        "",
        "[commands]",
        "# a lab: steward mail is trusted as sent, no DKIM signature needed (SPEC 11)",
        "require_authenticated = false",
    ]
    if lab.automatic_limits:
        out += ["", "[hygiene]", "max_automatic_per_hour = {ack_rate}"]
    if lab.tables:
        out += ["", _literal(lab.tables.strip("\n"))]
    for steward in lab.stewards:
        out += ["", "[[stewards]]", f"name = {_value(steward.name)}"]
        if steward.display_name:
            out.append(f"display_name = {_value(steward.display_name)}")
        out.append(f"addresses = {_value(steward.addresses)}")
    out += [
        "",
        "[roster]",
        f"order = {_value([s.name for s in lab.stewards])}",
        f"start = {_value(lab.roster_start)}",
    ]
    for community in lab.communities:
        out += ["", "[[communities]]", f"name = {_value(community.name)}"]
        if community.representatives:
            out.append(f"representatives = {_value(community.representatives)}")
        out.append(f"domains = {_value(community.domains)}")
        if community.budget_hours_per_month is not None:
            out.append(f"budget_hours_per_month = {community.budget_hours_per_month}")
    return "\n".join(out) + "\n"


def lab_config(
    db: str | os.PathLike[str],
    *,
    ack_rate: int = 5,
    lab: Lab = Lab(),  # noqa: B008 -- a frozen value, safe as a default
) -> str:
    """The TOML config of ``lab`` with its SQLite store at ``db``."""
    return lab_template(lab).format(db=os.fspath(db), ack_rate=ack_rate)
