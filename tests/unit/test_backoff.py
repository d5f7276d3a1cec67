"""The capped backoff rule, with the numbers each retrying loop uses."""

from __future__ import annotations

import pytest

from maild.core.backoff import Backoff

IMAP = Backoff(base=0.5, cap=60.0)
RESTART = Backoff(base=1.0, cap=60.0)
WAKEUP = Backoff(base=1.0, cap=30.0)
OUTBOX_ROW = Backoff(base=30.0, cap=3600.0, jitter=0.1)


@pytest.mark.parametrize(
    ("backoff", "failures", "spread", "seconds"),
    [
        # the IMAP reconnect: 0.5 s doubling up to a minute
        (IMAP, 0, 0.0, 0.5),
        (IMAP, 1, 0.0, 0.5),
        (IMAP, 2, 0.0, 1.0),
        (IMAP, 3, 0.0, 2.0),
        (IMAP, 8, 0.0, 60.0),
        (IMAP, 100, 0.0, 60.0),
        # a component restart: 1 s doubling up to a minute
        (RESTART, 1, 0.0, 1.0),
        (RESTART, 6, 0.0, 32.0),
        (RESTART, 7, 0.0, 60.0),
        # the wake-up listener: capped at half a minute
        (WAKEUP, 5, 0.0, 16.0),
        (WAKEUP, 6, 0.0, 30.0),
        # an outbox row: jitter adds up to 10 % ...
        (OUTBOX_ROW, 1, 0.0, 30.0),
        (OUTBOX_ROW, 1, 1.0, 33.0),
        (OUTBOX_ROW, 2, 0.5, 63.0),
        # ... but never beyond the cap
        (OUTBOX_ROW, 7, 0.0, 1920.0),
        (OUTBOX_ROW, 8, 0.0, 3600.0),
        (OUTBOX_ROW, 8, 1.0, 3600.0),
        # a draw outside 0..1 is clamped
        (OUTBOX_ROW, 1, 7.0, 33.0),
        (OUTBOX_ROW, 1, -1.0, 30.0),
        # weeks of failures neither overflow nor exceed the cap
        (OUTBOX_ROW, 10_000, 1.0, 3600.0),
        (Backoff(base=1.0, cap=5.0, factor=3.0), 100_000, 0.0, 5.0),
        (Backoff(base=2.0, cap=2.0, factor=1.0), 50, 0.0, 2.0),
    ],
)
def test_delay(backoff: Backoff, failures: int, spread: float, seconds: float) -> None:
    assert backoff.delay(failures, spread) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0, "cap": 1.0},
        {"base": 2.0, "cap": 1.0},
        {"base": 1.0, "cap": 2.0, "factor": 0.5},
        {"base": 1.0, "cap": 2.0, "jitter": -0.1},
    ],
)
def test_unusable_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="unusable backoff"):
        Backoff(**kwargs)
