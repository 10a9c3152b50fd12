"""The simulated clock bar: date and time of the simulation, its speed, and the speed keys.

One line under the header of every screen. The chips (pause, 1×, 60×, 3600×) show their key
and can be clicked; the one in force has the ``-active`` class, and the bar has ``-paused``,
``-running`` or ``-unknown`` (before the gateway told its time).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Click
from textual.widgets import Static

__all__ = ["SPEED_CHOICES", "ClockBar", "clock_text", "speed_label"]

SPEED_CHOICES: tuple[tuple[str, float | None, str], ...] = (
    ("pause", None, "f7"),
    ("1×", 1.0, "f8"),
    ("60×", 60.0, "f9"),
    ("3600×", 3600.0, "f10"),
)
"""The chips: label, speed (None: pause or resume) and key."""


def speed_label(speed: float) -> str:
    """``60×``, ``3,600×``, ``0.5×``."""
    return f"{speed:,.0f}×" if speed >= 1 and speed == int(speed) else f"{speed:g}×"


def clock_text(now: float | None, speed: float, paused: bool, start: float | None = None) -> Text:
    """``▶ 60× · Thu 2026-01-01 08:00:00 UTC · day 1`` (``day`` counts from ``start``).

    The speed comes first: on a narrow terminal the end of the line is cut, never the speed.
    """
    out = Text()
    if now is None:
        out.append("simulated time: waiting for the gateway", style="dim italic")
        return out
    out.append("⏸ paused" if paused else f"▶ {speed_label(speed)}", style="bold")
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    out.append(moment.strftime(" · %a %Y-%m-%d %H:%M:%S UTC"), style="bold")
    if start is not None:
        day = int((now - start) // 86_400) + 1
        out.append(f" · day {max(day, 1)}", style="dim")
    return out


class _Chip(Static):
    """A speed choice: shows its key, and runs its action when clicked."""

    def __init__(self, label: str, key: str, action: str, *, id: str) -> None:
        super().__init__(f"{label} {key.upper()}", id=id, classes="clock-chip")
        self.action = action

    async def on_click(self, event: Click) -> None:
        event.stop()
        await self.app.run_action(self.action)


class ClockBar(Horizontal):
    """Simulated date and time with the speed controls (see the module docstring)."""

    def compose(self) -> ComposeResult:
        yield Static(clock_text(None, 1.0, False), id="clock-time")
        for label, speed, key in SPEED_CHOICES:
            action = "app.toggle_pause" if speed is None else f"app.set_speed({speed})"
            name = "pause" if speed is None else f"{speed:g}"
            yield _Chip(label, key, action, id=f"speed-{name}")

    def on_mount(self) -> None:
        # The app's ``clock`` reactive (a ClockState, or None) and ``sim_start`` drive the bar.
        if hasattr(self.app, "clock"):
            self.watch(self.app, "clock", self._clock_changed)

    def _clock_changed(self, state: Any) -> None:
        if state is None:
            self.show(None, 1.0, False, None)
        else:
            self.show(state.now, state.speed, state.paused, getattr(self.app, "sim_start", None))

    @property
    def text(self) -> str:
        """The date, time and speed shown, as plain text."""
        return str(self.query_one("#clock-time", Static).content)

    def show(self, now: float | None, speed: float, paused: bool, start: float | None) -> None:
        """Show the clock ``now`` (simulated unix time; None: not known yet)."""
        self.query_one("#clock-time", Static).update(clock_text(now, speed, paused, start))
        for chip in self.query(_Chip):
            active = (
                paused
                if chip.id == "speed-pause"
                else not paused and chip.id == (f"speed-{speed:g}")
            )
            chip.set_class(active, "-active")
        self.set_class(now is None, "-unknown")
        self.set_class(now is not None and paused, "-paused")
        self.set_class(now is not None and not paused, "-running")
