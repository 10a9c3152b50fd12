"""Storage: the :class:`Store` interface and its SQLite implementation."""

from __future__ import annotations

from tidings.server.storage.rows import DeviceRow, PendingDelivery, UserRow
from tidings.server.storage.store import SqliteStore, Store, anonymous_key

__all__ = ["DeviceRow", "PendingDelivery", "SqliteStore", "Store", "UserRow", "anonymous_key"]
