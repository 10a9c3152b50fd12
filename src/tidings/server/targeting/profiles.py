"""User profiles: one frozen value per (app, user), and pure functions that return updated copies.

A profile holds what targeting needs and nothing else: free-form attributes, behaviour tags,
lifecycle stage and value tier (kept current by a scheduler, see
:func:`tidings.server.targeting.lifecycle.next_change_at`), a 24-bucket histogram of the user's
active hours in *their local time*, consent flags, first/last seen and purchase statistics.

Consent is opt-out: a category absent from :attr:`Profile.consent` is allowed, and
``transactional`` messages are always allowed (order status and security notices are mandatory).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.server.targeting.lifecycle import (
    DEFAULT_THRESHOLDS,
    Lifecycle,
    Thresholds,
    Tier,
    lifecycle,
    value_tier,
)

__all__ = [
    "DEFAULT_AMOUNT_PROP",
    "DEFAULT_PURCHASE_EVENT",
    "EMPTY_HOURS",
    "TRANSACTIONAL",
    "UTC",
    "Profile",
    "allows",
    "apply_attributes",
    "apply_device",
    "apply_event",
    "apply_events",
    "best_hour",
    "local_hour",
    "new_profile",
    "reclassify",
    "set_consent",
    "with_tags",
    "zone",
]

TRANSACTIONAL = "transactional"
"""The message category nobody can opt out of."""

DEFAULT_PURCHASE_EVENT = "purchase"
"""Event name that updates purchase statistics."""

DEFAULT_AMOUNT_PROP = "amount"
"""Property of the purchase event that carries the money value."""

EMPTY_HOURS: tuple[int, ...] = (0,) * 24
UTC = ZoneInfo("UTC")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@lru_cache(maxsize=1024)
def zone(tz: str) -> ZoneInfo:
    """Return the time zone named ``tz``, or UTC when the name is empty, absurd or unknown."""
    if not tz or len(tz) > 64 or ".." in tz or tz.startswith("/"):
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def local_hour(ts: float, tz: str) -> int:
    """Return the hour of day (0-23) of unix time ``ts`` in time zone ``tz``."""
    return datetime.fromtimestamp(ts, zone(tz)).hour


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Everything targeting knows about one user of one app.

    Attributes:
        app: App id; profiles never cross apps.
        user_id: The app's user id (anonymous devices get a synthetic one).
        attrs: Free-form static attributes (age, gender, region, first_name, ...).
        tags: Behaviour tags currently held (see :mod:`.tags`).
        lifecycle: Stored lifecycle stage; see :func:`reclassify`.
        tier: Stored value tier; see :func:`reclassify`.
        active_hours: 24 counters of events per local hour of day.
        consent: Category -> allowed; a missing category is allowed (opt-out model).
        first_seen: Unix seconds of the first event.
        last_seen: Unix seconds of the latest event.
        tz: IANA time zone reported by the device ("" = unknown, treated as UTC).
        locale: BCP 47 locale, e.g. ``zh-CN``.
        platform: ``ios``, ``android``, ``web``, ...
        app_version: Version string of the app, compared semver-ishly by segments.
        purchase_count: Number of purchases.
        purchase_total: Sum of purchase amounts.
        last_purchase: Unix seconds of the latest purchase, or None.
    """

    app: str
    user_id: str
    attrs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    tags: frozenset[str] = frozenset()
    lifecycle: Lifecycle = Lifecycle.NEW
    tier: Tier = Tier.BASIC
    active_hours: tuple[int, ...] = EMPTY_HOURS
    consent: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    first_seen: float = 0.0
    last_seen: float = 0.0
    tz: str = ""
    locale: str = ""
    platform: str = ""
    app_version: str = ""
    purchase_count: int = 0
    purchase_total: float = 0.0
    last_purchase: float | None = None

    def __post_init__(self) -> None:
        if len(self.active_hours) != 24:
            raise ValueError("active_hours must have 24 buckets")


def new_profile(app: str, user_id: str, now: float, **fields: Any) -> Profile:
    """Return the profile of a user seen for the first time at ``now``."""
    return Profile(app=app, user_id=user_id, first_seen=now, last_seen=now, **fields)


def allows(profile: Profile, category: str) -> bool:
    """Return True when the user accepts messages of ``category``."""
    return category == TRANSACTIONAL or profile.consent.get(category, True)


