"""Frequency caps and opt-outs, table-driven with an injected now."""

from __future__ import annotations

from typing import Any

import pytest
from tidings.server.campaigns.capping import WEEK, CapConfig, CapRule, check
from tidings.server.campaigns.model import Campaign, Reason
from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import Profile

NOW = 1_700_000_000.0
DAY = 86_400.0


def campaign(category: str = "marketing", **frequency: Any) -> Campaign:
    return Campaign.from_json(
        {
            "id": "c1",
            "app": "shop",
            "name": "C",
            "kind": "one_off",
            "content": {"body": "x", "category": category},
            "frequency": frequency,
        }
    )


def profile(
    tier: Tier = Tier.BASIC, stage: Lifecycle = Lifecycle.ACTIVE, **consent: bool
) -> Profile:
    return Profile(app="shop", user_id="u1", tier=tier, lifecycle=stage, consent=consent)


def days_ago(*days: float) -> list[float]:
    return [NOW - d * DAY for d in days]


@pytest.mark.parametrize(
    ("tier", "stage", "sent_days_ago", "reason"),
    [
        (Tier.HIGH_VALUE, Lifecycle.ACTIVE, (1, 2, 3), Reason.SENT),
        (Tier.HIGH_VALUE, Lifecycle.ACTIVE, (1, 2, 3, 4), Reason.CAPPED_TIER),
        (Tier.HIGH_VALUE, Lifecycle.ACTIVE, (1, 2, 3, 7), Reason.SENT),  # 7 d ago left the week
        (Tier.POTENTIAL, Lifecycle.ACTIVE, (1, 2), Reason.SENT),
        (Tier.POTENTIAL, Lifecycle.ACTIVE, (1, 2, 3), Reason.CAPPED_TIER),
        (Tier.BASIC, Lifecycle.ACTIVE, (1,), Reason.SENT),
        (Tier.BASIC, Lifecycle.ACTIVE, (1, 6.9), Reason.CAPPED_TIER),
        (Tier.BASIC, Lifecycle.ACTIVE, (1, 8, 9, 10), Reason.SENT),
        (Tier.DORMANT, Lifecycle.ACTIVE, (10, 20), Reason.CAPPED_TIER),
        (Tier.DORMANT, Lifecycle.ACTIVE, (10, 31), Reason.SENT),
        (Tier.BASIC, Lifecycle.DORMANT, (10, 20), Reason.CAPPED_LIFECYCLE),
        (Tier.HIGH_VALUE, Lifecycle.DORMANT, (10, 20), Reason.CAPPED_LIFECYCLE),
        (Tier.HIGH_VALUE, Lifecycle.CHURNED, (29,), Reason.CAPPED_LIFECYCLE),
        (Tier.HIGH_VALUE, Lifecycle.CHURNED, (31,), Reason.SENT),
        (Tier.HIGH_VALUE, Lifecycle.NEW, (1, 2, 3), Reason.CAPPED_LIFECYCLE),
        (Tier.BASIC, Lifecycle.NEW, (1, 2), Reason.CAPPED_TIER),
    ],
)
def test_tier_and_lifecycle_caps(
    tier: Tier, stage: Lifecycle, sent_days_ago: tuple[float, ...], reason: Reason
) -> None:
    history = {"marketing": days_ago(*sent_days_ago[::2]), "news": days_ago(*sent_days_ago[1::2])}
    d = check(history, profile(tier, stage), campaign(), NOW)
    assert d.reason is reason
    assert d.allowed is (reason is Reason.SENT)


def test_a_capped_decision_says_when_to_retry() -> None:
    d = check({"marketing": days_ago(1, 3)}, profile(), campaign(), NOW)
    assert d.reason is Reason.CAPPED_TIER and d.retry_at == NOW - 3 * DAY + WEEK
    assert "2 per 7 days" in d.detail
    assert check({"marketing": days_ago(1, 3)}, profile(), campaign(), d.retry_at).allowed


def test_transactional_messages_bypass_marketing_caps_and_opt_outs() -> None:
    full = {"marketing": days_ago(1, 2, 3, 4, 5), "transactional": days_ago(0.1) * 50}
    user = profile(Tier.BASIC, Lifecycle.CHURNED, marketing=False, transactional=False)
    assert check(full, user, campaign("transactional"), NOW).allowed
    assert check(full, user, campaign(), NOW).reason is Reason.OPTED_OUT
    # transactional sends do not count towards marketing caps
    assert check({"transactional": days_ago(1, 2, 3)}, profile(), campaign(), NOW).allowed


@pytest.mark.parametrize(
    ("consent", "category", "reason"),
    [
        ({"marketing": False}, "marketing", Reason.OPTED_OUT),
        ({"marketing": False}, "transactional", Reason.SENT),
        ({"transactional": False}, "transactional", Reason.SENT),  # cannot be refused
        ({"marketing": True}, "marketing", Reason.SENT),
    ],
)
def test_opt_outs_are_per_category(consent: dict[str, bool], category: str, reason: Reason) -> None:
    assert check({}, profile(**consent), campaign(category), NOW).reason is reason


@pytest.mark.parametrize(
    ("frequency", "campaign_days_ago", "sent_total", "reason"),
    [
        ({"per_user_limit": 1}, (), 0, Reason.SENT),
        ({"per_user_limit": 1}, (100,), 0, Reason.CAPPED_CAMPAIGN),
        ({"per_user_limit": 1, "per_user_window_s": 86400}, (2,), 0, Reason.SENT),
        ({"per_user_limit": 1, "per_user_window_s": 86400}, (0.5,), 0, Reason.CAPPED_CAMPAIGN),
        ({"total_budget": 10}, (), 9, Reason.SENT),
        ({"total_budget": 10}, (), 10, Reason.BUDGET_EXHAUSTED),
    ],
)
def test_campaign_limits_and_budget(
    frequency: dict[str, int], campaign_days_ago: tuple[float, ...], sent_total: int, reason: Reason
) -> None:
    d = check(
        {},
        profile(),
        campaign(**frequency),
        NOW,
        campaign_history=days_ago(*campaign_days_ago),
        campaign_sent_total=sent_total,
    )
    assert d.reason is reason


def test_cap_tables_are_configurable() -> None:
    config = CapConfig(tier_caps={Tier.BASIC: CapRule(1, 3600)}, lifecycle_caps={})
    assert check({"marketing": [NOW - 60]}, profile(), campaign(), NOW, config=config).reason is (
        Reason.CAPPED_TIER
    )
    assert check({"marketing": [NOW - 7200]}, profile(), campaign(), NOW, config=config).allowed
