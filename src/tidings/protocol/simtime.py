"""Simulated time, pure: a clock that runs ``speed`` times faster than real time.

Sans-I/O (no asyncio): the gateway's scheduler and the SDK's :class:`~tidings.client_sdk.SimClock`
both build their waits on it. One gateway runs a :class:`SimTime` (``clock = "simulated"``,
development apps only); simulated devices in other processes follow it from a
:class:`ClockState` (simulated time, speed, paused, and the real time it was read at), which
pins the simulated time exactly on one machine, where every process shares the real clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_SPEED", "ClockState", "SimTime", "check_speed"]


MAX_SPEED = 1_000_000.0
"""Fastest a :class:`SimTime` may run (simulated seconds per real second)."""


@dataclass(frozen=True, slots=True)
class ClockState:
    """What a clock reads: simulated unix time ``now``, its ``speed`` and whether it is paused.

    ``real`` is the real (wall-clock) unix time at which ``now`` was read: another process on
    the same machine follows the clock exactly from these four numbers
    (:meth:`SimTime.follow`).
    """

    now: float
    speed: float
    paused: bool
    real: float = 0.0


def check_speed(speed: object) -> float:
    """``speed`` as a float, or ValueError naming the allowed range."""
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise ValueError(f"speed: must be a number, got {speed!r}")
    if not 0 < speed <= MAX_SPEED or speed != speed:
        raise ValueError(f"speed: must be above 0 and at most {MAX_SPEED:g}, got {speed!r}")
    return float(speed)


class SimTime:
    """Simulated time: ``speed`` simulated seconds per real second from an anchor.

    Pause, resume, change the speed or jump forward at any time; time never runs backwards.
    Whoever waits on it subscribes (:meth:`subscribe`) and re-plans its wait at every change
    (:meth:`real_seconds`). Pure apart from ``real``, the real-time source (inject a fake one
    to test without sleeping); :class:`tidings.client_sdk.SimClock` adds ``sleep``.

    Args:
        start: Simulated unix time at creation (default: the real time).
        speed: Simulated seconds per real second.
        paused: Start paused.
        real: Real unix time source (default :func:`time.time`: shared by every process of
            the machine, so clocks in several processes agree exactly).
    """

    def __init__(
        self,
        start: float | None = None,
        speed: float = 1.0,
        *,
        paused: bool = False,
        real: Callable[[], float] = time.time,
    ) -> None:
        self._real = real
        self._anchor_real = real()
        self._anchor_sim = self._anchor_real if start is None else float(start)
        self._speed = check_speed(speed)
        self._paused = paused
        self._floor = self._anchor_sim  # the latest time read: never go below it
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Simulated unix seconds."""
        return self._at(self._real())

    def _at(self, real: float) -> float:
        t = self._anchor_sim
        if not self._paused:
            t += (real - self._anchor_real) * self._speed
        if t < self._floor:
            return self._floor
        self._floor = t
        return t

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def state(self) -> ClockState:
        """The clock now, with the real time it was read at."""
        real = self._real()  # one reading: ``now`` is the time at exactly ``real``
        return ClockState(self._at(real), self._speed, self._paused, real)

    def real_seconds(self, sim_seconds: float) -> float:
        """Real seconds until ``sim_seconds`` of simulated time have passed (inf when paused)."""
        if sim_seconds <= 0:
            return 0.0
        return math.inf if self._paused else sim_seconds / self._speed

    def set(
        self, *, now: float | None = None, speed: float | None = None, paused: bool | None = None
    ) -> ClockState:
        """Change the clock; return its new state.

        Raises:
            ValueError: a bad speed, or ``now`` earlier than the clock (never backwards).
        """
        current = self.now()
        if now is not None:
            if isinstance(now, bool) or not isinstance(now, int | float) or now != now:
                raise ValueError(f"now: must be a unix time in seconds, got {now!r}")
            if now < current:
                raise ValueError(
                    f"now: {now:.3f} is before the clock ({current:.3f}); simulated time "
                    "never runs backwards"
                )
        new_speed = self._speed if speed is None else check_speed(speed)
        self._anchor_real = self._real()
        self._anchor_sim = self._floor = current if now is None else float(now)
        self._speed = new_speed
        if paused is not None:
            self._paused = bool(paused)
        self._changed()
        return self.state()

    def follow(self, state: ClockState) -> None:
        """Take another clock's reading (another process's); never moves backwards."""
        self._speed = check_speed(state.speed)
        self._paused = state.paused
        self._anchor_real = state.real
        self._anchor_sim = state.now
        self._changed()

    def pause(self) -> ClockState:
        return self.set(paused=True)

    def resume(self) -> ClockState:
        return self.set(paused=False)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments) after every change of speed, pause or time."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
