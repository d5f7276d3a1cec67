"""Capped exponential backoff: how long to wait after the n-th failure in a row.

One rule for every loop that retries: the IMAP reconnect, the outbox sender's
passes and its per-row retries (the row keeps its ``attempts`` count, so that
backoff survives a restart), the daemon's component restarts and the outbox
wake-up listener. The caller counts its failures in a row and resets the count
after a success; this module only turns the count into seconds. No clock, no
sleeping, no randomness of its own: a jittered delay takes the random draw as
a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * factor**(failures - 1)`` seconds, at most ``cap`` (jitter included).

    ``jitter`` is the largest fraction added on top, so that rows that failed
    together do not all come back at once; :meth:`delay` takes the random
    draw (``spread``, from 0 to 1) from the caller.
    """

    base: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1 or self.jitter < 0:
            raise ValueError(f"unusable backoff {self!r}")

    def delay(self, failures: int, spread: float = 0.0) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 or 1: ``base``)."""
        try:
            seconds = self.base * self.factor ** max(failures - 1, 0)
        except OverflowError:  # a long outage: the cap has long been reached
            return self.cap
        seconds *= 1.0 + self.jitter * min(max(spread, 0.0), 1.0)
        return min(seconds, self.cap)
