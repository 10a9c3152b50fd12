"""The change feed: what one node of a cluster changed, applied by every other, in order.

A node that stores a change of the shared audience, campaigns or settings (an event, a profile
attribute, consent, a device's facts, an erasure, a campaign or tag rule saved or moved on, new
settings) *announces* it: the change goes into the store's feed table, the changes announced
meanwhile in one write, and the announcer waits for that write (so a device's ``ok`` or an
admin answer means the other nodes will read it; a node that dies before it leaves the change
unacknowledged, and the device sends it again). Every node reads the feed from its own cursor every
:data:`POLL_S` and applies what the others wrote, in commit order: none is skipped, none is
read twice (:meth:`~tidings.server.storage.FeedStore.read_changes`), whatever was lost between
nodes on the way. Redis carries no change.

The feed only keeps a node's *view* fresh (live profiles, tags, campaign definitions and status,
settings): every decision that must hold is checked again by the store when it commits. A node
that could not read the feed for :data:`STALE_S` reports itself behind (``/healthz``) and, once
it reads again, rebuilds its whole view from the store instead of catching up row by row
(the feed keeps :data:`KEEP_S` of changes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tidings.protocol.errors import TidingsError
from tidings.server.batches import Batches
from tidings.server.changes import Change, decode, encode
from tidings.server.errors import FeedBehind
from tidings.server.storage import FeedStore

__all__ = ["KEEP_S", "POLL_S", "STALE_S", "Announce", "Feed", "alone"]

Announce = Callable[[Change], Awaitable[None]]
"""How a node tells the others what it changed (:meth:`Feed.announce`; :func:`alone` for a
single node)."""


async def alone(change: Change) -> None:
    """A single node has nobody to tell of a change."""


log = logging.getLogger(__name__)

POLL_S = 0.25
"""Seconds between two reads of the feed: with the write delay, a node's view lags another's
change by about this much."""
WRITE_RETRY_S = 2.0
"""How long a write of the feed is retried before the announcements waiting for it fail."""
STALE_S = 5.0
"""A node that has not read the feed for this long reports itself behind."""
KEEP_S = 600.0
"""Changes are kept this long; a node that could not read for half of it rebuilds its view."""
TRIM_EVERY_S = 60.0


class Feed:
    """One node's side of the feed: announce (write) and follow (read and apply)."""

    def __init__(
        self,
        store: FeedStore,
        node_id: str,
        *,
        apply: Callable[[Change], Awaitable[None]],
        resync: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.node_id = node_id
        self._apply = apply
        self._resync = resync
        self._cursor: str | None = None
        self._read_at = time.monotonic()  # the last successful read
        self._reading = asyncio.Lock()  # one reader at a time: each change is applied once
        self._writes: Batches[bytes, None] = Batches(self._append)
        self._tasks: list[asyncio.Task[None]] = []
        self.applied = 0  # changes of other nodes applied here

    async def start(self) -> None:
        """Take the position now, before the node reads its view from the store: a change
        committed in between is applied again rather than missed."""
        self._cursor, _ = await self.store.read_changes(None)
        self._read_at = time.monotonic()

    def follow(self) -> None:
        """Read and apply the feed from now on (once the node's view is read)."""
        self._tasks = [asyncio.get_running_loop().create_task(self._follow(), name="tidings-feed")]

    async def stop(self) -> None:
        """Write what is still queued, then stop following."""
        await self._writes.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def lag_s(self) -> float:
        """Seconds since the feed was last read: how stale this node's view may be."""
        return time.monotonic() - self._read_at

    @property
    def healthy(self) -> bool:
        """Whether the feed was read within :data:`STALE_S` (``/healthz`` says ``behind``)."""
        return self.lag_s < STALE_S

    # --- writing ------------------------------------------------------------------------------

    async def announce(self, change: Change) -> None:
        """Write a change this node stored to the feed, with whatever else was announced
        meanwhile (one write; group commit); returns once it is stored.

        Raises:
            TidingsError: the feed could not be written for :data:`WRITE_RETRY_S`.
        """
        await self._writes(encode(change))

    async def _append(self, bodies: list[bytes]) -> list[None]:
        """Write a batch of changes, retrying for :data:`WRITE_RETRY_S`."""
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                await self.store.append_changes(self.node_id, bodies)
                return [None] * len(bodies)
            except TidingsError as exc:
                if time.monotonic() >= deadline:
                    log.warning("feed: %d change(s) not written: %s", len(bodies), exc.reason)
                    raise
                await asyncio.sleep(0.1)

    # --- reading ------------------------------------------------------------------------------

    async def _follow(self) -> None:
        last_trim = time.monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.catch_up()
                if time.monotonic() - last_trim > TRIM_EVERY_S:
                    last_trim = time.monotonic()
                    await self.store.trim_changes(KEEP_S)
            except TidingsError as exc:
                if self.lag_s >= STALE_S:
                    log.warning("feed: not read for %.1f s: %s", self.lag_s, exc.reason)
            except Exception:
                log.exception("feed: reading failed")

    async def catch_up(self) -> int:
        """Read and apply, in order, what the other nodes wrote since the last read: after
        this, every change committed before the call is in this node's view. Returns how many.

        The follower calls it every :data:`POLL_S`; a node calls it itself before it decides
        for an audience. A node that could not read for half of :data:`KEEP_S` (changes may
        have been trimmed) rebuilds its view from the store instead.

        Raises:
            TidingsError: the store cannot be read (the view is as stale as :attr:`lag_s`).
        """
        async with self._reading:
            if self.lag_s > KEEP_S / 2:
                await self._rebuild(f"{self.lag_s:.0f} s behind")
                return 0
            try:
                cursor, rows = await self.store.read_changes(self._cursor)
            except FeedBehind as exc:
                await self._rebuild(exc.reason)
                return 0
            applied = 0
            for origin, body in rows:
                if origin == self.node_id:
                    continue
                try:
                    change = decode(body)
                except ValueError as exc:
                    log.warning("feed: malformed change dropped: %s", exc)
                    continue
                await self._apply(change)
                applied += 1
            self._cursor, self._read_at = cursor, time.monotonic()
            self.applied += applied
            return applied

    async def _rebuild(self, why: str) -> None:
        log.warning("feed: %s; rebuilding the view from the store", why)
        cursor, _ = await self.store.read_changes(None)
        await self._resync()
        self._cursor, self._read_at = cursor, time.monotonic()
