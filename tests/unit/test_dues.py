"""Due times (SPEC section 4): when triage, the first response, an incident's next
update and the auto-close fall due, and when the stewards are warned.

``maild.store.dues.refresh_dues`` reads the reminders already sent from the store
and writes the result onto the ticket; everything it decides comes from
``views.clocked`` (the ticket's clock fields) and ``lifecycle.compute_dues``,
tested here with transient tickets and the reminders-sent set as plain values.

The office: America/Chicago, Mon-Fri 08:00-12:00 and 13:00-17:00 (8 working
hours a day). Times in the tables are Chicago local time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.config import Config
from maild.core.lifecycle import Dues, compute_dues
from maild.core.workhours import Calendar
from maild.store.views import clocked
from tests.unit.core_fixtures import make_config, ticket

CHICAGO = ZoneInfo("America/Chicago")
OFFICE = {
    "timezone": "America/Chicago",
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "ranges": ["08:00-12:00", "13:00-17:00"],
}


def chi(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CHICAGO)


WED_9 = chi(11, 25, 9)  # Wednesday 25 November 2026, 09:00 CST
FRI_16 = chi(11, 20, 16)


def config(**sections: Any) -> Config:
    return make_config(hours={**OFFICE, **sections.pop("hours", {})}, **sections)


def dues_of(cfg: Config, sent: frozenset[tuple[str, str]] = frozenset(), **fields: Any) -> Dues:
    # the store hands datetimes back in UTC (UTCDateTime); the tables write them in Chicago
    utc = {k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in fields.items()}
    return compute_dues(clocked(ticket(**utc)), cfg, Calendar(cfg.hours), sent)


@dataclass(frozen=True)
class Case:
    name: str
    ticket: dict[str, Any]
    expect: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


NEW: dict[str, Any] = {"status": "new", "created_at": WED_9}

CASES = [
    Case("untriaged: triage due 8 working hours later, across the night",
         NEW, {"triage_due_at": chi(11, 26, 9), "next_due_kind": "triage",
               "next_due_at": chi(11, 26, 9)}),
    Case("untriaged: first response due 24 working hours later, across the weekend",
         NEW, {"response_due_at": chi(11, 30, 9)}),
    Case("Friday 16:00: triage due Monday 16:00, not Saturday",
         {"status": "new", "created_at": FRI_16}, {"triage_due_at": chi(11, 23, 16)}),
    Case("a public holiday (Thanksgiving) does not count",
         NEW, {"triage_due_at": chi(11, 27, 9)}, config={"hours": {"holiday_country": "US"}}),
    Case("a listed holiday does not count either",
         NEW, {"triage_due_at": chi(11, 27, 9)}, config={"hours": {"holidays": ["2026-11-26"]}}),
    Case("triage = none: no triage target",
         NEW, {"triage_due_at": None, "next_due_kind": "first_response"},
         config={"sla": {"default": {"triage": "none"}}}),
    Case("across the end of daylight saving: Friday 16:00 CDT -> Monday 16:00 CST",
         {"status": "new", "created_at": chi(10, 30, 16)}, {"triage_due_at": chi(11, 2, 16)}),
    Case("an incident update across the repeated hour is 3 real hours later",
         {**NEW, "type": "incident", "triaged_at": WED_9, "first_response_at": WED_9,
          "last_update_at": chi(11, 1, 0, 30)},
         {"next_update_at": datetime(2026, 11, 1, 8, 30, tzinfo=UTC)}),
    Case("a wall-clock default counts nights and weekends",
         {"status": "new", "created_at": FRI_16},
         {"triage_due_at": chi(11, 21, 0), "response_due_at": chi(11, 21, 16)},
         config={"sla": {"default": {"clock": "wall"}}}),
    Case("triaged: no triage due, first response still due",
         {**NEW, "type": "guidance", "triaged_at": WED_9},
         {"triage_due_at": None, "response_due_at": chi(11, 30, 9),
          "next_due_kind": "first_response"}),
    Case("answered and triaged: nothing due",
         {**NEW, "status": "open", "type": "change", "triaged_at": WED_9,
          "first_response_at": WED_9},
         {"triage_due_at": None, "response_due_at": None, "next_due_kind": None,
          "next_action_at": None}),
    Case("an incident: first response within 1 hour, wall clock, even at night",
         {"status": "new", "created_at": chi(11, 25, 22), "type": "incident",
          "triaged_at": chi(11, 25, 22)},
         {"response_due_at": chi(11, 25, 23), "next_due_kind": "first_response"}),
    Case("a change with its own working-hours target",
         {**NEW, "type": "change", "triaged_at": WED_9},
         {"response_due_at": chi(11, 25, 11)},
         config={"sla": {"change": {"first_response": "2h"}}}),
    Case("a guidance ticket on a wall clock of its own",
         {**NEW, "type": "guidance", "triaged_at": WED_9},
         {"response_due_at": chi(11, 26, 9)},
         config={"sla": {"guidance": {"clock": "wall"}}}),
    # incidents: the update cadence
    Case("an incident's next update is 3 hours (wall) after triage",
         {**NEW, "type": "incident", "triaged_at": WED_9, "first_response_at": WED_9},
         {"next_update_at": chi(11, 25, 12), "next_due_kind": "update"}),
    Case("... or after the last update",
         {**NEW, "type": "incident", "triaged_at": WED_9, "first_response_at": WED_9,
          "last_update_at": chi(11, 25, 20)},
         {"next_update_at": chi(11, 25, 23)}),
    Case("[update-every=1h] overrides the cadence",
         {**NEW, "type": "incident", "triaged_at": WED_9, "first_response_at": WED_9,
          "update_every_minutes": 60},
         {"next_update_at": chi(11, 25, 10)}),
    Case("incidents.update_every from config",
         {**NEW, "type": "incident", "triaged_at": WED_9, "first_response_at": WED_9},
         {"next_update_at": chi(11, 25, 10, 30)}, config={"incidents": {"update_every": "90m"}}),
    Case("a resolved incident sends no more updates",
         {**NEW, "status": "resolved", "type": "incident", "triaged_at": WED_9,
          "first_response_at": WED_9, "resolved_at": WED_9},
         {"next_update_at": None, "next_due_kind": None}),
    Case("a non-incident has no update cadence",
         {**NEW, "type": "guidance", "triaged_at": WED_9, "first_response_at": WED_9},
         {"next_update_at": None}),
    # resolved -> auto-close
    Case("resolved: auto-close after 48 working hours",
         {**NEW, "status": "resolved", "resolved_at": WED_9},
         {"close_due_at": chi(12, 3, 9), "next_action_at": chi(12, 3, 9),
          "triage_due_at": None, "response_due_at": None}),
    Case("tickets.auto_close_after = 2h",
         {**NEW, "status": "resolved", "resolved_at": WED_9},
         {"close_due_at": chi(11, 25, 11)}, config={"tickets": {"auto_close_after": "2h"}}),
    Case("resolved on Friday at 16:00 closes after the weekend",
         {**NEW, "status": "resolved", "resolved_at": FRI_16},
         {"close_due_at": chi(11, 23, 10)}, config={"tickets": {"auto_close_after": "3h"}}),
    Case("closed: nothing is ever due",
         {**NEW, "status": "closed", "type": "incident", "resolved_at": WED_9,
          "closed_at": WED_9},
         {"triage_due_at": None, "response_due_at": None, "close_due_at": None,
          "next_update_at": None, "next_action_at": None}),
    Case("waiting on the requester: the targets still run",
         {**NEW, "status": "waiting"}, {"triage_due_at": chi(11, 26, 9)}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_due_times(case: Case) -> None:
    dues = dues_of(config(**case.config), **case.ticket)
    assert {k: getattr(dues, k) for k in case.expect} == case.expect


# --- reminders: warn at sla.warn_at, breach at the target, once each ---------------

REMINDERS = [
    ("default warn_at 0.75: triage warned after 6 working hours", {}, frozenset(),
     [("triage", "warn", chi(11, 25, 16)), ("triage", "breach", chi(11, 26, 9)),
      ("first_response", "warn", chi(11, 27, 11)),
      ("first_response", "breach", chi(11, 30, 9))]),
    ("warn_at 0.5: warned at half the target", {"sla": {"warn_at": 0.5}}, frozenset(),
     [("triage", "warn", chi(11, 25, 14)), ("triage", "breach", chi(11, 26, 9)),
      ("first_response", "warn", chi(11, 26, 14)),
      ("first_response", "breach", chi(11, 30, 9))]),
    ("a reminder already sent is not owed again", {},
     frozenset({("triage", "warn"), ("first_response", "warn")}),
     [("triage", "breach", chi(11, 26, 9)), ("first_response", "breach", chi(11, 30, 9))]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "cfg", "sent", "owed"), REMINDERS, ids=[r[0] for r in REMINDERS])
def test_reminders_owed(
    name: str,
    cfg: dict[str, Any],
    sent: frozenset[tuple[str, str]],
    owed: list[tuple[str, str, datetime]],
) -> None:
    dues = dues_of(config(**cfg), sent, **NEW)
    assert [(r.kind, r.stage, r.at) for r in dues.reminders] == owed
    assert dues.next_action_at == min(at for _, _, at in owed)


def test_an_incident_is_nudged_before_its_update_is_due() -> None:
    fields: dict[str, Any] = {
        **NEW,
        "type": "incident",
        "triaged_at": WED_9,
        "first_response_at": WED_9,
    }
    dues = dues_of(config(), **fields)
    nudge = [r for r in dues.reminders if r.kind == "nudge"]
    assert [(r.stage, r.at) for r in nudge] == [
        (chi(11, 25, 12).astimezone(UTC).isoformat(), chi(11, 25, 11, 30))
    ]
    assert dues.next_action_at == chi(11, 25, 11, 30)

    never = dues_of(config(incidents={"nudge_before": "0s"}), **fields)
    assert [r for r in never.reminders if r.kind == "nudge"] == []
    assert never.next_action_at == chi(11, 25, 12)

    done = dues_of(
        config(), frozenset({("nudge", chi(11, 25, 12).astimezone(UTC).isoformat())}), **fields
    )
    assert done.next_action_at == chi(11, 25, 12)


def test_clocked_reads_the_tickets_clock_fields() -> None:
    t = ticket(status="waiting", type="incident", created_at=WED_9, update_every_minutes=30)
    c = clocked(t)
    assert (c.status, c.type, c.created_at, c.update_every_minutes) == (
        "waiting", "incident", WED_9, 30,
    )  # fmt: skip


# --- properties over any arrival time --------------------------------------------

ARRIVALS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
)
WORKING = config(hours={"holiday_country": "US"})
WALL = config(sla={"default": {"clock": "wall"}})


@settings(max_examples=150, deadline=None)
@given(ARRIVALS, st.sampled_from([None, "change", "guidance", "incident"]))
def test_warned_before_breached_and_working_hours_never_beat_the_wall_clock(
    arrival: datetime, kind: str | None
) -> None:
    fields: dict[str, Any] = {"status": "new", "created_at": arrival, "type": kind}
    working = dues_of(WORKING, **fields)
    wall = dues_of(WALL, **fields)

    for dues in (working, wall):
        by_kind: dict[str, dict[str, datetime]] = {}
        for r in dues.reminders:
            by_kind.setdefault(r.kind, {})[r.stage] = r.at
        for kind_, stages in by_kind.items():
            if kind_ != "nudge":
                assert arrival < stages["warn"] <= stages["breach"]
        due = [d for d in (dues.triage_due_at, dues.response_due_at) if d is not None]
        assert dues.next_action_at is not None and dues.next_action_at <= min(due)
    if kind != "incident":  # incidents are on the wall clock in both configs
        assert working.triage_due_at is not None and wall.triage_due_at is not None
        assert working.triage_due_at >= wall.triage_due_at == arrival + timedelta(hours=8)
        assert working.response_due_at is not None and wall.response_due_at is not None
        assert working.response_due_at >= wall.response_due_at
