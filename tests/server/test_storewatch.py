"""The store watch: a silent store is lost at once, a busy one is not."""

from __future__ import annotations

import asyncio
import time

from helpers import timeout

from tidings.server.storewatch import ANSWER_S, StoreWatch


class SlowPings:
    """A store whose pings never come back (they wait for a pool connection, or for a server
    that went silent); ``answered_at`` is what its other calls last got back."""

    def __init__(self) -> None:
        self.answered_at = 0.0

    async def ping(self) -> None:
        await asyncio.Event().wait()


async def test_a_store_answering_other_calls_is_busy_not_lost_and_lost_once_it_is_silent() -> None:
    store = SlowPings()
    watch = StoreWatch(store)
    watch.start()
    try:
        busy_until = time.monotonic() + 3 * ANSWER_S
        while time.monotonic() < busy_until:  # a storm: calls answered all along
            store.answered_at = time.monotonic()
            await asyncio.sleep(0.05)
        assert watch.ok and not watch.lost.is_set()
        deadline = time.monotonic() + timeout(3 * ANSWER_S)  # now nothing answers at all
        while watch.ok:
            assert time.monotonic() < deadline, "a silent store was not noticed"
            await asyncio.sleep(0.05)
        assert watch.lost.is_set()
    finally:
        await watch.stop()


class QuickPings:
    """A store that answers every ping in 0.1 s."""

    answered_at = 0.0

    async def ping(self) -> None:
        await asyncio.sleep(0.1)


async def test_an_answer_that_came_while_the_loop_was_stalled_is_not_a_silent_store() -> None:
    # The process's own loop stalls past ANSWER_S (a full collection, no core for it): it
    # wakes with the ping's timeout and its answer due together. That is a late loop, not a
    # store gone silent: no 503s.
    watch = StoreWatch(QuickPings())
    watch.start()
    try:
        for _ in range(3):
            await asyncio.sleep(0.6)
            await asyncio.sleep(0)  # the watch's next ping is on its way
            time.sleep(ANSWER_S + 0.3)  # noqa: ASYNC251 - the point: a stalled loop
            await asyncio.sleep(0.2)
            assert watch.ok and not watch.lost.is_set()
    finally:
        await watch.stop()
