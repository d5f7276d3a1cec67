"""Durations as maild writes them: ``30s``, ``45m``, ``3h``, ``1h30m``, ``1.5h``, ``2d``, ``4w``.

One syntax for the config, the subject tags (``[time=1h30m]``) and what maild
prints (the outbox's "gave up after 2d"). Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal

__all__ = ["DURATION_EXPECTED", "format_duration", "parse_duration"]


def _show(text: str) -> str:
    return json.dumps(text if len(text) <= 200 else text[:197] + "...", ensure_ascii=False)


# Largest first: that is also the order in which units must be written.
_DURATION_UNITS: Mapping[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
# ASCII only: with IGNORECASE in Unicode mode "ſ" (long s) would match "s".
_DURATION_PART = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)([a-z])", re.ASCII | re.IGNORECASE)
DURATION_EXPECTED = (
    'a duration such as "30s", "45m", "3h", "1h30m", "1.5h", "2d" or "4w"'
    " (units s, m, h, d, w; largest first)"
)
_MAX_MICROSECONDS = timedelta.max // timedelta(microseconds=1)


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``"30s"``, ``"1h30m"``, ``"1.5h"`` or ``"4w"``.

    A duration is one or more ``<number><unit>`` parts, units ``w``, ``d``,
    ``h``, ``m``, ``s`` (any case), each used at most once and largest first;
    numbers may have a decimal fraction. Whitespace around the whole and
    between parts is allowed. A day is always 24 hours here: this is a plain
    length of time, not a calendar step. Fractions of a microsecond are rounded.

    Raises :class:`ValueError` (and nothing else) for an empty string, a
    negative or unitless number, an unknown or repeated unit, or anything else,
    with a message saying what is accepted.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"expected {DURATION_EXPECTED}, got {_show(text)}")
    total = Decimal(0)
    position = 0
    previous_rank = -1
    units = list(_DURATION_UNITS)
    while position < len(stripped):
        match = _DURATION_PART.match(stripped, position)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _DURATION_UNITS or units.index(unit) <= previous_rank:
            raise ValueError(f"expected {DURATION_EXPECTED}, got {_show(text)}")
        previous_rank = units.index(unit)
        total += Decimal(match.group(1)) * _DURATION_UNITS[unit]
        position = match.end()
    microseconds = int((total * 1_000_000).to_integral_value())
    if microseconds > _MAX_MICROSECONDS:
        raise ValueError(
            f"expected a duration of at most {timedelta.max.days} days, got {_show(text)}"
        )
    return timedelta(microseconds=microseconds)


def format_duration(delta: timedelta) -> str:
    """Format a non-negative duration the way :func:`parse_duration` reads it.

    The result is canonical (``timedelta(hours=1, minutes=30)`` -> ``"1h30m"``,
    zero -> ``"0s"``, fractions only on seconds) and parses back exactly.
    Raises :class:`ValueError` for a negative duration.
    """
    if delta < timedelta(0):
        raise ValueError(f"expected a non-negative duration, got {delta!r}")
    seconds, microseconds = divmod(delta // timedelta(microseconds=1), 1_000_000)
    parts: list[str] = []
    for unit, size in _DURATION_UNITS.items():
        if unit == "s":
            break
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    if microseconds:
        parts.append(f"{seconds}.{microseconds:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
