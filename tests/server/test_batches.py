"""Calls made together run together, in order; a failure reaches every caller of its batch."""

from __future__ import annotations

import asyncio

import pytest

from tidings.server.batches import Batches


async def test_calls_made_together_share_a_batch_in_order_and_each_gets_its_result() -> None:
    seen: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        seen.append(items)
        await asyncio.sleep(0.01)
        return [2 * i for i in items]

    batches: Batches[int, int] = Batches(double, limit=3)
    assert await asyncio.gather(*(batches(i) for i in range(5))) == [0, 2, 4, 6, 8]
    assert seen == [[0, 1, 2], [3, 4]]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    async def fail_once(items: list[str]) -> list[str]:
        if items == ["a", "b"]:
            raise ValueError("disk full")
        return items

    batches: Batches[str, str] = Batches(fail_once)
    first = await asyncio.gather(batches("a"), batches("b"), return_exceptions=True)
    assert [type(r) for r in first] == [ValueError, ValueError]
    assert await batches("c") == "c"


async def test_cancel_leaves_no_caller_waiting() -> None:
    async def never(items: list[int]) -> list[int]:
        await asyncio.Event().wait()
        return items

    batches: Batches[int, int] = Batches(never)
    calls = [asyncio.ensure_future(batches(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    batches.cancel()
    for call in calls:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 1)
