"""A list of devices drawn line by line: only the rows on screen cost anything.

A ``DataTable`` measures every row it is given, which takes the better part of a second for
5,000 devices; this list keeps plain tuples and renders the visible lines on demand, so
filtering and scrolling stay instant at any fleet size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["COLUMNS", "DeviceList", "Row"]

Row = tuple[str, str, str, str]
"""(device, user, persona, time zone)."""

COLUMNS = (("device", 8), ("user", 8), ("persona", 16), ("time zone", 20))
"""Column titles and widths (characters, one space between columns)."""

_WIDTH = 1 + sum(w + 1 for _, w in COLUMNS)


def _cells(values: Sequence[str]) -> str:
    return " " + " ".join(f"{v[:w]:<{w}}" for v, (_, w) in zip(values, COLUMNS, strict=True))


class DeviceList(ScrollView, can_focus=True):
    """Devices with a header line, a row cursor, Enter or click to pick one."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "device-list--header",
        "device-list--cursor",
        "device-list--even",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "move(-1_000_000_000)", "First", show=False),
        Binding("end", "move(1_000_000_000)", "Last", show=False),
        Binding("enter", "select", "Open device"),
    ]

    cursor: reactive[int] = reactive(0)
    """Position of the highlighted row among the shown rows."""

    class Selected(Message):
        """A device was picked (Enter or click)."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: Sequence[Row] = ()
        self.shown: list[int] = []

    def show(self, rows: Sequence[Row], shown: list[int]) -> None:
        """Show ``rows[i]`` for each ``i`` in ``shown``, in that order; the cursor goes on top."""
        self.rows, self.shown = rows, shown
        self.virtual_size = Size(_WIDTH, len(shown) + 1)  # + the header line
        self.cursor = 0
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    @property
    def row_count(self) -> int:
        """Rows shown now."""
        return len(self.shown)

    @property
    def highlighted(self) -> int | None:
        """The device index under the cursor."""
        return self.shown[self.cursor] if self.shown else None

    def shown_rows(self) -> list[Row]:
        """The rows shown now, in order."""
        return [self.rows[i] for i in self.shown]

    def _page_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def validate_cursor(self, cursor: int) -> int:
        return max(0, min(cursor, len(self.shown) - 1))

    def watch_cursor(self, cursor: int) -> None:
        top = round(self.scroll_y)
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + self._page_rows():
            self.scroll_to(y=cursor - self._page_rows() + 1, animate=False)
        self.refresh()

    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, pages: int) -> None:
        self.cursor += pages * self._page_rows()

    def action_select(self) -> None:
        if self.highlighted is not None:
            self.post_message(self.Selected(self.highlighted))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        position = round(self.scroll_y) + offset.y - 1
        if 0 <= position < len(self.shown):
            # A click highlights; a click on the highlighted row (or a double click) opens it.
            opens = position == self.cursor or event.chain >= 2
            self.cursor = position
            if opens:
                self.action_select()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            header = self.get_component_rich_style("device-list--header")
            return Strip([Segment(_cells([t for t, _ in COLUMNS]).ljust(width), header)])
        position = round(self.scroll_y) + y - 1
        if position >= len(self.shown):
            return Strip([Segment(" " * width, self.rich_style)])
        style: Style = self.rich_style
        if position == self.cursor and self.has_focus:
            style = self.get_component_rich_style("device-list--cursor")
        elif position == self.cursor:
            style += self.get_component_rich_style("device-list--cursor", partial=True)
        elif position % 2:
            style += self.get_component_rich_style("device-list--even", partial=True)
        text = _cells(self.rows[self.shown[position]])
        return Strip([Segment(text.ljust(width)[:width], style)])

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
