"""What every simulator screen shares: a typed handle on the app and its engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from textual.screen import Screen

from tidings.simulator.engine.sim import SimEngine

__all__ = ["SimHost", "SimScreen"]


class SimHost(Protocol):
    """What the screens need of the app that shows them (:class:`~tidings.simulator.app.SimApp`,
    which imports the screens: they do not import it back). Its reactives (``snapshot``,
    ``status``, ``selected_campaign``) are watched on ``self.app``."""

    engine: SimEngine
    running: bool
    """Every device is connected and the engine samples."""
    selected_campaign: str | None
    """The campaign picked on the campaigns screen, for the others to follow."""
    events_per_s: float | None
    deliveries_per_s: float
    latency_history: list[float]
    delivery_history: list[float]
    distribution_days: list[tuple[str, dict[str, dict[str, int]]]]
    """The latest lifecycle/tier distribution of each simulated day, oldest first."""


class SimScreen(Screen[None]):
    """A screen of a :class:`SimHost` app."""

    @property
    def sim(self) -> SimHost:
        """The app, typed."""
        return cast(SimHost, self.app)

    @property
    def engine(self) -> SimEngine:
        """The engine the app samples (its methods block: call them from thread workers)."""
        return self.sim.engine

    def deliver(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """From a worker thread: run ``callback(*args, **kwargs)`` on the UI thread if attached.

        A screen may be dismissed, or the app closed, while an admin call is in flight; the
        answer is then dropped instead of touching widgets that are gone.
        """

        def guarded() -> None:
            if self.is_attached:
                callback(*args, **kwargs)

        with contextlib.suppress(RuntimeError):  # the app is no longer running
            self.app.call_from_thread(guarded)
