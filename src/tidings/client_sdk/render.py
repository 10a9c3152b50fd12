"""Renderers: print banners and the inbox in a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from tidings.client_sdk.inbox import InboxItem

if TYPE_CHECKING:
    from tidings.client_sdk.client import TidingsClient

__all__ = ["TerminalRenderer"]


class TerminalRenderer:
    """Shows banners as boxed toasts and reprints the inbox when it changes."""

    def __init__(self, stream: TextIO | None = None, width: int = 60) -> None:
        self.stream = stream or sys.stdout
        self.width = width
        self._client: TidingsClient | None = None

    def attach(self, client: TidingsClient) -> None:
        """Render ``client``'s banners and inbox from now on."""
        self._client = client
        client.on_banner(self.show_banner)
        client.on_inbox_change(lambda: self.show_inbox(client.inbox.items()))

    def show_banner(self, item: InboxItem) -> None:
        """Print one banner."""
        w = self.width
        tag = " URGENT" if item.priority == "urgent" else ""
        lines = [
            f"+{'-' * (w - 2)}+",
            f"| {('BANNER' + tag):<{w - 4}} |",
            f"| {item.title[: w - 4]:<{w - 4}} |",
            f"| {item.body[: w - 4]:<{w - 4}} |",
        ]
        for action in item.actions:
            lines.append(f"| {('[' + action.label + ']')[: w - 4]:<{w - 4}} |")
        lines.append(f"+{'-' * (w - 2)}+")
        print("\n".join(lines), file=self.stream, flush=True)

    def show_inbox(self, items: list[InboxItem]) -> None:
        """Print the inbox, newest first."""
        unread = sum(1 for i in items if not i.read)
        print(f"Inbox ({len(items)} items, {unread} unread)", file=self.stream)
        for i in items[:10]:
            mark = " " if i.read else "*"
            print(f"  {mark} {i.title[:30]:<30}  {i.body[:40]}", file=self.stream)
        self.stream.flush()
