"""What the server needs from storage, as role protocols a backend implements piece by piece.

:class:`Store` is all of them plus its lifecycle; :class:`~tidings.server.storage.SqliteStore`
is the embedded default. Each role is one concern of the data, and one part of the store
contract suite (``tests/server/storage``), which every implementation must pass:

- :class:`DeliveryStore`: devices, messages with their numbered deliveries, acks, receipts,
  revocation and the per-user inbox state; the commit that checks caps and budgets;
- :class:`ProfileStore`: events, attributes, consent and the profile rows targeting reads;
- :class:`CampaignStore`: campaign and tag rule definitions, status changes, claimed due work;
- :class:`AnalyticsStore`: the decision log, funnels, conversions, send history;
- :class:`PrivacyStore`: erasure and export of everything about one user;
- :class:`RequestStore`: admin requests made once under an idempotency key;
- :class:`FeedStore`: the change feed between the processes of a cluster.

Consumers take the roles they use: the gateway's sessions a :class:`DeliveryStore`, ingest an
:class:`IngestStore`, the targeting view an :class:`AudienceStore`, the feed a
:class:`FeedStore`, the store watch a :class:`ReachableStore`; the campaign engine, which
decides, sends and reports, takes the whole :class:`Store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tidings.protocol.frames import Event, InboxChange
from tidings.server.storage.rows import (
    CampaignRow,
    Committed,
    DecisionRow,
    DeviceRow,
    EventRow,
    FateRow,
    Outcome,
    OutMessage,
    PendingDelivery,
    PendingSend,
    ProfileRow,
    RequestRow,
    ResumeState,
    SendRow,
    SessionCheck,
    UserRow,
)

__all__ = [
    "AnalyticsStore",
    "AudienceStore",
    "CampaignStore",
    "DeliveryStore",
    "FeedStore",
    "IngestStore",
    "PrivacyStore",
    "ProfileStore",
    "ReachableStore",
    "RequestStore",
    "Store",
]


class DeliveryStore(Protocol):
    """Devices, messages and their deliveries, receipts and inbox state."""

    async def upsert_device(self, row: DeviceRow) -> DeviceRow: ...
    async def check_sessions(
        self, app: str, sessions: Sequence[tuple[str, int, int]]
    ) -> list[SessionCheck]: ...
    async def devices_of_users(self, app: str, users: Sequence[str]) -> list[tuple[str, str]]: ...
    async def known_devices(self, app: str, devices: Sequence[str]) -> list[tuple[str, str]]: ...
    async def devices_of_keys(
        self, app: str, user_keys: Sequence[str]
    ) -> list[tuple[str, str]]: ...
    async def commit(
        self, app: str, outcome: Outcome, messages: Sequence[OutMessage] = ()
    ) -> Committed: ...
    async def pending(
        self, app: str, device: str, after: int, now: float
    ) -> list[PendingDelivery]: ...
    async def fill_inbox(
        self, app: str, device: str, user_key: str, resume: int, now: float
    ) -> int: ...
    async def resume_state(
        self, app: str, device: str, user_key: str, after: int, inbox_ver: int, now: float
    ) -> ResumeState: ...
    async def ack(self, app: str, device: str, seq: int, now: float | None = None) -> None: ...
    async def ack_many(
        self, acks: Sequence[tuple[str, str, int]], now: float | None = None
    ) -> None: ...
    async def revoke(self, app: str, message_id: str) -> list[tuple[str, str]] | None: ...
    async def add_receipts(
        self, receipts: Sequence[tuple[str, str, str, str, str | None, float]]
    ) -> list[bool]: ...
    async def inbox_update(
        self,
        app: str,
        user_key: str,
        changes: Sequence[InboxChange],
        now: float | None = None,
    ) -> tuple[int, list[InboxChange]]: ...
    async def inbox_since(
        self, app: str, user_key: str, ver: int
    ) -> tuple[int, list[InboxChange]]: ...


class ProfileStore(Protocol):
    """What users did and said: events, attributes, consent; profile rows for targeting."""

    async def insert_events(
        self,
        app: str,
        device: str,
        user_key: str,
        events: Sequence[Event],
        now: float,
        *,
        registered: bool = False,
    ) -> None: ...
    async def count_events(self, app: str) -> int: ...
    async def events_since(
        self, app: str, since: float, *, name: str | None = None, user_key: str | None = None
    ) -> list[EventRow]: ...
    async def merge_attrs(
        self,
        app: str,
        user_key: str,
        attrs: dict[str, Any],
        now: float,
        *,
        device: str | None = None,
    ) -> None: ...
    async def set_consent(
        self,
        app: str,
        user_key: str,
        categories: dict[str, bool],
        now: float,
        *,
        device: str | None = None,
    ) -> None: ...
    async def opted_out(
        self, app: str, user_keys: Sequence[str], category: str = "marketing"
    ) -> set[str]: ...
    async def user(self, app: str, user_key: str) -> UserRow | None: ...
    async def profile_rows(
        self, app: str, *, value_event: str = "purchase", amount_prop: str = "amount"
    ) -> list[ProfileRow]: ...


class CampaignStore(Protocol):
    """Campaign and tag rule definitions, status changes made once, and claimed due work."""

    async def campaigns(self, app: str | None = None) -> list[CampaignRow]: ...
    async def save_campaign(
        self, app: str, cid: str, spec: dict[str, Any], status: str, now: float
    ) -> None: ...
    async def delete_campaign(self, app: str, cid: str) -> None: ...
    async def set_campaign_status(
        self,
        app: str,
        cid: str,
        status: str,
        now: float,
        expect: Sequence[str] = (),
        then: Sequence[PendingSend] = (),
    ) -> bool: ...
    async def tag_rules(self) -> list[tuple[str, dict[str, Any]]]: ...
    async def save_tag_rule(self, app: str, name: str, spec: dict[str, Any] | None) -> None: ...
    async def app_settings(self, app: str) -> dict[str, Any] | None: ...
    async def save_app_settings(
        self, app: str, spec: dict[str, Any] | None, now: float
    ) -> None: ...
    async def claim_due(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[PendingSend]: ...
    async def next_due(self) -> float | None: ...
    async def count_pending(self, app: str, campaign: str) -> int: ...
    async def run_events(self, app: str, campaign: str) -> list[dict[str, Any]]: ...
    async def drop_pending(self, app: str, campaign: str) -> None: ...
    async def rollout_states(self, app: str) -> dict[str, dict[str, Any]]: ...
    async def swap_rollout(
        self, app: str, cid: str, expect: dict[str, Any] | None, new: dict[str, Any]
    ) -> dict[str, Any] | None: ...


class AnalyticsStore(Protocol):
    """The decision log, funnels, conversions and the record of sends."""

    async def decisions(
        self, app: str, campaign: str, user_key: str | None = None, limit: int = 100
    ) -> list[DecisionRow]: ...
    async def fates(self, app: str, user_key: str, message_ids: Sequence[str]) -> list[FateRow]: ...
    async def funnel_counts(self, app: str, campaign: str) -> dict[str | None, dict[str, int]]: ...
    async def channel_counts(
        self, app: str, campaign: str
    ) -> dict[str | None, dict[str, dict[str, int]]]: ...
    async def funnel_by_day(self, app: str, campaign: str) -> dict[int, dict[str, int]]: ...
    async def cohorts(
        self, app: str, campaign: str, within_s: float
    ) -> list[tuple[str, str | None, str, float, float | None]]: ...
    async def undisplayed_messages(self, app: str, campaign: str) -> list[str]: ...
    async def sends_since(self, since: float) -> list[tuple[str, SendRow]]: ...


class PrivacyStore(Protocol):
    """Everything about one user, erased or exported."""

    async def erase_user(self, app: str, user_key: str) -> tuple[list[str], list[str]]: ...
    async def export_user(self, app: str, user_key: str) -> dict[str, Any]: ...


class RequestStore(Protocol):
    """Admin requests made once: a retry with the same key gets the first answer."""

    async def begin_request(
        self, app: str, key: str, fingerprint: str, now: float, lease_s: float
    ) -> RequestRow | None: ...
    async def finish_request(self, app: str, key: str, status: int, answer: str) -> None: ...
    async def abandon_request(self, app: str, key: str) -> None: ...


class FeedStore(Protocol):
    """The change feed between the gateway processes of one store (a cluster).

    A cursor is opaque text: the position after the changes read so far. Changes are read in
    commit order, each once per reader, none skipped, whatever the order their writers took
    their ids in.
    """

    async def append_changes(self, origin: str, bodies: Sequence[bytes]) -> None: ...
    async def read_changes(
        self, cursor: str | None, limit: int = 10_000
    ) -> tuple[str, list[tuple[str, bytes]]]: ...
    async def trim_changes(self, keep_s: float) -> int: ...


class ReachableStore(Protocol):
    """A store that can say whether it answers now (``ping`` raises if it does not) and
    when it last answered any call (``answered_at``, monotonic seconds)."""

    answered_at: float

    async def ping(self) -> None: ...


class IngestStore(ProfileStore, Protocol):
    """What taking a device's hello and its reports writes: profiles, and the device row."""

    async def upsert_device(self, row: DeviceRow) -> DeviceRow: ...


class AudienceStore(ProfileStore, Protocol):
    """What the targeting view reads and keeps: profiles and the tag rules."""

    async def tag_rules(self) -> list[tuple[str, dict[str, Any]]]: ...
    async def save_tag_rule(self, app: str, name: str, spec: dict[str, Any] | None) -> None: ...


class Store(
    DeliveryStore,
    FeedStore,
    ProfileStore,
    CampaignStore,
    AnalyticsStore,
    PrivacyStore,
    RequestStore,
    ReachableStore,
    Protocol,
):
    """Every role, plus opening and closing; what the node is given."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def flush(self) -> None: ...
