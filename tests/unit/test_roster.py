"""The rotating roster: two stewards on duty, one rotates off at each stagger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from maild.config import Config, parse_config
from maild.core.roster import duty_at, on_duty


def _config(order: list[str], start: str = "2026-11-02") -> Config:
    return parse_config(
        {
            "support": {"address": "support@example.org"},
            "hours": {"timezone": "America/Chicago"},
            "stewards": [{"name": n, "addresses": [f"{n}@example.org"]} for n in order],
            "roster": {"order": order, "start": start, "tenure": "4w", "stagger": "2w"},
        }
    )


CHICAGO = ZoneInfo("America/Chicago")


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=CHICAGO)


def test_three_stewards_rotate_as_the_spec_says() -> None:
    config = _config(["a", "b", "c"])
    assert on_duty(config, at("2026-11-02")) == ("a", "b")
    assert on_duty(config, at("2026-11-16")) == ("b", "c")
    assert on_duty(config, at("2026-11-30")) == ("c", "a")
    assert on_duty(config, at("2026-12-14")) == ("a", "b")


def test_change_happens_at_local_midnight() -> None:
    config = _config(["a", "b", "c", "d"])
    before = datetime(2026, 11, 15, 23, 59, tzinfo=CHICAGO)
    after = datetime(2026, 11, 16, 0, 0, tzinfo=CHICAGO)
    assert on_duty(config, before) == ("a", "b")
    assert on_duty(config, after) == ("b", "c")
    duty = duty_at(config, before.astimezone(UTC))
    assert duty.next_change == after
    assert duty.next_on_duty == ("b", "c")


@given(st.integers(min_value=0, max_value=3000), st.integers(min_value=3, max_value=6))
def test_always_two_on_duty_and_one_stays_across_each_change(days: int, n: int) -> None:
    names = [f"s{i}" for i in range(n)]
    config = _config(names)
    t = at("2026-11-02") + timedelta(days=days)
    duty = duty_at(config, t)
    assert len(set(duty.on_duty)) == 2
    assert duty.next_change is not None and duty.next_change > t
    # the steward who joined last stays on after the change
    assert duty.on_duty[1] == duty.next_on_duty[0]
