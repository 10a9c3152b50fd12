"""Domain rows the store returns: frozen dataclasses, no SQL types leak out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "INBOX_SQL",
    "REQUEST_KEEP_S",
    "CampaignRow",
    "Committed",
    "DecisionRow",
    "DeviceRow",
    "EventRow",
    "FateRow",
    "Limit",
    "OutMessage",
    "Outcome",
    "PendingDelivery",
    "PendingSend",
    "ProfileRow",
    "Refusal",
    "RequestRow",
    "ResumeState",
    "SendRow",
    "UserRow",
    "anonymous_key",
    "export_document",
    "profiles_from",
]


REQUEST_KEEP_S = 86_400.0
"""How long an idempotency key and its answer are kept."""


def anonymous_key(device_id: str) -> str:
    """The profile key of a device with no user: ``~`` cannot start a user id we mint."""
    return "~" + device_id


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
    epoch: int = 0
    """The session epoch this hello took (the store's, one more than the device's last)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCheck:
    """What the store holds of a device whose live session looks behind (see
    :meth:`~tidings.server.storage.DeliveryStore.check_sessions`)."""

    device: str
    last_seq: int
    """The highest sequence number the store gave the device's deliveries."""
    epoch: int
    """The device's latest session epoch: a session with a lower one was replaced."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingDelivery:
    """A queued delivery to resend: its sequence number and the encoded message."""

    seq: int
    message_id: str
    wire: bytes
    inbox_only: bool = False
    """An older inbox message given to a device that did not hold it: it goes on the wire with
    kind ``inbox`` (never shown as a banner)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeState:
    """What a device that says hello is owed: its queue after its cursor (with the user's
    inbox messages it did not hold queued first), and the user's inbox changes it missed."""

    pending: list[PendingDelivery]
    inbox_ver: int
    changes: list[Any]
    """:class:`~tidings.protocol.frames.InboxChange` after the device's ``inbox_ver``."""


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
class DecisionRow:
    """One entry of the decision log: why a user did or did not get a campaign's message."""

    campaign: str
    user_key: str
    at: float
    reason: str
    detail: str = ""
    variant: str | None = None
    message_id: str | None = None
    seq: int = field(default=0, compare=False)
    """The log's own order: of two entries logged at the same time, the later has the higher
    number (0: not from the log, evaluated when asked)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FateRow:
    """What happened to a message after it was sent to a user, one step at a time.

    ``what``: ``delivered`` (a device acknowledged it), ``displayed``, ``clicked``,
    ``dismissed``, ``expired`` (a banner expired unseen; receipts of a device), or the user's
    inbox state ``read``, ``unread``, ``deleted``. ``device`` is None for inbox state, which
    belongs to the user. ``at`` in Unix seconds.
    """

    message_id: str
    what: str
    at: float
    device: str | None = None
    action: str | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``limit`` of a user's counted sends within the last ``window_s`` seconds.

    The store checks and consumes limits inside the transaction that records the send, so they
    hold under any concurrency. ``window_s`` None counts every send ever; ``campaign`` counts
    only that campaign's sends (a per-user limit); sends of a category in ``uncounted`` never
    count (transactional messages do not use up marketing caps).
    """

    limit: int
    window_s: float | None
    reason: str  # the decision log's reason when the limit is reached, e.g. capped_tier
    detail: str  # e.g. "basic: 2 per 7 days"
    campaign: str | None = None
    uncounted: frozenset[str] = frozenset()

    def counts(self, category: str, campaign: str | None) -> bool:
        """Whether a send of ``category`` (by ``campaign``) counts toward this limit."""
        if self.campaign is not None and campaign != self.campaign:
            return False
        return category not in self.uncounted


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRow:
    """A message sent to one user (caps count these; stats read them).

    Handed to :meth:`Store.commit`, ``limits`` must all still allow the send inside the
    transaction, or the send is refused; ``decision`` is the log entry written with it (a
    refused send logs it with the refusal's reason instead).
    """

    user_key: str
    at: float
    category: str
    message_id: str
    campaign: str | None = None
    variant: str | None = None
    limits: tuple[Limit, ...] = ()
    decision: DecisionRow | None = None


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
class Progress:
    """How far a claimed piece of pending work has got, stored with the commit of each chunk.

    The row keeps its claim (renewed until ``claim_until``) and its ``event`` becomes the
    cursor: whoever claims it after a crash starts where the last stored chunk stopped.
    """

    pending_id: int
    event: dict[str, Any]
    claim_until: float


