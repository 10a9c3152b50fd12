"""Clocks: the system clock, a fake one for tests, and a simulated one that runs faster.

:class:`SimClock` is the simulator's time: one runs in the gateway (``--clock simulated``,
development apps only) and every simulated device follows it, so weeks of campaigns, caps and
lifecycle changes pass in minutes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol

from tidings.protocol.simtime import ClockState, SimTime

__all__ = ["Clock", "ClockState", "FakeClock", "SimClock", "SystemClock"]


class Clock(Protocol):
    """Wall-clock time in Unix seconds, and sleeping against it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told: ``advance()`` wakes every sleeper that is due."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._ids), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake the sleepers whose deadline has passed."""
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        """Jump to ``when`` (never backwards) and wake due sleepers."""
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


class SimClock(SimTime):
    """A :class:`~tidings.protocol.simtime.SimTime` devices can sleep on.

    Sleepers wake at the right simulated instant even when the speed changes while they sleep
    (every change wakes them to re-plan); while paused they sleep until resumed.
    """

    def __init__(
        self,
        start: float | None = None,
        speed: float = 1.0,
        *,
        paused: bool = False,
        real: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(start, speed, paused=paused, real=real)
        self._waiters: set[asyncio.Future[None]] = set()
        self.subscribe(self._wake_sleepers)

    def _wake_sleepers(self) -> None:
        for fut in list(self._waiters):
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_wake, fut)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time (re-planned at every change of the clock)."""
        deadline = self.now() + max(0.0, seconds)
        loop = asyncio.get_running_loop()
        while True:
            left = deadline - self.now()
            if left <= 0:
                await asyncio.sleep(0)
                return
            fut: asyncio.Future[None] = loop.create_future()
            real = self.real_seconds(left)
            timer = None if math.isinf(real) else loop.call_later(real, _wake, fut)
            self._waiters.add(fut)
            try:
                await fut
            finally:
                self._waiters.discard(fut)
                if timer is not None:
                    timer.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
