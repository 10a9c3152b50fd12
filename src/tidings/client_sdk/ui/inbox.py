"""The inbox list: a client's inbox, newest first, with read/unread, delete and open."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tidings.client_sdk.inbox import InboxItem

if TYPE_CHECKING:
    from tidings.client_sdk.client import TidingsClient

__all__ = ["InboxList", "inbox_line"]

_EMPTY = "(empty)"


def inbox_line(item: InboxItem) -> Text:
    """One inbox item on one line: ``●`` marks it unread, then title, body and category; a
    banner held for quiet hours or caps says so."""
    unread = not item.read
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("● " if unread else "  ", style="bold" if unread else "")
    out.append(item.title, style="bold" if unread else "")
    if item.body:
        out.append("  ")
        out.append(item.body)
    out.append(f"  [{item.category}]", style="dim")
    if item.held:
        out.append("  held until quiet hours end", style="italic")
    return out


class InboxList(OptionList):
    """A device's inbox as its SDK holds it; follows the client's changes live.

    Bound to a client (``InboxList(client)`` or :meth:`bind`), the keys act on the highlighted
    item through the SDK, so the change reaches the user's other devices: ``r`` toggles read and
    unread, ``d`` (or ``delete``) deletes, ``enter`` opens it (a click receipt, and read). The
    list redraws once per burst of changes, whatever their number.

    Without a client (:meth:`show_items`) it only shows what it is given, for example an inbox
    that lives in another process: ``r`` and ``d`` are then left to the screen, and ``enter``
    only posts :class:`InboxList.Opened`.

    The border title counts items and unread ones; the ``-unread`` CSS class is set while any
    item is unread.
    """

    DEFAULT_CSS = """
    InboxList {
        height: 1fr;
        border: round $primary;
        padding: 0 1;
    }
    InboxList.-unread {
        border: round $accent;
    }
    InboxList:focus {
        border: tall $border;
    }
    InboxList.-unread:focus {
        border: tall $accent;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "toggle_read", "Read/unread"),
        Binding("d,delete", "delete", "Delete"),
    ]

    class Opened(Message):
        """The user opened an inbox item (after its click receipt was queued, with a client)."""

        def __init__(self, inbox: InboxList, item: InboxItem) -> None:
            super().__init__()
            self.inbox = inbox
            self.item = item

        @property
        def control(self) -> InboxList:
            return self.inbox

    def __init__(
        self,
        client: TidingsClient | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.client: TidingsClient | None = None
        self._items: list[InboxItem] = []
        self._pending = False
        self.border_title = "Inbox · loading…"
        if client is not None:
            self.bind(client)

    # --- what is shown ------------------------------------------------------------------------

    @property
    def items(self) -> list[InboxItem]:
        """The items shown, newest first."""
        return list(self._items)

    @property
    def unread_count(self) -> int:
        """How many of the items shown are unread."""
        return sum(1 for i in self._items if not i.read)

    def lines(self) -> list[str]:
        """The rows as plain text, top to bottom (``["(empty)"]`` for an empty inbox)."""
        return [inbox_line(i).plain for i in self._items] or [_EMPTY]

    def bind(self, client: TidingsClient) -> None:
        """Show ``client``'s inbox from now on and follow its changes."""
        self.client = client
        client.on_inbox_change(lambda: self._changed(client))
        if self.is_mounted:
            self.show_items(client.inbox.items())

    def on_mount(self) -> None:
        if self.client is not None:
            self.show_items(self.client.inbox.items())

    def _changed(self, client: TidingsClient) -> None:
        if client is not self.client or self._pending or not self.is_attached:
            return
        self._pending = True  # one redraw for a burst of changes (a sync brings many)
        self.call_after_refresh(self._redraw)

    def _redraw(self) -> None:
        self._pending = False
        if self.client is not None and self.is_attached:
            self.show_items(self.client.inbox.items())

    def show_items(self, items: Sequence[InboxItem]) -> None:
        """Show ``items`` (newest first), keeping the highlight on the same item if it stays."""
        keep = self._highlighted_item()
        self._items = list(items)
        self.clear_options()
        if self._items:
            self.add_options(Option(inbox_line(i), id=i.id) for i in self._items)
            ids = [i.id for i in self._items]
            self.highlighted = ids.index(keep.id) if keep and keep.id in ids else 0
        else:
            self.add_option(Option(Text(_EMPTY, style="dim"), disabled=True))
        unread = self.unread_count
        noun = "item" if len(self._items) == 1 else "items"
        self.border_title = f"Inbox · {len(self._items)} {noun} · {unread} unread"
        self.set_class(unread > 0, "-unread")

    def _highlighted_item(self) -> InboxItem | None:
        index = self.highlighted
        if index is None or not 0 <= index < len(self._items):
            return None
        return self._items[index]

    # --- acting on the highlighted item -------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read/unread and delete need a client; without one their keys go to the screen."""
        return self.client is not None or action not in ("toggle_read", "delete")

    async def action_toggle_read(self) -> None:
        """Mark the highlighted item read, or unread if it was read."""
        item = self._highlighted_item()
        if item is not None and self.client is not None:
            if item.read:
                await self.client.inbox.mark_unread(item.id)
            else:
                await self.client.inbox.mark_read(item.id)

    async def action_delete(self) -> None:
        """Delete the highlighted item (on the user's other devices too)."""
        item = self._highlighted_item()
        if item is not None and self.client is not None:
            await self.client.inbox.delete(item.id)

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        item = self._highlighted_item()
        if item is None:
            return
        if self.client is not None:
            await self.client.click(item.id)
        self.post_message(self.Opened(self, item))
