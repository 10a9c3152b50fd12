"""Reconnect backoff: exponential with full jitter (PROTOCOL.md §Reconnecting).

Full jitter spreads a crowd of clients that lost the same gateway over the whole window instead
of letting them return in synchronised waves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["DEFAULT_BACKOFF_BASE", "DEFAULT_BACKOFF_CAP", "Backoff", "backoff_delay"]

DEFAULT_BACKOFF_BASE = 0.5
"""Seconds: the window of the first retry."""

DEFAULT_BACKOFF_CAP = 30.0
"""Seconds: the largest window, reached after about six failures."""


def backoff_delay(
    attempt: int,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    cap: float = DEFAULT_BACKOFF_CAP,
    rand: float,
) -> float:
    """Return the delay before retry number ``attempt`` (0-based).

    Args:
        attempt: How many attempts have failed in a row, starting at 0.
        base: Window of the first retry, in seconds.
        cap: Largest window, in seconds.
        rand: A uniform random number in [0, 1); injected so the policy is a pure function.
    """
    window: float = min(cap, base * (2.0 ** min(attempt, 32)))
    return window * rand


@dataclass(slots=True)
class Backoff:
    """Counts consecutive failures and hands out jittered delays."""

    base: float = DEFAULT_BACKOFF_BASE
    cap: float = DEFAULT_BACKOFF_CAP
    attempt: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        """Return the delay for the next retry and count this failure."""
        r: float = (self.rng or random).random()
        delay = backoff_delay(self.attempt, base=self.base, cap=self.cap, rand=r)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Forget past failures after a successful session."""
        self.attempt = 0
