"""Storage: the :class:`Store` role protocols and the SQLite implementation."""

from __future__ import annotations

from tidings.server.storage.protocols import (
    AnalyticsStore,
    CampaignStore,
    DeliveryStore,
    PrivacyStore,
    ProfileStore,
    RequestStore,
    Store,
)
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
    RequestRow,
    SendRow,
    UserRow,
)
from tidings.server.storage.store import SqliteStore, anonymous_key

__all__ = [
    "AnalyticsStore",
    "CampaignRow",
    "CampaignStore",
    "Committed",
    "DecisionRow",
    "DeliveryStore",
    "DeviceRow",
    "EventRow",
    "Limit",
    "OutMessage",
    "Outcome",
    "PendingDelivery",
    "PendingSend",
    "PrivacyStore",
    "ProfileRow",
    "ProfileStore",
    "Refusal",
    "RequestRow",
    "RequestStore",
    "SendRow",
    "SqliteStore",
    "Store",
    "UserRow",
    "anonymous_key",
]
