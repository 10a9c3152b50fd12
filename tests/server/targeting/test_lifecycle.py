"""Lifecycle stages and value tiers at their boundaries."""

from __future__ import annotations

import pytest

from tidings.server.targeting.lifecycle import (
    DAY,
    DEFAULT_THRESHOLDS,
    Lifecycle,
    Thresholds,
    Tier,
    lifecycle,
    next_change_at,
    value_tier,
)

NOW = 1_000 * DAY


@pytest.mark.parametrize(
    ("age_d", "idle_d", "stage"),
    [
        (0, 0, Lifecycle.NEW),
        (6.99, 0, Lifecycle.NEW),
        (7, 0, Lifecycle.ACTIVE),
        (100, 6.99, Lifecycle.ACTIVE),
        (100, 7, Lifecycle.DORMANT),
        (100, 29.99, Lifecycle.DORMANT),
        (100, 30, Lifecycle.CHURNED),
        (6.5, 6.5, Lifecycle.NEW),
    ],
)
def test_lifecycle_boundaries(age_d: float, idle_d: float, stage: Lifecycle) -> None:
    assert lifecycle(NOW - age_d * DAY, NOW - idle_d * DAY, NOW) is stage


@pytest.mark.parametrize(
    ("count", "total", "recency_d", "tier"),
    [
        (0, 0.0, None, Tier.BASIC),
        (1, 50.0, 1, Tier.BASIC),
        (2, 50.0, 1, Tier.POTENTIAL),
        (1, 200.0, 1, Tier.POTENTIAL),
        (5, 50.0, 1, Tier.HIGH_VALUE),
        (1, 1000.0, 29.99, Tier.HIGH_VALUE),
        (5, 1000.0, 30, Tier.POTENTIAL),  # cooled down
        (5, 1000.0, 89.99, Tier.POTENTIAL),
        (5, 1000.0, 90, Tier.DORMANT),
        (1, 10.0, 90, Tier.DORMANT),
    ],
)
def test_value_tier_boundaries(
    count: int, total: float, recency_d: float | None, tier: Tier
) -> None:
    last = None if recency_d is None else NOW - recency_d * DAY
    assert value_tier(count, total, last, NOW) is tier


def test_thresholds_are_configurable_and_checked() -> None:
    th = Thresholds(dormant_after_s=3 * DAY, churned_after_s=14 * DAY, high_count=2)
    assert lifecycle(0, NOW - 3 * DAY, NOW, th) is Lifecycle.DORMANT
    assert value_tier(2, 1.0, NOW, NOW, th) is Tier.HIGH_VALUE
    with pytest.raises(ValueError):
        Thresholds(dormant_after_s=40 * DAY)


@pytest.mark.parametrize(
    ("first_d", "last_d", "purchase_d", "expected_d"),
    [
        (-1, -1, None, 6),  # new -> active at first_seen + 7 d
        (-100, -1, None, 6),  # active -> dormant at last_seen + 7 d
        (-100, -10, None, 20),  # dormant -> churned at last_seen + 30 d
        (-100, -40, None, None),  # churned, never bought: nothing changes any more
        (-100, -40, -20, 10),  # potential/high -> cools at purchase + 30 d
        (-100, -40, -60, 30),  # -> purchase-dormant at purchase + 90 d
    ],
)
def test_next_change_at(
    first_d: float, last_d: float, purchase_d: float | None, expected_d: float | None
) -> None:
    purchase = None if purchase_d is None else NOW + purchase_d * DAY
    got = next_change_at(NOW + first_d * DAY, NOW + last_d * DAY, purchase, NOW)
    assert got == (None if expected_d is None else NOW + expected_d * DAY)


def test_classification_changes_exactly_at_next_change_at() -> None:
    first, last = NOW - 100 * DAY, NOW - 1 * DAY
    t = next_change_at(first, last, None, NOW)
    assert t is not None
    assert lifecycle(first, last, t - 1e-3) is Lifecycle.ACTIVE
    assert lifecycle(first, last, t, DEFAULT_THRESHOLDS) is Lifecycle.DORMANT
