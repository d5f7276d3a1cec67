"""Ticket states (SPEC 4): every status change in the lifecycle table, the time
stamps each sets or clears, and what a requester's reply to a resolved ticket
means (confirmation closes, anything else reopens)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.core import lifecycle
from maild.core.commands import TicketState, transition
from maild.core.lifecycle import (
    EVENT_STAMPS,
    EVENTS,
    STATUSES,
    TRANSITIONS,
    Event,
    is_confirmation,
    retype,
    step,
)
from tests.unit.core_fixtures import EARLIER, NOW, state

CONFIRMATIONS = [
    "Thanks, that works now!",
    "Thank you so much, it's working again.",
    "Perfect, thanks!",
    "Works now, cheers",
    "Confirmed, all good. Thanks!\n\nRosa",
    "Danke, funktioniert jetzt!",
    "Vielen Dank, klappt wieder.",
    "Merci, ça marche !",
    "Gracias, ya funciona.",
    "Dank je wel, het werkt weer.",
    "Tack, det fungerar nu.",
    "谢谢，好了",
    "Спасибо, работает!",
]

NOT_CONFIRMATIONS = [
    "Thanks, but it still fails for the admin users.",
    "Thanks! One more thing: can you also raise the quota?",
    "thanks, however the error is back",
    "Danke, aber es geht immer noch nicht.",
    "Merci, mais ça ne marche toujours pas.",
    "Gracias, pero sigue sin funcionar.",
    "It does not work.",
    "Is it fixed?",
    "",
    "Hello, I have a new request about storage quotas for next semester. " * 3,
]


@pytest.mark.parametrize("text", CONFIRMATIONS)
def test_confirmations_close(text: str) -> None:
    assert is_confirmation(text)


@pytest.mark.parametrize("text", NOT_CONFIRMATIONS)
def test_anything_else_reopens(text: str) -> None:
    assert not is_confirmation(text)


# -- every status change: the table (SPEC 4) --------------------------------------

# The rows of lifecycle.TRANSITIONS that are not a steward's or operator's
# explicit [status=X], written out from SPEC 4 so the table is checked against
# the contract rather than against itself.
IMPLICIT: list[tuple[str, Event, str]] = [
    ("new", "relay", "open"),  # the first relayed steward reply
    ("waiting", "reply", "open"),  # the requester's reply moves it back to open
    ("resolved", "reply", "open"),  # ... and reopens a resolved one
    ("waiting", "confirm", "open"),  # thanks to a waiting ticket is still an answer
    ("resolved", "confirm", "closed"),  # "Thanks, that works now!" closes
    ("resolved", "auto_close", "closed"),  # 48 working hours without a reply
]

# What is never done: each (status, event) that leaves the status as it is.
REJECTED: list[tuple[str, Event]] = [
    ("closed", "reply"),  # closed is final: a reply opens a follow-up ticket
    ("closed", "confirm"),
    ("closed", "auto_close"),
    ("closed", "relay"),  # a steward's last word on a closed ticket does not reopen it
    ("new", "reply"),  # the requester writing again leaves a new ticket new
    ("open", "reply"),
    ("new", "confirm"),
    ("open", "confirm"),
    ("open", "relay"),  # only a new ticket is opened by a relay
    ("waiting", "relay"),  # the team still waits on the requester
    ("resolved", "relay"),  # a relay with no status tag does not reopen
    ("new", "relay_after_set"),  # the mail's own [status=new] wins
    ("new", "auto_close"),  # only resolved tickets close by themselves
    ("open", "auto_close"),
    ("waiting", "auto_close"),
    *((s, lifecycle.set_event(s)) for s in STATUSES),  # setting what is already set
]


def stage(status: str, **fields: Any) -> TicketState:
    stamps = {
        "resolved_at": EARLIER if status in ("resolved", "closed") else None,
        "closed_at": EARLIER if status == "closed" else None,
    }
    return state(status=status, **{**stamps, **fields})


def test_the_table_holds_exactly_the_spec_rows_and_any_explicit_set() -> None:
    explicit = {(s, lifecycle.set_event(t)): t for s in STATUSES for t in STATUSES if s != t}
    implicit: dict[tuple[str, Event], str] = {(s, e): t for s, e, t in IMPLICIT}
    assert dict(TRANSITIONS) == {**explicit, **implicit}


@pytest.mark.parametrize(
    ("status", "event", "new"),
    [(s, e, t) for (s, e), t in TRANSITIONS.items()],
    ids=[f"{s} --{e}--> {t}" for (s, e), t in TRANSITIONS.items()],
)
def test_every_row_of_the_table_moves_the_ticket(status: str, event: Event, new: str) -> None:
    assert step(stage(status), event, NOW).status == new


@pytest.mark.parametrize(("status", "event"), REJECTED, ids=[f"{s} {e}" for s, e in REJECTED])
def test_a_transition_not_in_the_table_leaves_the_status(status: str, event: Event) -> None:
    assert (status, event) not in TRANSITIONS
    moved = step(stage(status), event, NOW)
    assert moved.status is None
    # only an event's own stamps, never a status stamp
    assert set(moved.stamps) <= set(EVENT_STAMPS.get(event, {}))


def test_every_pair_is_either_a_row_or_leaves_the_status() -> None:
    for s in STATUSES:
        for e in EVENTS:
            assert step(stage(s), e, NOW).status == TRANSITIONS.get((s, e))


STAMPS: list[tuple[str, Event, dict[str, Any]]] = [
    # entering resolved stamps it; a closed ticket set back to resolved is not closed
    ("open", "set_resolved", {"resolved_at": NOW, "closed_at": None}),
    ("closed", "set_resolved", {"resolved_at": NOW, "closed_at": None}),
    ("waiting", "set_resolved", {"resolved_at": NOW, "closed_at": None}),
    # entering closed stamps closed_at and keeps when it was resolved
    ("resolved", "set_closed", {"closed_at": NOW}),
    ("resolved", "confirm", {"closed_at": NOW}),
    ("resolved", "auto_close", {"closed_at": NOW}),
    ("open", "set_closed", {"closed_at": NOW}),
    # leaving resolved or closed for an active status clears both (reopened)
    ("resolved", "reply", {"resolved_at": None, "closed_at": None}),
    ("resolved", "set_open", {"resolved_at": None, "closed_at": None}),
    ("closed", "set_open", {"resolved_at": None, "closed_at": None}),
    ("closed", "set_waiting", {"resolved_at": None, "closed_at": None}),
    ("resolved", "set_new", {"resolved_at": None, "closed_at": None}),
    # moves between active statuses stamp nothing
    ("open", "set_waiting", {}),
    ("waiting", "reply", {}),
    ("new", "set_open", {}),
    # a relay is the first human response and an incident update
    ("new", "relay", {"first_response_at": NOW, "last_update_at": NOW}),
    ("open", "relay", {"first_response_at": NOW, "last_update_at": NOW}),
    ("resolved", "relay_after_set", {"first_response_at": NOW, "last_update_at": NOW}),
]


@pytest.mark.parametrize(
    ("status", "event", "stamps"), STAMPS, ids=[f"{s} {e}" for s, e, _ in STAMPS]
)
def test_each_change_sets_or_clears_its_time_stamps(
    status: str, event: Event, stamps: dict[str, Any]
) -> None:
    assert step(stage(status), event, NOW).stamps == stamps


def test_a_relay_keeps_the_first_response_time() -> None:
    moved = step(stage("open", first_response_at=EARLIER), "relay", NOW)
    assert moved.stamps == {"last_update_at": NOW}


RETYPES = [
    ("triaging stamps triaged_at", None, None, "guidance", {"triaged_at": NOW}),
    ("re-typing keeps the first triage", "guidance", EARLIER, "change", {}),
    ("becoming an incident starts its cadence", None, None, "incident",
     {"triaged_at": NOW, "last_update_at": NOW}),
    ("a change becoming an incident restarts the cadence", "change", EARLIER, "incident",
     {"last_update_at": NOW}),
    ("an incident stays one", "incident", EARLIER, "incident", {}),
    ("clearing the type stamps nothing", "change", EARLIER, None, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "old", "triaged", "new", "stamps"), RETYPES, ids=[r[0] for r in RETYPES]
)
def test_a_change_of_type_stamps_triage_and_the_incident_cadence(
    name: str, old: str | None, triaged: datetime | None, new: str | None, stamps: dict[str, Any]
) -> None:
    assert retype(state(type=old, triaged_at=triaged), new, NOW) == stamps


def test_an_unknown_status_is_no_event() -> None:
    with pytest.raises(ValueError, match="not a ticket status"):
        lifecycle.set_event("archived")


@given(
    st.sampled_from(STATUSES),
    st.lists(st.tuples(st.sampled_from(EVENTS), st.integers(1, 10_000)), max_size=12),
)
def test_stamps_always_agree_with_the_status(start: str, events: list[tuple[Event, int]]) -> None:
    """Whatever happens in whatever order, resolved_at/closed_at say what the status
    says, first_response_at never moves once set, and the status stays a status."""
    t = stage(start)
    at = NOW
    first_response = None
    for event, minutes in events:
        at += timedelta(minutes=minutes)
        t = transition(t, event, at).state
        assert t.status in STATUSES
        if first_response is not None:
            assert t.first_response_at == first_response
        first_response = t.first_response_at
        if t.status == "resolved":
            assert t.resolved_at is not None and t.closed_at is None
        elif t.status == "closed":
            assert t.closed_at is not None
        else:
            assert t.resolved_at is None and t.closed_at is None
