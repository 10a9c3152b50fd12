"""Which gateway the client dials next, and after how long (PROTOCOL.md §12).

:class:`Dialer` is the reconnect policy of :class:`~tidings.client_sdk.TidingsClient`, without
sockets: a rotation over the gateway URLs that starts at the one that worked last and tries each
once, exponential backoff with full jitter between rotations, reset only by a session that
stayed open :data:`STABLE_SESSION_S` (a gateway that welcomes and then drops every device at once
must not be hammered), and a server's ``goaway`` hint taking precedence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tidings.protocol.backoff import Backoff
from tidings.protocol.errors import ConfigError

__all__ = ["STABLE_SESSION_S", "Dialer", "gateway_urls"]

STABLE_SESSION_S = 10.0
"""A session that stayed open this long resets the reconnect backoff."""


def gateway_urls(url: str | Sequence[str]) -> tuple[str, ...]:
    """The gateways ``url`` names, checked: at least one, each ``ws://`` or ``wss://``.

    Raises:
        ConfigError: naming the URL that is not one.
    """
    urls = (url,) if isinstance(url, str) else tuple(url)
    if not urls:
        raise ConfigError("url: name at least one gateway")
    for u in urls:
        if not isinstance(u, str) or not u.startswith(("ws://", "wss://")) or len(u) < 6:
            raise ConfigError(f"url: {str(u)[:200]!r} is not a ws:// or wss:// URL")
    return urls


class Dialer:
    """The gateway to dial and the pause before each attempt.

    Args:
        urls: The gateways, in the order to try them.
        backoff_base, backoff_cap: The reconnect backoff window (seconds).
    """

    def __init__(self, urls: tuple[str, ...], *, backoff_base: float, backoff_cap: float) -> None:
        self.urls = urls
        self._at = 0  # the URL in use, or the one the next attempt tries
        self._tried = 0  # attempts since the last welcome or the last backoff
        self._backoff = Backoff(base=backoff_base, cap=backoff_cap)
        self._welcomed_at: float | None = None
        self._goaway_ms: int | None = None

    @property
    def url(self) -> str:
        """The gateway in use, or the one the next attempt dials."""
        return self.urls[self._at]

    def welcomed(self, now: float) -> None:
        """The gateway welcomed this session (``now``: a monotonic clock)."""
        self._welcomed_at = now

    def go_away(self, reconnect_ms: int) -> None:
        """The gateway said ``goaway``: come back after its hint, not after the backoff."""
        self._goaway_ms = reconnect_ms

    def lost(self, now: float) -> float:
        """The connection ended: the seconds to wait before the next attempt (of :attr:`url`).

        A session that lasted :data:`STABLE_SESSION_S` resets the backoff; one never welcomed
        moves on to the next gateway, and only a whole rotation of failures waits.
        """
        welcomed = self._welcomed_at is not None
        if welcomed and now - self._welcomed_at >= STABLE_SESSION_S:  # type: ignore[operator]
            self._backoff.reset()
        self._welcomed_at = None
        self._tried = 0 if welcomed else self._tried + 1
        if not welcomed:
            self._at = (self._at + 1) % len(self.urls)
        if self._goaway_ms is not None:
            delay, self._goaway_ms = self._goaway_ms / 1000 * (0.5 + random.random()), None
            return delay
        if 0 < self._tried < len(self.urls):
            return 0.0  # the next gateway of this rotation
        self._tried = 0
        return self._backoff.next_delay()
