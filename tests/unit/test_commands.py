"""Steward commands (SPEC section 3): what each tag does to a ticket.

Each row is a ticket, a steward's subject and who sent it; the test parses
the subject with the real tag grammar, plans with :func:`maild.core.commands.plan`,
applies with :func:`maild.core.commands.apply` (plain values in, plain values
out), and checks the ticket as a steward would see it in ``maild show`` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.config import Config
from maild.core.commands import Applied, Change, Plan, TicketState, apply, plan, transition
from maild.core.tags import ParsedSubject, parse_subject
from maild.store import ticketstate
from maild.store.views import as_state
from tests.unit.core_fixtures import (
    ALICE,
    COLLEAGUE,
    EARLIER,
    NOW,
    REQUESTER,
    make_config,
    state,
    ticket,
)

CONFIG = make_config(tickets={"max_cc": 3})
URL = "https://tracker.example/issues/7"


def parse(subject: str, t: TicketState, config: Config = CONFIG) -> ParsedSubject:
    parsed = parse_subject(
        subject,
        stewards=[s.name for s in config.stewards],
        communities=[c.name for c in config.communities],
        ticket_subject="Hub is down",
        replies=["need_info", "not_supported"],
    )
    assert not parsed.errors, parsed.errors
    return parsed


def run(
    subject: str, t: TicketState, actor: str | None = "alice", config: Config = CONFIG
) -> tuple[Plan, TicketState]:
    """Plan and apply ``subject``; the plan and the ticket afterwards."""
    planned = plan(t, parse(subject, t, config), actor, config)
    applied = apply(t, planned.changes, NOW)
    return planned, applied.state


def seen(t: TicketState, names: Any) -> dict[str, Any]:
    """The fields ``names`` of ``t``, sequences as lists (as ``maild show`` prints them)."""
    return {n: list(v) if isinstance(v := getattr(t, n), tuple) else v for n in names}


@dataclass(frozen=True)
class Case:
    name: str
    subject: str
    expect: dict[str, Any]
    before: dict[str, Any] = field(default_factory=dict)
    actor: str | None = "alice"

    def __str__(self) -> str:
        return self.name


CASES = [
    # status and its time stamps
    Case("[status=resolved] resolves and stamps resolved_at", "[status=resolved]",
         {"status": "resolved", "resolved_at": NOW, "closed_at": None}),
    Case("[resolved] is the same as [status=resolved]", "Re: [support #42] done [resolved]",
         {"status": "resolved", "resolved_at": NOW}),
    Case("[closed] closes and stamps closed_at", "[closed]",
         {"status": "closed", "closed_at": NOW}),
    Case("[waiting] waits on the requester", "[waiting]", {"status": "waiting"}),
    Case("[pending] is [waiting]", "[pending]", {"status": "waiting"}),
    Case("[reopen] a resolved ticket clears resolved_at", "[reopen]",
         {"status": "open", "resolved_at": None, "closed_at": None},
         before={"status": "resolved", "resolved_at": EARLIER}),
    Case("[open] a closed ticket clears both stamps", "[open]",
         {"status": "open", "resolved_at": None, "closed_at": None},
         before={"status": "closed", "resolved_at": EARLIER, "closed_at": EARLIER}),
    Case("[waiting] on a new ticket leaves the stamps alone", "[waiting]",
         {"status": "waiting", "resolved_at": None}, before={"status": "new"}),
    Case("the last of two status tags wins", "[status=waiting] [resolved]",
         {"status": "resolved", "resolved_at": NOW}),
    # type: triage and the incident cadence
    Case("[type=incident] triages and starts the update cadence", "[type=incident]",
         {"type": "incident", "triaged_at": NOW, "last_update_at": NOW}),
    Case("[guidance] triages, no update cadence", "[guidance]",
         {"type": "guidance", "triaged_at": NOW, "last_update_at": None}),
    Case("re-typing keeps the first triage time", "[change]",
         {"type": "change", "triaged_at": EARLIER},
         before={"type": "guidance", "triaged_at": EARLIER}),
    Case("[incident] on an incident keeps its cadence", "[incident]",
         {"type": "incident", "last_update_at": EARLIER},
         before={"type": "incident", "triaged_at": EARLIER, "last_update_at": EARLIER}),
    Case("a change becoming an incident restarts the cadence now", "[incident]",
         {"type": "incident", "triaged_at": EARLIER, "last_update_at": NOW},
         before={"type": "change", "triaged_at": EARLIER}),
    # people and fields
    Case("[priority=urgent]", "[priority=urgent]", {"priority": "urgent"}),
    Case("[assign=bob]", "[assign=bob]", {"assignee": "bob"}),
    Case("[assign=me] means the sender", "[assign=me]", {"assignee": "alice"}),
    Case("[assign=me] sent by bob means bob", "[assign=me]", {"assignee": "bob"}, actor="bob"),
    Case("[assign=none] clears the assignee", "[assign=none]", {"assignee": None},
         before={"assignee": "bob"}),
    Case("[ic=me] makes the sender incident commander", "[ic=me]",
         {"incident_commander": "alice"}),
    Case("[ic=none] clears the incident commander", "[ic=none]", {"incident_commander": None},
         before={"incident_commander": "carol"}),
    Case("[community=pangeo] overrides the community", "[community=pangeo]",
         {"community": "pangeo"}),
    Case("several commands in one bracket all apply", "[assign=bob; priority=high; waiting]",
         {"assignee": "bob", "priority": "high", "status": "waiting"}),
    Case("commands spread over the subject all apply",
         "[ic=me] Re: [support #42] Hub [priority=urgent]",
         {"incident_commander": "alice", "priority": "urgent"}),
    # links, time, cadence
    Case("[link=URL] attaches an engineering issue", f"[link={URL}]", {"links": [URL]}),
    Case("a link already on the ticket is not added twice", f"[link={URL}]", {"links": [URL]},
         before={"links": [URL]}),
    Case("the same link twice in one subject is added once", f"[link={URL}] [link={URL}]",
         {"links": [URL]}),
    Case("a second link is appended after the first", f"[link={URL}2]",
         {"links": [URL, URL + "2"]}, before={"links": [URL]}),
    Case("[time=30m] adds to the time already logged", "[time=30m]",
         {"time_spent_minutes": 45}, before={"time_spent_minutes": 15}),
    Case("two time tags add up", "[time=30m] [time=1h]", {"time_spent_minutes": 90}),
    Case("[time=1.5h] is 90 minutes", "[time=1.5h]", {"time_spent_minutes": 90}),
    Case("[time=1h30m] is 90 minutes", "[time=1h30m]", {"time_spent_minutes": 90}),
    Case("[update-every=1h] sets this incident's cadence", "[update-every=1h]",
         {"update_every_minutes": 60}, before={"type": "incident"}),
    # cc
    Case("[cc=+ADDR] adds an address", "[cc=+boss@example.net]",
         {"cc": [COLLEAGUE, "boss@example.net"]}),
    Case("[cc=-ADDR] removes one", f"[cc=-{COLLEAGUE}]", {"cc": []}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_tag_changes_the_ticket(case: Case) -> None:
    planned, after = run(case.subject, state(**case.before), case.actor)

    assert planned.errors == ()
    assert seen(after, case.expect) == case.expect


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_store_adapter_writes_what_apply_decided(case: Case) -> None:
    row = ticket(**case.before)
    snap = as_state(row)
    assert snap == state(**case.before)
    planned = plan(snap, parse(case.subject, snap), case.actor, CONFIG)

    applied = ticketstate.apply_changes(row, planned.changes, NOW)

    assert as_state(row) == applied.state
    assert {name: getattr(row, name) for name in case.expect} == case.expect


NO_OPS = [
    ("[priority=normal] on a normal ticket", "[priority=normal]", {}),
    ("[open] on an open ticket", "[open]", {}),
    ("[assign=bob] when bob is assigned", "[assign=bob]", {"assignee": "bob"}),
    ("[assign=none] when nobody is", "[assign=none]", {}),
    ("[assign=me] when the sender is assigned", "[assign=me]", {"assignee": "alice"}),
    ("[guidance] on a guidance ticket", "[guidance]", {"type": "guidance", "triaged_at": EARLIER}),
    ("[link] already attached", f"[link={URL}]", {"links": [URL]}),
    ("[update-every=3h] as already set", "[update-every=3h]", {"update_every_minutes": 180}),
    ("only [note]", "[note]", {}),
    ("only [silent]", "[silent]", {}),
]


@pytest.mark.parametrize(("name", "subject", "before"), NO_OPS, ids=[n[0] for n in NO_OPS])
def test_a_command_that_changes_nothing_plans_no_change(
    name: str, subject: str, before: dict[str, Any]
) -> None:
    t = state(**before)
    planned = plan(t, parse(subject, t), "alice", CONFIG)
    assert planned.changes == ()
    assert not any("->" in line for line in planned.describe())
    assert apply(t, planned.changes, NOW) == Applied({}, t, ())


CC_REFUSED = [
    ("adding the requester", f"[cc=+{REQUESTER}]", [COLLEAGUE], "already on the ticket"),
    ("adding someone already on the cc", f"[cc=+{COLLEAGUE}]", [COLLEAGUE], "already on"),
    ("adding a steward", f"[cc=+{ALICE}]", [COLLEAGUE], "steward or the support address"),
    ("adding the support address", "[cc=+support@example.org]", [], "support address"),
    ("adding past tickets.max_cc = 3", "[cc=+d@example.net]",
     ["a@example.net", "b@example.net", "c@example.net"], "max_cc = 3"),
    ("removing someone not on the cc", "[cc=-nobody@example.net]", [COLLEAGUE],
     "is not on the ticket's cc"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "subject", "cc", "why"), CC_REFUSED, ids=[c[0] for c in CC_REFUSED]
)
def test_a_refused_cc_change_says_why_and_changes_nothing(
    name: str, subject: str, cc: list[str], why: str
) -> None:
    t = state(cc=cc)
    planned = plan(t, parse(subject, t), "alice", CONFIG)
    assert planned.changes == ()
    assert len(planned.errors) == 1
    assert planned.errors[0].startswith(subject) and why in planned.errors[0]


def test_cc_changes_in_one_mail_see_each_other() -> None:
    t = state(cc=["a@example.net", "b@example.net", "c@example.net"])
    # room is made by the removal before the addition is checked
    _, after = run("[cc=-a@example.net] [cc=+d@example.net]", t)
    assert after.cc == ("b@example.net", "c@example.net", "d@example.net")


FLAGS = [
    ("[note] keeps the mail internal", "[note]", True, False, None, "kept as an internal note"),
    ("[silent] relays nothing", "[silent] [resolved]", False, True, None,
     "nothing relayed to the requester"),
    ("[reply=NAME] relays a canned reply", "[reply=need_info]", False, False, "need_info",
     "canned reply need_info relayed"),
    ("[note] wins over a canned reply", "[note] [reply=need_info]", True, False, "need_info",
     "kept as an internal note"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "subject", "note", "silent", "canned", "line"), FLAGS, ids=[f[0] for f in FLAGS]
)
def test_note_silent_and_canned_replies(
    name: str, subject: str, note: bool, silent: bool, canned: str | None, line: str
) -> None:
    t = state()
    planned = plan(t, parse(subject, t), "alice", CONFIG)
    assert (planned.note, planned.silent, planned.canned) == (note, silent, canned)
    assert line in planned.describe()
    if note:
        assert not any(x.startswith("canned reply") for x in planned.describe())


def test_describe_lists_each_change_old_to_new_for_the_receipt() -> None:
    t = state(assignee="bob")
    planned = plan(t, parse("[priority=high] [assign=none] [time=45m]", t), "alice", CONFIG)
    assert planned.describe() == [
        "priority: normal -> high",
        "assignee: bob -> -",
        "time_spent_minutes: 0 -> 45",
    ]
    assert planned.status is None
    assert plan(t, parse("[waiting] [resolved]", t), "alice", CONFIG).status == "resolved"


def test_plan_and_apply_leave_their_input_alone() -> None:
    t = state()
    subject = "[resolved] [assign=bob] [time=1h] [cc=-colleague@example.net]"
    planned = plan(t, parse(subject, t), "a", CONFIG)
    applied = apply(t, planned.changes, NOW)
    assert t == state()
    assert applied.fields == {
        "status": "resolved",
        "resolved_at": NOW,
        "closed_at": None,
        "assignee": "bob",
        "cc": (),
        "time_spent_minutes": 60,
    }
    assert applied.changes == planned.changes


@given(st.lists(st.integers(1, 600), min_size=1, max_size=6), st.integers(0, 10_000))
def test_time_always_accumulates(minutes: list[int], already: int) -> None:
    _, after = run(" ".join(f"[time={m}m]" for m in minutes), state(time_spent_minutes=already))
    assert after.time_spent_minutes == already + sum(minutes)


@given(
    st.lists(
        st.sampled_from(
            ["[open]", "[waiting]", "[resolved]", "[closed]", "[reopen]", "[status=new]"]
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["new", "open", "waiting", "resolved", "closed"]),
)
def test_status_stamps_follow_the_final_status(tags: list[str], start: str) -> None:
    before: dict[str, datetime | None] = {
        "resolved_at": EARLIER if start in ("resolved", "closed") else None,
        "closed_at": EARLIER if start == "closed" else None,
    }
    _, t = run(" ".join(tags), state(status=start, **before))
    if t.status == "resolved":
        assert t.resolved_at is not None
        assert t.closed_at is None
    elif t.status == "closed":
        assert t.closed_at is not None
    else:
        assert t.resolved_at is None and t.closed_at is None


def test_resolving_a_closed_ticket_clears_its_closed_stamp() -> None:
    _, t = run("[resolved]", state(status="closed", resolved_at=EARLIER, closed_at=EARLIER))
    assert (t.status, t.resolved_at, t.closed_at) == ("resolved", NOW, None)


# -- status changes that are not commands: through the lifecycle table ---------------

EVENTS = [
    ("the first relay opens a new ticket", "relay", {"status": "new"},
     {"status": "open", "first_response_at": NOW, "last_update_at": NOW},
     (Change("status", "new", "open"),)),
    ("a later relay keeps the first response time", "relay",
     {"status": "open", "first_response_at": EARLIER},
     {"last_update_at": NOW}, ()),
    ("a relay after the mail's own [status=new] keeps it new", "relay_after_set",
     {"status": "new"}, {"first_response_at": NOW, "last_update_at": NOW}, ()),
    ("the requester answers a waiting ticket", "reply", {"status": "waiting"},
     {"status": "open"}, (Change("status", "waiting", "open"),)),
    ("the requester reopens a resolved ticket", "reply",
     {"status": "resolved", "resolved_at": EARLIER},
     {"status": "open", "resolved_at": None, "closed_at": None},
     (Change("status", "resolved", "open"),)),
    ("the requester confirms the fix", "confirm",
     {"status": "resolved", "resolved_at": EARLIER},
     {"status": "closed", "closed_at": NOW}, (Change("status", "resolved", "closed"),)),
    ("auto-close", "auto_close", {"status": "resolved", "resolved_at": EARLIER},
     {"status": "closed", "closed_at": NOW}, (Change("status", "resolved", "closed"),)),
    ("a reply to an open ticket changes nothing", "reply", {"status": "open"}, {}, ()),
    ("auto-close of an open ticket changes nothing", "auto_close", {"status": "open"}, {}, ()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "event", "before", "fields", "changes"), EVENTS, ids=[e[0] for e in EVENTS]
)
def test_a_lifecycle_event_writes_its_status_and_stamps(
    name: str, event: Any, before: dict[str, Any], fields: dict[str, Any], changes: Any
) -> None:
    t = state(**before)
    applied = transition(t, event, NOW)
    assert applied.fields == fields
    assert applied.changes == changes
    assert seen(applied.state, fields) == fields

    row = ticket(**before)
    assert ticketstate.apply_event(row, event, NOW) == applied
    assert {n: getattr(row, n) for n in fields} == fields
