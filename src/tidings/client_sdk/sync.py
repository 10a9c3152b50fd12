"""A thread-backed synchronous wrapper for apps without an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from tidings.client_sdk.client import TidingsClient
from tidings.client_sdk.inbox import InboxItem

__all__ = ["SyncTidingsClient"]

T = TypeVar("T")


class SyncTidingsClient:
    """Runs a :class:`TidingsClient` on a background thread; every method blocks.

    Callbacks registered with ``on_banner``/``on_modal``/``on_inbox_change``/``on_error`` run on
    that thread.
    Takes the same arguments as :class:`TidingsClient`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="tidings-sync")  # fmt: skip
        self._thread.start()
        self.client: TidingsClient = self._call(_make(args, kwargs))

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def on_banner(self, callback: Any) -> None:
        self.client.on_banner(callback)

    def on_modal(self, callback: Any) -> None:
        self.client.on_modal(callback)

    def on_inbox_change(self, callback: Any) -> None:
        self.client.on_inbox_change(callback)

    def on_error(self, callback: Any) -> None:
        """See :meth:`TidingsClient.on_error`: requests refused for good, or the device."""
        self.client.on_error(callback)

    def start(self, wait: float | None = 10) -> None:
        """Start and (unless ``wait`` is None) wait until connected."""
        self._call(self.client.start())
        if wait is not None:
            self._call(self.client.wait_connected(wait), timeout=wait + 1)

    def track(self, name: str, props: dict[str, Any] | None = None) -> None:
        self._loop.call_soon_threadsafe(self.client.track, name, props)

    def identify(self, user: str | None, attrs: dict[str, Any] | None = None) -> None:
        self._call(self.client.identify(user, attrs))

    def set_preferences(
        self, *, marketing: bool | None = None, categories: Mapping[str, bool] | None = None
    ) -> None:
        self._call(self.client.set_preferences(marketing=marketing, categories=categories))

    def click(self, item_id: str, action: str | None = None) -> None:
        self._call(self.client.click(item_id, action))

    def dismiss(self, item_id: str) -> None:
        self._call(self.client.dismiss(item_id))

    def mark_read(self, item_id: str) -> None:
        self._call(self.client.inbox.mark_read(item_id))

    def inbox_items(self) -> list[InboxItem]:
        async def items() -> list[InboxItem]:
            return self.client.inbox.items()

        return self._call(items())

    def close(self) -> None:
        """Close the client and stop the thread."""
        try:
            self._call(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> SyncTidingsClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> TidingsClient:
    return TidingsClient(*args, **kwargs)
