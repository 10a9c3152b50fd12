"""A watch on a networked store: is it answering now?

A silent partition (no reset, packets just stop) leaves every call to the store waiting for
its timeout. The watch asks the store a trivial question every :data:`WATCH_S` and counts it
unreachable when no answer comes within :data:`ANSWER_S`: the admin API then answers ``503``
at once, and also to the requests already waiting on the store, instead of letting them hang
(what they asked may have been stored: a retry with the same ``Idempotency-Key`` is safe).

A ping that waits for a connection of a busy pool (a connect storm) is late, not lost: while
other calls got answers within :data:`ANSWER_S`, the store counts as answering. Nor is an
answer that arrived while this process's own loop was stalled (:data:`LATE_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tidings.protocol.errors import TidingsError
from tidings.server.storage import ReachableStore

__all__ = ["ANSWER_S", "LATE_S", "WATCH_S", "StoreWatch"]

log = logging.getLogger(__name__)

WATCH_S = 0.5
"""Seconds between two pings of the store."""
ANSWER_S = 1.0
"""A ping not answered within this long counts the store as unreachable."""
LATE_S = 0.1
"""A wait for a ping that ends this much later than asked was stalled by this process's own
loop, and is not a verdict on the store."""


class StoreWatch:
    """Ping a store in the background; :attr:`ok` and :attr:`lost` tell the result."""

    def __init__(self, store: ReachableStore) -> None:
        self.store = store
        self.ok = True
        self.lost = asyncio.Event()
        """Set while the store does not answer (requests waiting on it give up)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="tidings-store")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        ping: asyncio.Future[None] | None = None
        while True:
            # One ping at a time, never awaited past ANSWER_S: a call cut off by a silent
            # partition may take long to give its connection back (asyncpg resets it).
            if ping is None or ping.done():
                ping = asyncio.ensure_future(self.store.ping())
            loop = asyncio.get_running_loop()
            asked = loop.time()
            done, _ = await asyncio.wait({ping}, timeout=ANSWER_S)
            if not done and loop.time() - asked > ANSWER_S + LATE_S:
                # This process's loop was itself stalled (a full collection, no core for it):
                # the ping may not even have gone out, or its answer not been read. The
                # stall says nothing of the store: it gets ANSWER_S more of a running loop.
                done, _ = await asyncio.wait({ping}, timeout=ANSWER_S)
            busy = time.monotonic() - self.store.answered_at < ANSWER_S
            failed = (not done and not busy) or (
                bool(done) and (ping.cancelled() or ping.exception() is not None)
            )
            if failed:
                if self.ok:
                    why = "no answer in time" if not done else _reason(ping)
                    log.warning("store: not answering (%s); admin requests get 503", why)
                self.ok = False
                self.lost.set()
            else:
                if not self.ok:
                    log.info("store: answering again")
                self.ok = True
                self.lost.clear()
            await asyncio.sleep(WATCH_S)


def _reason(ping: asyncio.Future[None]) -> str:
    exc = ping.exception()
    return exc.reason if isinstance(exc, TidingsError) else str(exc)
