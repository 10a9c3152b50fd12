"""Domain rows the store returns: frozen dataclasses, no SQL types leak out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeviceRow", "PendingDelivery", "ProfileRow", "UserRow"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRow:
    """A device as the gateway knows it."""

    app: str
    device_id: str
    user_id: str | None
    platform: str = ""
    app_version: str = ""
    locale: str = ""
    tz: str = ""
    sdk_version: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    last_seq: int = 0
    acked_seq: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingDelivery:
    """A queued delivery to resend: its sequence number and the encoded message."""

    seq: int
    message_id: str
    wire: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRow:
    """A profile: a user, or an anonymous device (key ``~device``)."""

    app: str
    user_key: str
    attrs: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    inbox_ver: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileRow:
    """What the store knows for targeting: attributes, consent, device facts, purchases."""

    user_key: str
    attrs: dict[str, Any]
    consent: dict[str, bool]
    first_seen: float
    last_seen: float
    platform: str = ""
    app_version: str = ""
    locale: str = ""
    tz: str = ""
    purchase_count: int = 0
    purchase_total: float = 0.0
    last_purchase: float | None = None
