"""Storage: the :class:`Store` interface and its SQLite implementation."""

from __future__ import annotations

from tidings.server.storage.rows import DeviceRow, PendingDelivery, ProfileRow, UserRow
from tidings.server.storage.store import SqliteStore, Store, anonymous_key

__all__ = [
    "DeviceRow",
    "PendingDelivery",
    "ProfileRow",
    "SqliteStore",
    "Store",
    "UserRow",
    "anonymous_key",
]
