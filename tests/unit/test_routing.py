"""Who hears of a requester's reply (SPEC section 7, ``requester_reply``).

tests/unit/test_handbook_rules.py has the first worked examples; these rows add
the edge cases a steward would notice: nobody told twice whatever the case of a
name, blanks skipped, the roster used only when nobody works the ticket.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.core.routing import reply_recipients

ROWS = [
    ("the assignee alone", "bob", None, [], ["dave"], ["bob"]),
    ("the incident commander is also the assignee: told once", "alice", "Alice", [], [], ["alice"]),
    ("a steward who wrote twice, in two spellings, told once", None, None, ["Carol", "carol"],
     ["dave"], ["carol"]),
    ("stewards who wrote, oldest first, after assignee and commander", "bob", "alice",
     ["erin", "carol", "alice"], [], ["bob", "alice", "erin", "carol"]),
    ("blank names are nobody: the roster is used", "", "", ["", ""], ["dave", "Dave", ""],
     ["dave"]),
    ("an incident commander off the roster still hears", None, "frank", [], ["dave", "erin"],
     ["frank"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "assignee", "ic", "wrote", "on_duty", "expected"), ROWS, ids=[r[0] for r in ROWS]
)
def test_who_hears_of_a_reply(
    name: str,
    assignee: str | None,
    ic: str | None,
    wrote: list[str],
    on_duty: list[str],
    expected: list[str],
) -> None:
    assert reply_recipients(assignee, ic, wrote, on_duty) == expected


NAMES = st.sampled_from(["alice", "Alice", "bob", "carol", "dave", ""])


@given(
    st.one_of(st.none(), NAMES),
    st.one_of(st.none(), NAMES),
    st.lists(NAMES, max_size=4),
    st.lists(NAMES, max_size=3),
)
def test_each_steward_once_and_the_roster_only_as_a_fallback(
    assignee: str | None, ic: str | None, wrote: list[str], on_duty: list[str]
) -> None:
    got = reply_recipients(assignee, ic, wrote, on_duty)
    assert len(got) == len(set(got)) and "" not in got
    working = {n.lower() for n in (assignee, ic, *wrote) if n}
    assert set(got) == (working or {n.lower() for n in on_duty if n})
