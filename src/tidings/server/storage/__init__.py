"""Storage: the :class:`Store` role protocols, the SQLite store and the PostgreSQL store.

:class:`PostgresStore` is imported on first use: its driver, ``asyncpg``, is the optional
``cluster`` extra, and SQLite users should not pay for importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.server.storage.protocols import (
    AnalyticsStore,
    AudienceStore,
    CampaignStore,
    DeliveryStore,
    FeedStore,
    IngestStore,
    PrivacyStore,
    ProfileStore,
    ReachableStore,
    RequestStore,
    Store,
)
from tidings.server.storage.rows import (
    CampaignRow,
    Committed,
    DecisionRow,
    DeviceRow,
    EventRow,
    FateRow,
    Limit,
    Outcome,
    OutMessage,
    PendingDelivery,
    PendingSend,
    ProfileRow,
    Progress,
    Refusal,
    RequestRow,
    ResumeState,
    SendRow,
    SessionCheck,
    UserRow,
    anonymous_key,
)
from tidings.server.storage.store import SqliteStore

if TYPE_CHECKING:
    from tidings.server.storage.postgres import PostgresStore

__all__ = [
    "AnalyticsStore",
    "AudienceStore",
    "CampaignRow",
    "CampaignStore",
    "Committed",
    "DecisionRow",
    "DeliveryStore",
    "DeviceRow",
    "EventRow",
    "FateRow",
    "FeedStore",
    "IngestStore",
    "Limit",
    "OutMessage",
    "Outcome",
    "PendingDelivery",
    "PendingSend",
    "PostgresStore",
    "PrivacyStore",
    "ProfileRow",
    "ProfileStore",
    "Progress",
    "ReachableStore",
    "Refusal",
    "RequestRow",
    "RequestStore",
    "ResumeState",
    "SendRow",
    "SessionCheck",
    "SqliteStore",
    "Store",
    "UserRow",
    "anonymous_key",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from tidings.server.storage.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
