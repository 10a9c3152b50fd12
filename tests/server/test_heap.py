"""The heap keeper: full collections on its own schedule, long-lived objects frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from helpers import timeout

from tidings.server.heap import YOUNG_THRESHOLD, HeapKeeper, next_sweep


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """Make a two-object reference cycle nobody else holds; return a weak reference into it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def keeper() -> Iterator[HeapKeeper]:
    before = gc.get_threshold()
    heap = HeapKeeper(sweep_s=60, full_s=600)
    try:
        yield heap
    finally:
        heap.stop()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("now", "last_full", "expected"),
    [(100.0, 0.0, "sweep"), (599.9, 0.0, "sweep"), (600.0, 0.0, "full"), (1300.0, 650.0, "full")],
)
def test_a_sweep_is_full_once_full_s_has_passed(
    now: float, last_full: float, expected: str
) -> None:
    assert next_sweep(now, last_full, 600.0) == expected


def test_start_freezes_what_exists_and_stops_automatic_full_collections(keeper: HeapKeeper) -> None:
    keeper.start()
    young, _, old = gc.get_threshold()
    assert young == YOUNG_THRESHOLD
    assert old >= 1_000_000
    assert gc.get_freeze_count() > 0


def test_a_sweep_collects_cycles_made_since_the_last_one(keeper: HeapKeeper) -> None:
    keeper.start()
    ref = _cycle()
    assert ref() is not None
    keeper.sweep(full=False)
    assert ref() is None


def test_a_frozen_cycle_waits_for_the_full_sweep(keeper: HeapKeeper) -> None:
    keeper.start()
    ref = _cycle()
    alive = ref()
    keeper.settle()  # the cycle is alive, so it is frozen
    del alive  # now it is garbage, but frozen garbage
    keeper.sweep(full=False)
    assert ref() is not None, "frozen objects are not walked by an ordinary sweep"
    keeper.sweep(full=True)
    assert ref() is None
    assert keeper.full_sweeps == 2  # start() runs one


def test_stop_hands_frozen_garbage_back_to_the_collector(keeper: HeapKeeper) -> None:
    keeper.start()
    ref = _cycle()
    alive = ref()
    keeper.settle()
    del alive
    keeper.stop()
    gc.collect()
    assert ref() is None


async def test_started_in_a_loop_it_sweeps_on_its_own() -> None:
    heap = HeapKeeper(sweep_s=0.02, full_s=0.05)
    try:
        heap.start()
        ref = _cycle()
        # Sweeps run on the loop's timers; a loaded machine delays them, so wait with a deadline.
        deadline = asyncio.get_running_loop().time() + timeout(5.0)
        while (heap.sweeps < 3 or heap.full_sweeps < 2 or ref() is not None) and (
            asyncio.get_running_loop().time() < deadline
        ):
            await asyncio.sleep(0.02)
        assert heap.sweeps >= 3
        assert heap.full_sweeps >= 2
        assert ref() is None
    finally:
        heap.stop()


@pytest.mark.parametrize(("sweep_s", "full_s"), [(0, 10), (-1, 10), (10, 5)])
def test_a_schedule_that_cannot_work_is_refused(sweep_s: float, full_s: float) -> None:
    with pytest.raises(ValueError, match="sweep_s"):
        HeapKeeper(sweep_s=sweep_s, full_s=full_s)