def best_hour(active_hours: tuple[int, ...], default_hour: int) -> int:
    """Return the most active local hour (ties: the earliest), or ``default_hour`` if empty."""
    top = max(active_hours)
    return active_hours.index(top) if top > 0 else default_hour


def apply_event(
    profile: Profile,
    name: str,
    props: Mapping[str, Any],
    ts: float,
    *,
    purchase_event: str = DEFAULT_PURCHASE_EVENT,
    amount_prop: str = DEFAULT_AMOUNT_PROP,
) -> Profile:
    """Return ``profile`` updated by one behaviour event at unix time ``ts``.

    Updates first/last seen (events may arrive late or out of order), the active-hours bucket
    in the user's local time, and the purchase statistics for ``purchase_event``. Lifecycle and
    tier are left to :func:`reclassify`, which needs the evaluation ``now``.
    """
    return apply_events(
        profile, ((name, props, ts),), purchase_event=purchase_event, amount_prop=amount_prop
    )


def apply_events(
    profile: Profile,
    events: Iterable[tuple[str, Mapping[str, Any], float]],
    *,
    purchase_event: str = DEFAULT_PURCHASE_EVENT,
    amount_prop: str = DEFAULT_AMOUNT_PROP,
) -> Profile:
    """Return ``profile`` updated by a batch of ``(name, props, ts)`` events, in one copy."""
    hours = list(profile.active_hours)
    first, last = profile.first_seen, profile.last_seen
    count, total, last_buy = profile.purchase_count, profile.purchase_total, profile.last_purchase
    tz = zone(profile.tz)
    for name, props, ts in events:
        hours[datetime.fromtimestamp(ts, tz).hour] += 1
        first = min(first, ts) if first else ts
        last = max(last, ts)
        if name == purchase_event:
            amount = props.get(amount_prop, 0)
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                amount = 0
            if not math.isfinite(amount) or amount < 0:
                amount = 0
            count += 1
            total += float(amount)
            last_buy = ts if last_buy is None else max(last_buy, ts)
    return replace(
        profile,
        active_hours=tuple(hours),
        first_seen=first,
        last_seen=last,
        purchase_count=count,
        purchase_total=total,
        last_purchase=last_buy,
    )


def reclassify(profile: Profile, now: float, th: Thresholds = DEFAULT_THRESHOLDS) -> Profile:
    """Return ``profile`` with lifecycle and tier recomputed at ``now`` (itself if unchanged)."""
    stage = lifecycle(profile.first_seen, profile.last_seen, now, th)
    tier = value_tier(
        profile.purchase_count, profile.purchase_total, profile.last_purchase, now, th
    )
    if stage == profile.lifecycle and tier == profile.tier:
        return profile
    return replace(profile, lifecycle=stage, tier=tier)


def apply_attributes(profile: Profile, attrs: Mapping[str, Any]) -> Profile:
    """Return ``profile`` with ``attrs`` merged in; a ``None`` value deletes the attribute."""
    merged = dict(profile.attrs)
    for key, value in attrs.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return replace(profile, attrs=MappingProxyType(merged))


def apply_device(
    profile: Profile,
    *,
    tz: str | None = None,
    locale: str | None = None,
    platform: str | None = None,
    app_version: str | None = None,
) -> Profile:
    """Return ``profile`` with the device facts of the latest ``hello`` (None = unchanged)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in (
            ("tz", tz),
            ("locale", locale),
            ("platform", platform),
            ("app_version", app_version),
        )
        if v is not None and v != getattr(profile, k)
    }
    return replace(profile, **changes) if changes else profile


def set_consent(profile: Profile, category: str, allowed: bool) -> Profile:
    """Return ``profile`` with the user's choice for ``category`` recorded."""
    if category == TRANSACTIONAL:
        return profile
    consent = dict(profile.consent)
    consent[category] = allowed
    return replace(profile, consent=MappingProxyType(consent))


def with_tags(
    profile: Profile, added: frozenset[str] = frozenset(), removed: frozenset[str] = frozenset()
) -> Profile:
    """Return ``profile`` holding ``added`` tags and no longer holding ``removed`` ones."""
    tags = (profile.tags - removed) | added
    return profile if tags == profile.tags else replace(profile, tags=tags)
