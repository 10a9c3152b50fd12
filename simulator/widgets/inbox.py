"""The inbox of one device, rendered from what its SDK holds (newest first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import Static

__all__ = ["InboxView", "inbox_text"]

MAX_SHOWN = 50
"""Items rendered; an SDK inbox holds up to 200."""


def inbox_text(items: Sequence[Mapping[str, Any]]) -> Text:
    """Newest first: ``●`` marks unread, held banners and the category are tagged."""
    if not items:
        return Text("(empty)", style="dim")
    out = Text()
    for item in items[:MAX_SHOWN]:
        unread = not item.get("read", False)
        out.append("● " if unread else "  ", style="bold" if unread else "")
        out.append(str(item.get("title", "")), style="bold" if unread else "")
        out.append("  ")
        out.append(str(item.get("body", "")))
        out.append(f"  [{item.get('category', 'marketing')}]", style="dim")
        if item.get("held"):
            out.append("  held until quiet hours end", style="italic")
        out.append("\n")
    if len(items) > MAX_SHOWN:
        out.append(f"… and {len(items) - MAX_SHOWN} older\n", style="dim")
    out.rstrip()
    return out


class InboxView(Static):
    """A device's inbox with a title counting items and unread ones."""

    def show(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Render ``items`` (newest first, as ``SimEngine.inbox`` returns them)."""
        unread = sum(1 for i in items if not i.get("read", False))
        noun = "item" if len(items) == 1 else "items"
        self.border_title = f"Inbox · {len(items)} {noun} · {unread} unread"
        self.set_class(unread > 0, "-unread")
        self.update(inbox_text(items))
