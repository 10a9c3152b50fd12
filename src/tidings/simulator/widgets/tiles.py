"""A metric tile: a caption over one big value, coloured by state through CSS classes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

__all__ = ["MetricTile"]

_STATES = ("-ok", "-warn", "-idle")


class MetricTile(Widget):
    """One number of the dashboard with its caption.

    The value's look follows the tile's state class: ``-ok``, ``-warn`` or ``-idle``.
    """

    def __init__(self, caption: str, *, id: str) -> None:
        super().__init__(id=id, classes="tile -idle")
        self.caption = caption

    def compose(self) -> ComposeResult:
        yield Static(self.caption, classes="tile-caption")
        yield Static("–", classes="tile-value")

    @property
    def value(self) -> str:
        """The text shown as the value."""
        return str(self.query_one(".tile-value", Static).content)

    def show(self, value: str, state: str = "-ok") -> None:
        """Show ``value`` in state ``state`` (one of ``-ok``, ``-warn``, ``-idle``)."""
        self.query_one(".tile-value", Static).update(value)
        for name in _STATES:
            self.set_class(name == state, name)
