"""What every simulator screen shares: a typed handle on the app and its engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from tidings.simulator.app import SimApp
    from tidings.simulator.engine.sim import SimEngine

__all__ = ["SimScreen"]


class SimScreen(Screen[None]):
    """A screen of :class:`~tidings.simulator.app.SimApp`."""

    @property
    def sim(self) -> SimApp:
        """The app, typed."""
        return cast("SimApp", self.app)

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
