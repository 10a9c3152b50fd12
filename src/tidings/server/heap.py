"""Keep the cyclic garbage collector out of the fan-out path of a process holding many connections.

Each open WebSocket costs about a hundred objects the cyclic collector tracks (coroutines,
futures, handles, buffers), so at 10,000 connections a full collection walks a million objects
and stops the event loop for 0.3–1.5 s on this class of machine. CPython starts one whenever the
objects that survived two young collections grow by a quarter, which is exactly what a burst of
acknowledgements or receipts after a large fan-out does: the pause then lands on the devices'
latency.

:class:`HeapKeeper` takes full collections off CPython's schedule and onto its own:

* the young generation is collected after :data:`YOUNG_THRESHOLD` allocations instead of 700, so
  the short-lived objects of a burst (a request waiting for its group commit) die before they are
  promoted;
* every ``sweep_s`` it collects what was promoted since the last sweep and then *freezes* the
  survivors (``gc.freeze``), so long-lived connection state is never walked again;
* every ``full_s`` it unfreezes and runs one true full collection, which reclaims reference
  cycles among objects that were frozen and have since died (closed connections).

Reference counting still frees everything acyclic at once; only cyclic garbage waits for a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Literal

__all__ = [
    "DEFAULT_FULL_S",
    "DEFAULT_SWEEP_S",
    "YOUNG_THRESHOLD",
    "HeapKeeper",
    "next_sweep",
]

YOUNG_THRESHOLD = 20_000
"""Allocations between young collections (CPython's default is 700)."""

DEFAULT_SWEEP_S = 30.0
"""Seconds between sweeps that collect and freeze what survived since the last one."""

DEFAULT_FULL_S = 600.0
"""Seconds between full collections that also look at frozen objects."""

_NEVER = 1_000_000_000  # gen-2 threshold: CPython never starts a full collection by itself

Sweep = Literal["sweep", "full"]


def next_sweep(now: float, last_full: float, full_s: float) -> Sweep:
    """Which collection a sweep at ``now`` runs: ``full`` once ``full_s`` passed since the last."""
    return "full" if now - last_full >= full_s else "sweep"


class HeapKeeper:
    """Owns this process's collector schedule while started (one per process)."""

    def __init__(self, *, sweep_s: float = DEFAULT_SWEEP_S, full_s: float = DEFAULT_FULL_S) -> None:
        if sweep_s <= 0 or full_s < sweep_s:
            raise ValueError("sweep_s must be > 0 and full_s >= sweep_s")
        self.sweep_s = sweep_s
        self.full_s = full_s
        self.sweeps = 0
        self.full_sweeps = 0
        self.last_pause_s = 0.0
        self._saved: tuple[int, int, int] | None = None
        self._last_full = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take over the schedule and freeze what exists now (start-up state lives on)."""
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, 10, _NEVER)
        self.sweep(full=True)
        with contextlib.suppress(RuntimeError):  # no loop: the caller sweeps by hand
            self._task = asyncio.get_running_loop().create_task(self._run())

    def settle(self) -> None:
        """A long-lived population was just built (a connect ramp): freeze it now."""
        self.sweep(full=False)

    def sweep(self, *, full: bool) -> None:
        """Collect (everything when ``full``) and freeze the survivors."""
        t0 = time.perf_counter()
        if full:
            gc.unfreeze()
            self._last_full = time.monotonic()
            self.full_sweeps += 1
        gc.collect()
        gc.freeze()
        self.sweeps += 1
        self.last_pause_s = time.perf_counter() - t0

    def stop(self) -> None:
        """Give the schedule back to CPython; frozen objects become collectable again."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._saved is not None:
            gc.unfreeze()
            gc.set_threshold(*self._saved)
            self._saved = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_s)
            kind = next_sweep(time.monotonic(), self._last_full, self.full_s)
            self.sweep(full=kind == "full")
