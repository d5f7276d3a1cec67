"""Pure rules behind issue 14: who hears of a requester's reply, when the weekly
report is due, which budget threshold is reached, what name an attachment gets."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from maild.cli.export import safe_filename
from maild.config import parse_weekly
from maild.core.routing import reply_recipients
from maild.store.reports import budget_threshold, weekly_slot

CHICAGO = "America/Chicago"


def test_everyone_working_the_ticket_and_nobody_else() -> None:
    assert reply_recipients("bob", "alice", ["carol", "bob"], ["dave", "erin"]) == [
        "bob", "alice", "carol",
    ]  # fmt: skip
    assert reply_recipients(None, "Alice", [], ["dave"]) == ["alice"]
    assert reply_recipients(None, None, [], ["dave", "erin"]) == ["dave", "erin"]
    assert reply_recipients(None, None, [], []) == []


def test_weekly_slot_across_daylight_saving() -> None:
    monday_nine = (0, time(9, 0))
    # Mon 2 Nov 2026 09:00 CST, the day after DST ended
    now = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    slot = weekly_slot(now, *monday_nine, CHICAGO)
    assert slot.astimezone(ZoneInfo(CHICAGO)).isoformat() == "2026-11-02T09:00:00-06:00"
    before = weekly_slot(now - timedelta(minutes=1), *monday_nine, CHICAGO)
    assert before.astimezone(ZoneInfo(CHICAGO)).isoformat() == "2026-10-26T09:00:00-05:00"


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)),
    st.integers(0, 6),
    st.times(),
)
def test_weekly_slot_is_the_latest_one_not_after_now(
    naive: datetime, weekday: int, at: time
) -> None:
    now = naive.replace(tzinfo=UTC)
    slot = weekly_slot(now, weekday, at, CHICAGO)
    assert slot <= now
    assert now - slot < timedelta(days=7, hours=2)  # a DST week is an hour longer
    local = slot.astimezone(ZoneInfo(CHICAGO))
    assert local.weekday() == weekday


def test_parse_weekly() -> None:
    assert parse_weekly("mon 09:00") == (0, time(9, 0))
    assert parse_weekly("Friday 17:30") == (4, time(17, 30))
    for bad in ("", "mon", "mon 9", "mon 24:00", "xyz 09:00", "mon 09:00 utc"):
        assert parse_weekly(bad) is None


def test_budget_threshold() -> None:
    assert budget_threshold(7.99, 10) is None
    assert budget_threshold(8, 10) == "80%"
    assert budget_threshold(10, 10) == "100%"
    assert budget_threshold(50, None) is None
    assert budget_threshold(50, 0) is None


@given(st.text(max_size=300))
def test_any_attachment_name_stays_inside_the_folder(name: str) -> None:
    safe = safe_filename(name)
    folder = Path("/srv/out")
    assert safe and len(safe.encode("utf-8", "surrogatepass")) <= 200
    assert (folder / safe).parent == folder
    assert safe not in (".", "..") and not safe.startswith(".")


def test_a_long_name_keeps_its_extension() -> None:
    safe = safe_filename("é" * 300 + ".pdf")
    assert safe.endswith(".pdf") and len(safe.encode()) <= 200
