"""Storage: the :class:`Store` interface and its SQLite implementation."""

from __future__ import annotations

from tidings.server.storage.rows import (
    CampaignRow,
    Committed,
    DecisionRow,
    DeviceRow,
    EventRow,
    Limit,
    Outcome,
    OutMessage,
    PendingDelivery,
    PendingSend,
    ProfileRow,
    Refusal,
    SendRow,
    UserRow,
)
from tidings.server.storage.store import SqliteStore, Store, anonymous_key

__all__ = [
    "CampaignRow",
    "Committed",
    "DecisionRow",
    "DeviceRow",
    "EventRow",
    "Limit",
    "OutMessage",
    "Outcome",
    "PendingDelivery",
    "PendingSend",
    "ProfileRow",
    "Refusal",
    "SendRow",
    "SqliteStore",
    "Store",
    "UserRow",
    "anonymous_key",
]
