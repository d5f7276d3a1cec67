"""maild.core.durations: the one duration syntax of config keys, tags and messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.core.durations import format_duration, parse_duration

# --- durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("45m", timedelta(minutes=45)),
        ("3h", timedelta(hours=3)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("4w", timedelta(weeks=4)),
        ("1d2h", timedelta(days=1, hours=2)),
        ("  1H 30M ", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "-1h", "30", "1.5", "h", "3 hours", "1x", "30m1h", "1h1h", "1e3s", "1,5h"]
)
def test_parse_duration_rejects_with_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r'expected a duration such as "30s"'):
        parse_duration(text)


def test_parse_duration_rejects_what_timedelta_cannot_hold() -> None:
    with pytest.raises(ValueError, match="at most 999999999 days"):
        parse_duration("9" * 30 + "w")


@given(
    weeks=st.integers(0, 500),
    days=st.integers(0, 6),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
)
def test_duration_components_round_trip(
    weeks: int, days: int, hours: int, minutes: int, seconds: int
) -> None:
    delta = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    text = (
        "".join(
            f"{count}{unit}"
            for count, unit in zip((weeks, days, hours, minutes, seconds), "wdhms", strict=True)
            if count
        )
        or "0s"
    )

    assert parse_duration(text) == delta
    assert format_duration(delta) == text


@given(st.timedeltas(min_value=timedelta(0)))
def test_format_duration_parses_back_exactly(delta: timedelta) -> None:
    assert parse_duration(format_duration(delta)) == delta


@given(st.text())
def test_parse_duration_only_ever_raises_value_error(text: str) -> None:
    try:
        parsed = parse_duration(text)
    except ValueError:
        return
    assert parsed >= timedelta(0)
