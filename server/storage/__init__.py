"""Storage: the :class:`Store` interface and its SQLite implementation."""

from __future__ import annotations

from tidings.server.storage.rows import (
    CampaignRow,
    DecisionRow,
    DeviceRow,
    EventRow,
    Outcome,
    OutMessage,
    PendingDelivery,
    PendingSend,
    ProfileRow,
    SendRow,
    UserRow,
)
from tidings.server.storage.store import SqliteStore, Store, anonymous_key

__all__ = [
    "CampaignRow",
    "DecisionRow",
    "DeviceRow",
    "EventRow",
    "OutMessage",
    "Outcome",
    "PendingDelivery",
    "PendingSend",
    "ProfileRow",
    "SendRow",
    "SqliteStore",
    "Store",
    "UserRow",
    "anonymous_key",
]
