"""Which caps a send must fit, and opt-outs: pure and table-driven.

Counting sends against these limits happens inside the store's commit; the store contract
suite (``tests/server/storage/test_contract_caps.py``) checks that half with real stores.
"""

from __future__ import annotations

from typing import Any

import pytest

from tidings.server.campaigns.capping import (
    MONTH,
    WEEK,
    CapConfig,
    CapRule,
    limits_for,
    marketing_cap,
)
from tidings.server.campaigns.model import Campaign, Decision, Reason
from tidings.server.storage import Limit
from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import Profile


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


def caps(verdict: Decision | tuple[Limit, ...]) -> list[tuple[str, int, float | None]]:
    assert not isinstance(verdict, Decision), verdict
    return [(limit.reason, limit.limit, limit.window_s) for limit in verdict]


@pytest.mark.parametrize(
    ("tier", "stage", "expected"),
    [
        # An active user gets the active cap whatever they bought (seeds: 3-4 a week).
        (Tier.HIGH_VALUE, Lifecycle.ACTIVE, [("capped_lifecycle", 4, WEEK)]),
        (Tier.POTENTIAL, Lifecycle.ACTIVE, [("capped_lifecycle", 4, WEEK)]),
        (Tier.BASIC, Lifecycle.ACTIVE, [("capped_lifecycle", 4, WEEK)]),
        (Tier.DORMANT, Lifecycle.ACTIVE, [("capped_lifecycle", 4, WEEK)]),
        # A new user has no stage cap: the tier decides (ordinary users 1-2 a week).
        (Tier.BASIC, Lifecycle.NEW, [("capped_tier", 2, WEEK)]),
        (Tier.POTENTIAL, Lifecycle.NEW, [("capped_tier", 3, WEEK)]),
        (Tier.HIGH_VALUE, Lifecycle.NEW, [("capped_tier", 4, WEEK)]),
        # Dormant users 2 a month, churned users one win-back a month, whatever the tier.
        (Tier.BASIC, Lifecycle.DORMANT, [("capped_lifecycle", 2, MONTH)]),
        (Tier.HIGH_VALUE, Lifecycle.DORMANT, [("capped_lifecycle", 2, MONTH)]),
        (Tier.HIGH_VALUE, Lifecycle.CHURNED, [("capped_lifecycle", 1, MONTH)]),
    ],
)  # fmt: skip
def test_one_marketing_cap_binds_the_stages_else_the_tiers(
    tier: Tier, stage: Lifecycle, expected: list[tuple[str, int, float]]
) -> None:
    verdict = limits_for(profile(tier, stage), "marketing", campaign=campaign())
    assert caps(verdict) == expected
    assert not isinstance(verdict, Decision)
    assert all(limit.uncounted == frozenset({"transactional"}) for limit in verdict)
    assert all(limit.campaign is None for limit in verdict)


@pytest.mark.parametrize(
    ("tier", "stage", "lifecycle_caps", "tier_caps", "expected"),
    [
        (Tier.BASIC, Lifecycle.NEW, {}, {}, None),
        (Tier.BASIC, Lifecycle.ACTIVE, {}, {Tier.BASIC: CapRule(1, 60)}, ("capped_tier", 1)),
        (Tier.BASIC, Lifecycle.NEW, {Lifecycle.NEW: CapRule(5, 60)}, {Tier.BASIC: CapRule(1, 60)},
         ("capped_lifecycle", 5)),
    ],
)  # fmt: skip
def test_marketing_cap_takes_the_stage_cap_when_the_app_sets_one(
    tier: Tier, stage: Lifecycle, lifecycle_caps: dict[Lifecycle, CapRule],
    tier_caps: dict[Tier, CapRule], expected: tuple[str, int] | None,
) -> None:  # fmt: skip
    config = CapConfig(tier_caps=tier_caps, lifecycle_caps=lifecycle_caps)
    rule, reason, _ = marketing_cap(profile(tier, stage), config)
    assert (None if rule is None else (str(reason), rule.limit)) == expected


def test_a_cap_names_who_it_binds_and_its_rule() -> None:
    new = limits_for(profile(Tier.BASIC, Lifecycle.NEW), "marketing")
    active = limits_for(profile(Tier.BASIC, Lifecycle.ACTIVE), "marketing")
    assert not isinstance(new, Decision) and not isinstance(active, Decision)
    assert [limit.detail for limit in new] == ["basic: 2 per 7 days"]
    assert [limit.detail for limit in active] == ["active: 4 per 7 days"]


def test_transactional_messages_bypass_marketing_caps_and_opt_outs() -> None:
    user = profile(Tier.BASIC, Lifecycle.CHURNED, marketing=False, transactional=False)
    assert limits_for(user, "transactional", campaign=campaign("transactional")) == ()
    refused = limits_for(user, "marketing", campaign=campaign())
    assert isinstance(refused, Decision) and refused.reason is Reason.OPTED_OUT


@pytest.mark.parametrize(
    ("consent", "category", "refused"),
    [
        ({"marketing": False}, "marketing", True),
        ({"marketing": False}, "transactional", False),
        ({"transactional": False}, "transactional", False),  # cannot be refused
        ({"marketing": True}, "marketing", False),
        ({"news": False}, "news", True),
        ({"news": False}, "marketing", False),
    ],
)
def test_opt_outs_are_per_category(consent: dict[str, bool], category: str, refused: bool) -> None:
    assert isinstance(limits_for(profile(**consent), category), Decision) is refused


@pytest.mark.parametrize(
    ("frequency", "expected"),
    [
        ({}, None),
        ({"total_budget": 10}, None),  # the budget is the outcome's, not the user's
        ({"per_user_limit": 1}, (1, None, "campaign: 1 per user")),
        ({"per_user_limit": 2, "per_user_window_s": 86400}, (2, 86400, "campaign: 2 per 1 days")),
    ],
)
def test_a_campaign_per_user_limit_counts_only_that_campaigns_sends(
    frequency: dict[str, int], expected: tuple[int, int | None, str] | None
) -> None:
    verdict = limits_for(profile(), "transactional", campaign=campaign("transactional",
                                                                      **frequency))  # fmt: skip
    assert not isinstance(verdict, Decision)
    if expected is None:
        assert verdict == ()
    else:
        (limit,) = verdict
        assert (limit.limit, limit.window_s, limit.detail) == expected
        assert limit.reason == "capped_campaign" and limit.campaign == "c1"
        assert limit.counts("transactional", "c1") and not limit.counts("transactional", "c2")


def test_cap_tables_and_a_minimum_gap_are_configurable() -> None:
    config = CapConfig(tier_caps={Tier.BASIC: CapRule(1, 3600)}, lifecycle_caps={}, min_gap_s=600)
    verdict = limits_for(profile(), "marketing", config=config)
    assert caps(verdict) == [("capped_tier", 1, 3600), ("capped_gap", 1, 600)]


def test_a_limit_counts_sends_of_counted_categories_only() -> None:
    limit = Limit(2, WEEK, "capped_tier", "basic", uncounted=frozenset({"transactional"}))
    assert limit.counts("marketing", None) and limit.counts("news", "c9")
    assert not limit.counts("transactional", None)
