"""Every connection's keepalive on one timer.

websockets keeps a connection alive with a task of its own: it sleeps ``ping_interval``, sends
a ping, makes a future for the pong and waits for it under a timeout. That is a task, a timer,
a future and a timeout per connection per interval, and at 100,000 idle devices on 25 s it is
4,000 of each a second: on a small machine, the largest cost of a gateway that holds many
connections and does nothing else, and one that grows with every device it holds.

:class:`Heartbeat` does the same with one task per server. Connections are spread over slots
``tick`` apart by the moment they opened; each tick visits one slot, so each connection is
visited once per ``interval``. At a visit a connection from which nothing was heard since the
previous visit's ping (not its pong, nor any frame) is closed with 4103; the others get a ping
(PROTOCOL.md §2, step 6: a silent peer is dropped within two intervals).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["DEFAULT_TICK_S", "Beating", "Heartbeat"]

DEFAULT_TICK_S = 0.5
"""Seconds between two visits of the timer: the pings of connections that opened together go
out in bursts of at most this much of the connect rate."""


class Beating(Protocol):
    """A connection the heartbeat keeps: it pings, or closes when nothing was heard."""

    def beat(self) -> None: ...


class Heartbeat:
    """The keepalive of every connection of one server (see the module docstring)."""

    def __init__(self, interval: float, *, tick: float = DEFAULT_TICK_S) -> None:
        if interval <= 0 or tick <= 0:
            raise ValueError("interval and tick must be > 0")
        slots = max(1, round(interval / tick))
        self.interval = interval
        self.tick = interval / slots
        self._slots: list[dict[Beating, None]] = [{} for _ in range(slots)]
        self._slot_of: dict[Beating, dict[Beating, None]] = {}
        self._cursor = 0  # the slot visited last
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def add(self, conn: Beating) -> None:
        """Keep ``conn`` alive from now: its first visit is one interval away."""
        slot = self._slots[self._cursor]  # visited again after a whole round
        slot[conn] = None
        self._slot_of[conn] = slot
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tidings-heartbeat"
            )

    def discard(self, conn: Beating) -> None:
        """Forget ``conn`` (closed)."""
        slot = self._slot_of.pop(conn, None)
        if slot is not None:
            slot.pop(conn, None)

    async def _run(self) -> None:
        """Visit one slot a tick while any connection is kept; then end (the next ``add``
        starts it again), so a closed server leaves no task behind."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while self._slot_of:
                due = max(due + self.tick, loop.time())  # a late tick is not caught up twice
                await asyncio.sleep(due - loop.time())
                self._cursor = (self._cursor + 1) % len(self._slots)
                for conn in list(self._slots[self._cursor]):
                    conn.beat()
        finally:
            self._task = None