@dataclass(frozen=True, slots=True, kw_only=True)
class OutMessage:
    """A message ready to store: its wire form and the (device, user key) it goes to.

    The store gives each delivery the device's next sequence number inside the commit.
    """

    message_id: str
    fields: dict[str, Any]
    wire: bytes
    targets: tuple[tuple[str, str], ...]
    collapse_key: str | None = None
    waiting: tuple[str, ...] = ()
    """User keys with no device yet: an inbox message waits in their inbox for their first
    device (PROTOCOL.md §3, the user's inbox)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What a send decided besides its messages; stored with them in one write.

    ``done_pending`` rows are deleted only while ``claim`` (the scheduler that claimed them)
    still holds them, or the whole write is refused with :class:`~tidings.server.errors.ClaimLost`;
    ``progress`` moves the cursor of a row ``claim`` holds, under the same rule.
    Sends of ``campaign`` add to its sent total, which may not pass ``budget``.
    """

    sends: Sequence[SendRow] = ()
    decisions: Sequence[DecisionRow] = ()
    done_pending: Sequence[int] = ()
    new_pending: Sequence[PendingSend] = ()
    campaign: str | None = None
    budget: int | None = None
    claim: str | None = None
    progress: Progress | None = None
    settings: str | None = None
    """The fingerprint of the app settings the sends were decided under
    (:func:`~tidings.server.storage.admission.settings_fingerprint`): the commit is refused
    with :class:`~tidings.server.errors.SettingsChanged` if the stored ones differ. None: not
    checked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A send the store refused at commit: a cap, a per-user limit or the budget was used up."""

    user_key: str
    message_id: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    """What a commit stored: each message's (device, seq) deliveries and the refused sends."""

    deliveries: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    refused: tuple[Refusal, ...] = ()
    sent: int = 0  # sends stored
    sent_total: int | None = None  # the campaign's sent total after the commit


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRow:
    """An admin request made under an idempotency key: what was asked, and its answer once
    it has one (``status`` None while the first attempt still runs)."""

    fingerprint: str
    status: int | None = None
    answer: str | None = None


def export_document(
    user: UserRow | None,
    devices: Sequence[str],
    events: Sequence[EventRow],
    sends: Sequence[Sequence[Any]],
    decisions: Sequence[Sequence[Any]],
    inbox: Sequence[Sequence[Any]] = (),
) -> dict[str, Any]:
    """Everything stored about a profile as JSON-ready data, whatever store read it.

    ``sends`` rows: message id, at, category, campaign, variant, wire (or None);
    ``decisions`` rows: campaign, at, reason, detail, variant; ``inbox`` rows (:data:`INBOX_SQL`):
    message id, state, when the user set it (or None), until when it is kept (or None).
    """
    return {
        "user": None if user is None else {
            "attrs": user.attrs, "consent": user.consent, "first_seen": user.first_seen,
            "last_seen": user.last_seen,
        },
        "devices": list(devices),
        "events": [{"name": e.name, "props": e.props, "ts": e.ts} for e in events],
        "messages": [
            {"id": r[0], "at": r[1], "category": r[2], "campaign": r[3], "variant": r[4],
             "wire": None if r[5] is None else bytes(r[5])}
            for r in sends
        ],
        "decisions": [
            {"campaign": r[0], "at": r[1], "reason": r[2], "detail": r[3], "variant": r[4]}
            for r in decisions
        ],
        "inbox": [
            {"id": r[0], "state": r[1], "at": r[2], "kept_until": r[3]} for r in inbox
        ],
    }  # fmt: skip


INBOX_SQL = (
    "SELECT u.message_id, COALESCE(s.state, 'unread'), s.at, u.expires_at FROM user_inbox u"
    " LEFT JOIN inbox_state s ON s.app=u.app AND s.user_key=u.user_key"
    " AND s.message_id=u.message_id WHERE u.app={app} AND u.user_key={user}"
    " UNION ALL SELECT s.message_id, s.state, s.at, NULL FROM inbox_state s"
    " WHERE s.app={app} AND s.user_key={user} AND NOT EXISTS (SELECT 1 FROM user_inbox u"
    " WHERE u.app=s.app AND u.user_key=s.user_key AND u.message_id=s.message_id) ORDER BY 1"
)
"""A user's inbox for the export: the messages kept for them, with their state, and the state
of older ones; ``{app}`` and ``{user}`` are the dialect's placeholders."""


def profiles_from(
    users: Iterable[Sequence[Any]],
    facts: Iterable[Sequence[Any]],
    purchases: Iterable[Sequence[Any]],
) -> list[ProfileRow]:
    """Profiles for targeting from what a store read, whatever store read it.

    ``users`` rows: user key, attrs JSON, consent JSON, first seen, last seen; ``facts``:
    user key, platform, app version, locale, tz, oldest device first (the latest one wins);
    ``purchases``: user key, count, total amount, last time.
    """
    latest = {r[0]: (r[1], r[2], r[3], r[4]) for r in facts}
    bought = {r[0]: (int(r[1]), float(r[2] or 0), r[3]) for r in purchases}
    rows = []
    for key, attrs, consent, first, last in users:
        platform, version, locale, tz = latest.get(key, ("", "", "", ""))
        count, total, last_buy = bought.get(key, (0, 0.0, None))
        rows.append(
            ProfileRow(
                user_key=key,
                attrs=json.loads(attrs),
                consent=json.loads(consent),
                first_seen=first,
                last_seen=last,
                platform=platform,
                app_version=version,
                locale=locale,
                tz=tz,
                purchase_count=count,
                purchase_total=total,
                last_purchase=last_buy,
            )
        )
    return rows
