"""SPEC section 11, row by row, on the pure policy module (no store, no mail)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.core import policy
from maild.core.policy import Limits

TEAM = frozenset({"support@example.org", "alice@example.org", "bob@example.org"})


# -- who is on a ticket -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "steward", "expected"),
    [
        ("rep@pangeo.example", False, "requester"),
        ("friend@pangeo.example", False, "cc"),
        ("lead@pangeo.example", False, "representative"),
        ("alice@example.org", True, "steward"),
        ("mallory@evil.example", False, "stranger"),
        ("", False, "stranger"),
    ],
)
def test_standing(sender: str, steward: bool, expected: str) -> None:
    got = policy.standing(
        sender,
        requester="rep@pangeo.example",
        cc=["friend@pangeo.example"],
        is_steward=steward,
        representatives=["lead@pangeo.example"],
    )
    assert got == expected


def cc(side: policy.Standing, named: list[str], current: list[str], max_cc: int = 3):  # type: ignore[no-untyped-def]
    return policy.cc_from_mail(
        sender_standing=side,
        named=named,
        requester="rep@pangeo.example",
        current_cc=current,
        max_cc=max_cc,
        internal=TEAM,
    )


@pytest.mark.parametrize(
    ("side", "named", "current", "added", "refused"),
    [
        # the requester's own mail adds the people it names, not the team, not twice
        (
            "requester",
            ["a@x.example", "support@example.org", "alice@example.org", "a@x.example"],
            [],
            ("a@x.example",),
            (),
        ),
        # a mail that would take the ticket past max_cc adds none of its addresses
        (
            "requester",
            ["a@x.example", "b@x.example"],
            ["c@x.example", "d@x.example"],
            (),
            ("a@x.example", "b@x.example"),
        ),
        # exactly up to the cap is fine
        ("requester", ["a@x.example"], ["c@x.example", "d@x.example"], ("a@x.example",), ()),
        # nobody else's mail puts people on a ticket
        ("stranger", ["a@x.example"], [], (), ("a@x.example",)),
        ("cc", ["a@x.example"], [], (), ("a@x.example",)),
        ("representative", ["a@x.example"], [], (), ("a@x.example",)),
        # already there: nothing to decide
        ("stranger", ["rep@pangeo.example", "c@x.example"], ["c@x.example"], (), ()),
        # not addresses at all
        ("requester", ["", "undisclosed-recipients:;"], [], (), ()),
    ],
)
def test_cc_from_mail(side, named, current, added, refused) -> None:  # type: ignore[no-untyped-def]
    decision = cc(side, named, current)
    assert decision.added == added
    assert decision.refused == refused
    assert (decision.reason is not None) == bool(refused)


def test_cc_refusal_names_the_key() -> None:
    decision = cc("requester", [f"v{i}@x.example" for i in range(500)], [], max_cc=10)
    assert decision.added == () and len(decision.refused) == 500
    assert "tickets.max_cc = 10" in (decision.reason or "")


@pytest.mark.parametrize(
    ("op", "addr", "current", "new", "error"),
    [
        ("+", "new@x.example", (), ("new@x.example",), None),
        ("+", "new@x.example", ("a@x.example", "b@x.example", "c@x.example"), None, "max_cc"),
        ("+", "alice@example.org", (), None, "steward"),
        ("+", "rep@pangeo.example", (), None, "already"),
        ("+", "a@x.example", ("a@x.example",), None, "already"),
        ("-", "a@x.example", ("a@x.example", "b@x.example"), ("b@x.example",), None),
        ("-", "z@x.example", ("a@x.example",), None, "not on"),
    ],
)
def test_steward_cc_change(op, addr, current, new, error) -> None:  # type: ignore[no-untyped-def]
    got, why = policy.steward_cc_change(
        op, addr, requester="rep@pangeo.example", current_cc=current, max_cc=3, internal=TEAM
    )
    if error is None:
        assert why is None and got == new
    else:
        assert why is not None and error in why and got == current


# -- whom maild mails -----------------------------------------------------------------


def test_cap_external_keeps_the_team_and_max_cc_plus_one() -> None:
    to, cc_, dropped = policy.cap_external(
        ["rep@pangeo.example"],
        [*(f"v{i}@x.example" for i in range(40)), "alice@example.org"],
        internal=TEAM,
        max_cc=10,
    )
    assert to == ("rep@pangeo.example",)
    assert len(cc_) == 11 and "alice@example.org" in cc_
    assert len(dropped) == 30 and dropped[0] == "v10@x.example"


@given(
    st.lists(st.sampled_from([f"p{i}@x.example" for i in range(30)] + sorted(TEAM)), max_size=60),
    st.lists(st.sampled_from([f"p{i}@x.example" for i in range(30)] + sorted(TEAM)), max_size=60),
    st.integers(min_value=0, max_value=15),
)
def test_no_mail_has_more_than_max_cc_plus_one_external_recipients(
    to: list[str], cc_: list[str], max_cc: int
) -> None:
    kept_to, kept_cc, dropped = policy.cap_external(to, cc_, internal=TEAM, max_cc=max_cc)
    external = [a for a in (*kept_to, *kept_cc) if a not in TEAM]
    assert len(external) <= max_cc + 1
    assert len(set(kept_to + kept_cc)) == len(kept_to + kept_cc)  # nobody twice
    assert set(kept_to + kept_cc + dropped) == set(to + cc_)  # nobody lost silently


# -- automatic-mail limits ---------------------------------------------------------------

LIMITS = Limits(per_hour=5, per_day=20, global_per_hour=300)


@pytest.mark.parametrize(
    ("hour", "day", "total", "allowed", "why"),
    [
        (0, 0, 0, True, None),
        (4, 4, 10, True, None),
        (5, 5, 10, False, "ack_rate_per_hour = 5"),
        (0, 20, 10, False, "auto_per_day = 20"),
        (0, 19, 10, True, None),
        (0, 0, 300, False, "max_automatic_per_hour = 300"),
    ],
)
def test_automatic_allowance(hour: int, day: int, total: int, allowed: bool, why: str) -> None:
    got = policy.automatic_allowance(
        ["victim@x.example", "alice@example.org"],
        last_hour={"victim@x.example": hour},
        last_day={"victim@x.example": day},
        global_last_hour=total,
        limits=LIMITS,
        internal=TEAM,
    )
    assert "alice@example.org" in got.allowed  # the team is never limited
    assert ("victim@x.example" in got.allowed) == allowed
    if why is not None:
        assert why in got.refused["victim@x.example"]
    assert got.ceiling == (total >= 300)


@pytest.mark.parametrize(
    "address", ["MAILER-DAEMON@x.example", "postmaster@x.example", "", "nobody"]
)
def test_machines_get_no_automatic_mail(address: str) -> None:
    got = policy.automatic_allowance(
        [address], last_hour={}, last_day={}, global_last_hour=0, limits=LIMITS, internal=TEAM
    )
    assert got.allowed == () and address in got.refused


# -- authenticated steward mail ---------------------------------------------------------


@pytest.mark.parametrize(
    ("authenticated", "required", "commands", "relays", "expected"),
    [
        (True, True, True, True, "apply"),
        (False, True, True, False, "hold"),
        (False, True, False, True, "hold"),  # a reply to relay needs it too
        (False, True, False, False, "note"),  # a plain [note]: nothing to hold
        (False, False, True, True, "apply"),  # a test lab
    ],
)
def test_steward_action(
    authenticated: bool, required: bool, commands: bool, relays: bool, expected: str
) -> None:
    got = policy.steward_action(
        authenticated=authenticated,
        require_authenticated=required,
        has_commands=commands,
        relays=relays,
    )
    assert got == expected


# -- backscatter -----------------------------------------------------------------------


@given(st.text(max_size=500), st.integers(min_value=0, max_value=300))
def test_clip(text: str, limit: int) -> None:
    clipped, cut = policy.clip(text, limit)
    assert len(clipped) <= limit
    assert cut == (len(text) > limit)
    assert text.startswith(clipped)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("victim@crowd.example", "victim@crowd.example"),
        ("Victim+1@Crowd.Example", "victim@crowd.example"),
        ("victim+news+x@crowd.example", "victim@crowd.example"),
        ("victim@bü.example", "victim@xn--b-eha.example"),
        ("+only@crowd.example", "+only@crowd.example"),
    ],
)
def test_limits_count_per_mailbox(address: str, key: str) -> None:
    assert policy.limit_key(address) == key


def test_a_forged_from_stands_as_a_stranger() -> None:
    got = policy.standing(
        "rep@pangeo.example", requester="rep@pangeo.example", cc=(), is_steward=False, forged=True
    )
    assert got == "stranger"
