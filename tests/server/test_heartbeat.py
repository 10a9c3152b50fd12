"""The heartbeat: one timer that visits every connection once per interval."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.server.gateway.heartbeat import Heartbeat


class Conn:
    def __init__(self) -> None:
        self.visits: list[float] = []

    def beat(self) -> None:
        self.visits.append(time.monotonic())


async def test_each_connection_is_visited_once_an_interval_and_they_are_spread() -> None:
    beat = Heartbeat(0.2, tick=0.05)
    conns = []
    for _ in range(4):  # opened a tick apart: each lands in its own slot
        conns.append(Conn())
        beat.add(conns[-1])
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    for conn in conns:
        assert 4 <= len(conn.visits) <= 7, conn.visits
        gaps = [b - a for a, b in zip(conn.visits, conn.visits[1:], strict=False)]
        assert all(0.15 <= g <= 0.3 for g in gaps), gaps
    firsts = sorted(c.visits[0] for c in conns)
    assert firsts[-1] - firsts[0] >= 0.1  # not all pinged in one burst


async def test_a_discarded_connection_is_not_visited_and_the_timer_ends_with_the_last() -> None:
    beat = Heartbeat(0.1, tick=0.05)
    kept, gone = Conn(), Conn()
    beat.add(kept)
    beat.add(gone)
    beat.discard(gone)
    await asyncio.sleep(0.35)
    assert len(kept.visits) >= 2 and gone.visits == []
    assert len(beat) == 1
    beat.discard(kept)
    await asyncio.sleep(0.15)
    assert beat._task is None  # no task left behind by a server with no connections
    beat.add(kept)  # and it starts again with the next one
    await asyncio.sleep(0.25)
    assert len(kept.visits) >= 3


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(ValueError):
        Heartbeat(0)
    with pytest.raises(ValueError):
        Heartbeat(1, tick=0)
