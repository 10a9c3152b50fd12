"""Lifecycle stage and value tier: pure classifications of a profile at a given ``now``.

Both are stored on the profile so segments can be resolved from an index; :func:`next_change_at`
tells a scheduler when a stored value goes stale, so nobody rescans every profile per event.

Intervals are half-open so every boundary is one exact instant (``idle`` is ``now - last_seen``,
``age`` is ``now - first_seen``, ``recency`` is ``now - last_purchase``)::

    lifecycle   churned   idle >= churned_after_s                  (default 30 d)
                dormant   dormant_after_s <= idle < churned_after_s  (7 d .. 30 d)
                new       idle < dormant_after_s and age < new_for_s  (first seen < 7 d)
                active    idle < dormant_after_s and age >= new_for_s

    value tier  high_value  recency < hot_s and (count >= high_count or total >= high_total)
                potential   recency < cold_s and (count >= potential_count
                                                  or total >= potential_total)
                dormant     bought before, but recency >= cold_s       (default 90 d)
                basic       everyone else (never bought, or one small purchase)

A high-value buyer who stops buying cools down to ``potential`` after ``hot_s`` and to
``dormant`` after ``cold_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DAY",
    "DEFAULT_THRESHOLDS",
    "Lifecycle",
    "Thresholds",
    "Tier",
    "lifecycle",
    "next_change_at",
    "value_tier",
]

DAY = 86_400.0
"""Seconds in a day."""


class Lifecycle(StrEnum):
    """Where a user is in their life with the app (seeds: 新 / 活跃 / 沉睡 / 流失)."""

    NEW = "new"
    ACTIVE = "active"
    DORMANT = "dormant"
    CHURNED = "churned"


class Tier(StrEnum):
    """Value tier from the recency, frequency and monetary value of purchases."""

    HIGH_VALUE = "high_value"
    POTENTIAL = "potential"
    BASIC = "basic"
    DORMANT = "dormant"


DEFAULT_NEW_FOR_S = 7 * DAY
DEFAULT_DORMANT_AFTER_S = 7 * DAY
DEFAULT_CHURNED_AFTER_S = 30 * DAY
DEFAULT_HOT_S = 30 * DAY
DEFAULT_COLD_S = 90 * DAY
DEFAULT_HIGH_COUNT = 5
DEFAULT_HIGH_TOTAL = 1_000.0
DEFAULT_POTENTIAL_COUNT = 2
DEFAULT_POTENTIAL_TOTAL = 200.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """Configurable boundaries of lifecycle stages and value tiers (seconds, counts, money)."""

    new_for_s: float = DEFAULT_NEW_FOR_S
    dormant_after_s: float = DEFAULT_DORMANT_AFTER_S
    churned_after_s: float = DEFAULT_CHURNED_AFTER_S
    hot_s: float = DEFAULT_HOT_S
    cold_s: float = DEFAULT_COLD_S
    high_count: int = DEFAULT_HIGH_COUNT
    high_total: float = DEFAULT_HIGH_TOTAL
    potential_count: int = DEFAULT_POTENTIAL_COUNT
    potential_total: float = DEFAULT_POTENTIAL_TOTAL

    def __post_init__(self) -> None:
        if not 0 < self.dormant_after_s <= self.churned_after_s:
            raise ValueError("need 0 < dormant_after_s <= churned_after_s")
        if not 0 < self.hot_s <= self.cold_s:
            raise ValueError("need 0 < hot_s <= cold_s")
        if self.new_for_s < 0:
            raise ValueError("new_for_s must be >= 0")


DEFAULT_THRESHOLDS = Thresholds()


def lifecycle(
    first_seen: float, last_seen: float, now: float, th: Thresholds = DEFAULT_THRESHOLDS
) -> Lifecycle:
    """Return the lifecycle stage of a user first and last seen at the given unix times."""
    idle = now - last_seen
    if idle >= th.churned_after_s:
        return Lifecycle.CHURNED
    if idle >= th.dormant_after_s:
        return Lifecycle.DORMANT
    if now - first_seen < th.new_for_s:
        return Lifecycle.NEW
    return Lifecycle.ACTIVE


def value_tier(
    purchase_count: int,
    purchase_total: float,
    last_purchase: float | None,
    now: float,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> Tier:
    """Return the value tier from purchase frequency, monetary value and recency."""
    if last_purchase is None or purchase_count <= 0:
        return Tier.BASIC
    recency = now - last_purchase
    if recency >= th.cold_s:
        return Tier.DORMANT
    if recency < th.hot_s and (purchase_count >= th.high_count or purchase_total >= th.high_total):
        return Tier.HIGH_VALUE
    if purchase_count >= th.potential_count or purchase_total >= th.potential_total:
        return Tier.POTENTIAL
    return Tier.BASIC


def next_change_at(
    first_seen: float,
    last_seen: float,
    last_purchase: float | None,
    now: float,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> float | None:
    """Return the first instant after ``now`` when lifecycle or tier changes without new events.

    A scheduler keeps a heap of these per user and reclassifies only the users that are due; any
    new event for the user reschedules. ``None`` means nothing changes any more (churned, and
    never bought or already purchase-dormant).
    """
    candidates = [
        first_seen + th.new_for_s,
        last_seen + th.dormant_after_s,
        last_seen + th.churned_after_s,
    ]
    if last_purchase is not None:
        candidates += [last_purchase + th.hot_s, last_purchase + th.cold_s]
    future = [t for t in candidates if t > now]
    return min(future) if future else None
