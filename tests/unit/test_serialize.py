"""The one ticket serializer: the same JSON from stored text, Python values or a mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from maild.store.serialize import TICKET_FIELDS, ticket_dict, ticket_dicts, utc_text

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
MINUS_6 = timezone(timedelta(hours=-6))

# one ticket three ways: as SQLite stores it, as the ORM hands it back, by name
TEXT_ROW = (
    7, "Hub is down", "open", "incident", "high", "pangeo", "rep@pangeo.example",
    '["ops@pangeo.example", "zo\\u00eb@jupyter.example"]', "alice", None, "[]", 30,
    "2026-11-20 09:00:00.000000", "2026-11-25 14:59:59.250000", 3,
    "first_response", "2026-11-25 15:00:00.000000", None,
)  # fmt: skip
VALUE_ROW = (
    7, "Hub is down", "open", "incident", "high", "pangeo", "rep@pangeo.example",
    ["ops@pangeo.example", "zoë@jupyter.example"], "alice", None, [], 30,
    datetime(2026, 11, 20, 9, tzinfo=UTC), datetime(2026, 11, 25, 14, 59, 59, 250000, tzinfo=UTC),
    3, "first_response", datetime(2026, 11, 25, 15, tzinfo=UTC), None,
)  # fmt: skip
EXPECTED = {
    "id": 7,
    "subject": "Hub is down",
    "status": "open",
    "type": "incident",
    "priority": "high",
    "community": "pangeo",
    "requester": "rep@pangeo.example",
    "cc": ["ops@pangeo.example", "zoë@jupyter.example"],
    "assignee": "alice",
    "incident_commander": None,
    "links": [],
    "time_spent_minutes": 30,
    "created_at": "2026-11-20T09:00:00+00:00",
    "updated_at": "2026-11-25T14:59:59.250000+00:00",
    "message_count": 3,
    # due exactly now: breached
    "next_due": {"kind": "first_response", "at": "2026-11-25T15:00:00+00:00", "breached": True},
    "follow_up_of": None,
}


@pytest.mark.parametrize(
    "row",
    [TEXT_ROW, VALUE_ROW, dict(zip(TICKET_FIELDS, TEXT_ROW, strict=True))],
    ids=["stored text", "python values", "mapping"],
)
def test_every_form_of_a_row_gives_the_spec_shape(row: Any) -> None:
    assert ticket_dict(row, NOW) == EXPECTED
    assert ticket_dicts([row, row], NOW) == [EXPECTED, EXPECTED]


@pytest.mark.parametrize(
    ("due", "now", "breached"),
    [
        ("2026-11-25 15:00:00.000000", NOW, True),
        ("2026-11-25 15:00:00.000001", NOW, False),
        ("2026-11-25 14:59:59.999999", NOW, True),
        # now in another zone is the same instant
        ("2026-11-25 15:00:00.000000", NOW.astimezone(MINUS_6), True),
        # a stored time without microseconds (not written by SQLAlchemy)
        ("2026-11-25 15:00:01", NOW, False),
        (datetime(2026, 11, 25, 15), NOW, True),  # naive from a driver: UTC
    ],
)
def test_breached_means_due_at_or_before_now(due: Any, now: datetime, breached: bool) -> None:
    row = (*TEXT_ROW[:16], due, None)
    assert ticket_dict(row, now)["next_due"]["breached"] is breached


def test_no_due_time_or_no_kind_means_no_next_due() -> None:
    assert ticket_dict((*TEXT_ROW[:15], None, "2026-11-25 15:00:00.000000", None), NOW)[
        "next_due"
    ] is None  # fmt: skip
    assert ticket_dict((*TEXT_ROW[:15], "triage", None, None), NOW)["next_due"] is None


@pytest.mark.parametrize(
    ("stored", "iso"),
    [
        (None, None),
        ("2026-11-25 15:00:00.000000", "2026-11-25T15:00:00+00:00"),
        ("2026-11-25 15:00:00.120000", "2026-11-25T15:00:00.120000+00:00"),
        (datetime(2026, 11, 25, 15, tzinfo=UTC), "2026-11-25T15:00:00+00:00"),
        (
            datetime(2026, 11, 25, 9, tzinfo=timezone(timedelta(hours=-6))),
            "2026-11-25T15:00:00+00:00",
        ),
    ],
)
def test_times_come_out_in_utc_with_offset(stored: Any, iso: str | None) -> None:
    assert utc_text(stored) == iso
