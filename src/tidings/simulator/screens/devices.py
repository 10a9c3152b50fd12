"""The device browser: every simulated device in one list, filtered by a search box.

The filter runs in Python over plain tuples and hands the matching indexes to one
:class:`~tidings.simulator.widgets.DeviceList`, which draws only the lines on screen: no
widget per row, no per-row measuring, so it stays responsive with thousands of devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static

from tidings.simulator.screens.base import SimScreen
from tidings.simulator.screens.device import DeviceScreen
from tidings.simulator.widgets import ClockBar, DeviceList
from tidings.simulator.widgets.device_list import Row

__all__ = ["FILTER_DELAY_S", "DevicesScreen", "matches"]

FILTER_DELAY_S = 0.15
"""Typing pause before the table is filtered again (one repopulation per burst of keys)."""


def matches(rows: Sequence[Row], query: str) -> list[int]:
    """Indexes of the rows whose device id, user id or persona contains ``query``.

    Case-insensitive; exact device or user ids come first, so ``d1`` finds d1 before d10.
    """
    q = query.strip().lower()
    if not q:
        return list(range(len(rows)))
    exact = [i for i, r in enumerate(rows) if q in (r[0], r[1])]
    seen = set(exact)
    rest = [
        i
        for i, (device, user, persona, _) in enumerate(rows)
        if i not in seen and (q in device or q in user or q in persona.lower())
    ]
    return exact + rest


class DevicesScreen(SimScreen):
    """Search and pick a device; Enter opens its device view."""

    AUTO_FOCUS = "#devices"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", "Search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.shown: list[int] = []
        self._filter_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield ClockBar(id="clock")
        with Horizontal(id="search-bar"):
            yield Input(placeholder="search: device id, user id or persona  (/)", id="search")
            yield Static("", id="match-count")
        yield DeviceList(id="devices")
        yield Footer()

    def on_mount(self) -> None:
        self.rows = self.engine.device_rows()
        self.apply_filter("")

    def apply_filter(self, query: str) -> None:
        """Show only the devices matching ``query`` (see :func:`matches`)."""
        self.shown = matches(self.rows, query)
        self.query_one("#devices", DeviceList).show(self.rows, self.shown)
        count = self.query_one("#match-count", Static)
        count.update(f"{len(self.shown):,} of {len(self.rows):,} devices")
        count.set_class(not self.shown, "-none")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "search":
            return
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value
        self._filter_timer = self.set_timer(FILTER_DELAY_S, lambda: self.apply_filter(value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search":
            if self._filter_timer is not None:
                self._filter_timer.stop()
            self.apply_filter(event.value)
            self.query_one("#devices", DeviceList).focus()

    def on_device_list_selected(self, event: DeviceList.Selected) -> None:
        self.open_device(event.index)

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def open_device(self, index: int) -> None:
        """Push the device view of device ``index``."""
        self.app.push_screen(DeviceScreen(index))
