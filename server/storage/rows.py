"""Domain rows the store returns: frozen dataclasses, no SQL types leak out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    "UserRow",
]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRow:
    """One stored behaviour event (``ts`` in unix seconds)."""

    user_key: str
    name: str
    props: dict[str, Any]
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignRow:
    """A stored campaign: its JSON definition and its running state."""

    app: str
    id: str
    spec: dict[str, Any]
    status: str
    sent_total: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRow:
    """A message sent to one user (caps count these; stats read them)."""

    user_key: str
    at: float
    category: str
    message_id: str
    campaign: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRow:
    """One entry of the decision log: why a user did or did not get a campaign's message."""

    campaign: str
    user_key: str
    at: float
    reason: str
    detail: str = ""
    variant: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSend:
    """Durable future work: a user's delayed or scheduled message, or a campaign run."""

    app: str
    campaign: str
    user_key: str | None
    due_at: float
    event: dict[str, Any] | None = None
    id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class OutMessage:
    """A message ready to store: its wire form and the (device, seq) deliveries."""

    message_id: str
    fields: dict[str, Any]
    wire: bytes
    deliveries: tuple[tuple[str, int], ...]
    collapse_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a send decided besides its messages; stored with them in one write."""

    sends: Sequence[SendRow] = ()
    decisions: Sequence[DecisionRow] = ()
    done_pending: Sequence[int] = ()
    new_pending: Sequence[PendingSend] = ()
    campaign_sent: tuple[str, int] | None = None  # (campaign, messages added to its total)
