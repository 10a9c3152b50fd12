"""Calls made together, run together: a group commit for any call that takes a list.

The change feed's writes, a storm's route claims and its device upserts each cost one round
trip whether they carry one item or a thousand. :class:`Batches` gathers the calls made while
the previous batch is on its way and runs them as the next one, in the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batches"]

T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """``await batches(item)`` runs ``call`` on a list of the items asked for together and
    returns this item's result (``call`` returns one per item, in order).

    One batch runs at a time; the next holds what was asked meanwhile (at most ``limit``). If
    ``call`` raises, every caller of that batch gets the exception.
    """

    def __init__(
        self, call: Callable[[list[T]], Awaitable[Sequence[R]]], *, limit: int | None = None
    ) -> None:
        self._call = call
        self._limit = limit
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await done

    async def _run(self) -> None:
        await asyncio.sleep(0)  # what the other tasks ask now joins the first batch
        while self._queue:
            n = self._limit or len(self._queue)
            batch, self._queue = self._queue[:n], self._queue[n:]
            try:
                results = await self._call([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, done in batch + self._queue:  # stopped: nobody waits forever
                    done.cancel()
                self._queue = []
                raise
            except Exception as exc:
                for _, done in batch:
                    if not done.done():  # its caller may have given up meanwhile
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)

    async def drain(self) -> None:
        """Wait for what was asked so far to be run."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    def cancel(self) -> None:
        """Stop running batches; callers still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
        for _, done in self._queue:
            done.cancel()
        self._queue = []
