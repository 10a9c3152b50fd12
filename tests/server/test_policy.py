"""Per-app policy as pure functions: the settings document, the TOML file, copy length, windows.

Table-driven, no event loop: :class:`AppPolicy` parsing and its errors, the ``[[apps]]``
tables of the configuration file, grapheme-cluster copy length and truncation, the tag window
at its edge, profile times from event times, and when a triggered campaign has ended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings.protocol.errors import ConfigError, InvalidField
from tidings.server.campaigns.capping import MONTH, WEEK, CapRule
from tidings.server.campaigns.engine import _ended
from tidings.server.campaigns.model import Campaign
from tidings.server.campaigns.templates import copy_length, truncate_copy
from tidings.server.config import load_config
from tidings.server.policy import DEFAULT_POLICY, AppPolicy, ValueEvent
from tidings.server.targeting.lifecycle import DAY, Lifecycle, Thresholds, Tier
from tidings.server.targeting.profiles import Profile, apply_events
from tidings.server.targeting.tags import TagEngine, TagRule

# --- the settings document ---------------------------------------------------------------------


def test_the_default_policy_reads_back_as_the_seeds_figures() -> None:
    doc = DEFAULT_POLICY.to_json()
    assert doc["caps"]["lifecycle"]["active"] == {"limit": 4, "days": 7}
    assert doc["caps"]["tier"]["basic"] == {"limit": 2, "days": 7}
    assert doc["caps"]["lifecycle"]["dormant"] == {"limit": 2, "days": 30}
    assert AppPolicy().updated(doc) == DEFAULT_POLICY  # the document round-trips


@pytest.mark.parametrize(
    ("doc", "check"),
    [
        ({}, lambda p: p == DEFAULT_POLICY),
        ({"value_event": {"name": "order_paid", "amount": "total"}},
         lambda p: p.value_event == ValueEvent("order_paid", "total")),
        ({"value_event": {"name": "order_paid"}},
         lambda p: p.value_event == ValueEvent("order_paid", "amount")),
        ({"categories": ["news", "marketing"]},
         lambda p: p.categories == ("marketing", "transactional", "news")),
        ({"caps": {"lifecycle": {"new": {"limit": 3, "days": 7}}}},
         lambda p: p.caps.lifecycle_caps[Lifecycle.NEW] == CapRule(3, WEEK)
         and p.caps.lifecycle_caps[Lifecycle.ACTIVE] == CapRule(4, WEEK)),
        ({"caps": {"lifecycle": {"active": "none"}}},
         lambda p: Lifecycle.ACTIVE not in p.caps.lifecycle_caps),
        ({"caps": {"tier": {"dormant": None}}}, lambda p: Tier.DORMANT not in p.caps.tier_caps),
        ({"caps": {"tier": {"basic": {"limit": 1, "days": 0.5}}}},
         lambda p: p.caps.tier_caps[Tier.BASIC] == CapRule(1, 43_200)),
        ({"caps": {"min_gap_hours": 4}}, lambda p: p.caps.min_gap_s == 4 * 3600),
        ({"caps": {"min_gap_hours": "none"}}, lambda p: p.caps.min_gap_s is None),
        ({"thresholds": {"churned_after_days": 45, "high_total": 5000}},
         lambda p: (p.thresholds.churned_after_s, p.thresholds.high_total) == (45 * DAY, 5000)),
        ({"thresholds": {"new_for_days": 0}}, lambda p: p.thresholds.new_for_s == 0),
    ],
)  # fmt: skip
def test_a_settings_document_changes_only_what_it_names(doc: dict[str, Any], check: Any) -> None:
    assert check(DEFAULT_POLICY.updated(doc))


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "settings"),
        ({"caps": []}, "caps"),
        ({"caps": {"lifecycle": {"active": {"limit": 1.5, "days": 7}}}},
         "caps.lifecycle.active.limit"),
        ({"caps": {"lifecycle": {"active": {"limit": True, "days": 7}}}},
         "caps.lifecycle.active.limit"),
        ({"caps": {"tier": {"basic": {"limit": 1, "days": 400}}}}, "caps.tier.basic.days"),
        ({"caps": {"tier": {"basic": {"limit": 1, "days": -1}}}}, "caps.tier.basic.days"),
        ({"caps": {"tier": {"gold": "none"}}}, "caps.tier.gold"),
        ({"caps": {"min_gap_hours": 0}}, "caps.min_gap_hours"),
        ({"thresholds": {"hot_days": 100}}, "thresholds.hot_days"),
        ({"thresholds": {"cold_days": 10}}, "thresholds.cold_days"),
        ({"thresholds": {"potential_count": 9}}, "thresholds.potential_count"),
        ({"thresholds": {"high_total": float("nan")}}, "thresholds.high_total"),
        ({"thresholds": {"idle_days": 3}}, "thresholds.idle_days"),
        ({"value_event": {"amount": 'a"b'}}, "value_event.amount"),
        ({"value_event": {"name": "x", "currency": "EUR"}}, "value_event.currency"),
        ({"categories": "news"}, "categories"),
        ({"categories": [f"c{i}" for i in range(31)]}, "categories"),
    ],
)  # fmt: skip
def test_a_bad_settings_document_names_the_key_path(doc: Any, field: str) -> None:
    with pytest.raises(InvalidField) as info:
        DEFAULT_POLICY.updated(doc)
    assert info.value.field == field
    assert info.value.reason.startswith(f"{field}: ")


def test_check_category_lists_the_apps_categories() -> None:
    policy = DEFAULT_POLICY.updated({"categories": ["news"]})
    policy.check_category("news", "content.category")
    with pytest.raises(InvalidField) as info:
        policy.check_category("promotions", "content.category")
    assert info.value.reason == (
        "content.category: unknown category 'promotions'; this app's categories are "
        "marketing, transactional, news"
    )


# --- the configuration file --------------------------------------------------------------------

APP = '[[apps]]\nid = "shop"\nsecret = "shop-secret-1"\nadmin_key = "shop-admin-1"\n'


def load(tmp_path: Path, text: str) -> AppPolicy:
    path = tmp_path / "tidings.toml"
    path.write_text(APP + text)
    return load_config(path=path, env={}).apps[0].policy


def test_the_file_sets_each_apps_policy(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        """
categories = ["promotions", "news", "reminders"]
value_event = {name = "order_paid", amount = "total"}
[apps.caps]
lifecycle = {active = {limit = 3, days = 7}, new = {limit = 2, days = 7}}
min_gap_hours = 2
[apps.caps.tier.dormant]
limit = 1
days = 30
[apps.thresholds]
dormant_after_days = 10
""",
    )
    assert policy.categories == ("marketing", "transactional", "promotions", "news", "reminders")
    assert policy.value_event == ValueEvent("order_paid", "total")
    assert policy.caps.lifecycle_caps[Lifecycle.ACTIVE] == CapRule(3, WEEK)
    assert policy.caps.lifecycle_caps[Lifecycle.NEW] == CapRule(2, WEEK)
    assert policy.caps.tier_caps[Tier.DORMANT] == CapRule(1, MONTH)
    assert policy.caps.min_gap_s == 7200
    assert policy.thresholds == Thresholds(dormant_after_s=10 * DAY)


def test_an_app_without_policy_keys_has_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[apps.caps]\nlifecycle = {active = {limit = 0, days = 7}}\n',
         "apps[0].caps.lifecycle.active.limit: must be greater than 0"),
        ("[apps.caps]\nweekly = 3\n", "apps[0].caps.weekly: unknown key"),
        ("[apps.thresholds]\nchurned_after_days = 3\n",
         "apps[0].thresholds.churned_after_days: dormant_after_days must not be above"),
        ('value_event = "order_paid"\n', "apps[0].value_event: must be a table"),
        ('categories = ["News"]\n', "apps[0].categories[0]: 'News' must be"),
        ("colour = 1\n", "apps[0] has unknown keys ['colour']"),
    ],
)  # fmt: skip
def test_a_bad_policy_in_the_file_names_the_file_and_the_key_path(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.reason.startswith(f"{tmp_path / 'tidings.toml'}: ")
    assert says in info.value.reason


# --- copy length -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("hello", 5),
        ("a\r\nb", 3),  # CR LF is one cluster
        ("中" * 49 + "👍🏽", 50),
        ("👨‍👩‍👧‍👦", 1),
        ("🇨🇳🇫🇷", 2),  # two flags
        ("e\u0301", 1),  # e + combining acute
        ("한국어", 3),
        ("\u0915\u094d\u0937", 1),  # Devanagari conjunct (Unicode 15.1)
    ],
)
def test_copy_length_counts_grapheme_clusters(text: str, length: int) -> None:
    assert copy_length(text) == length


@pytest.mark.parametrize(
    ("text", "max_len", "cut"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("eleven char", 10, "eleven ch…"),
        ("中" * 8 + "👍🏽👍🏽👍🏽", 10, "中" * 8 + "👍🏽…"),
        ("ab👨‍👩‍👧‍👦cd", 4, "ab👨‍👩‍👧‍👦…"),
        ("e\u0301e\u0301e\u0301", 2, "e\u0301…"),
        ("abc", 1, "…"),
    ],
)
def test_truncation_keeps_whole_clusters_and_fits_the_limit(
    text: str, max_len: int, cut: str
) -> None:
    out = truncate_copy(text, max_len)
    assert out == cut
    assert copy_length(out) <= max_len


# --- tag windows at their edge -----------------------------------------------------------------

WEEK_RULE = TagRule.from_json({"name": "fan", "event": "cheer", "threshold": {"count": 1},
                               "window_s": 7 * 86_400})  # fmt: skip
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("age_s", "granted"),
    [
        (0, True),
        (7 * 86_400 - 1, True),
        (7 * 86_400 - 0.001, True),
        (7 * 86_400, False),  # the window is (now - window_s, now]: exactly window_s is out
        (7 * 86_400 + 0.001, False),
        (40 * 86_400, False),
    ],
)
def test_an_event_grants_the_tag_only_inside_the_window(age_s: float, granted: bool) -> None:
    tags = TagEngine([WEEK_RULE])
    changes = tags.observe("u", "cheer", {}, NOW - age_s, NOW)
    assert ("fan" in changes.added) is granted
    assert ("fan" in tags.tags_of("u")) is granted


def test_a_late_event_after_newer_ones_does_not_count_outside_the_window() -> None:
    rule = TagRule.from_json({"name": "regular", "event": "order", "threshold": {"count": 2},
                              "window_s": 86_400})  # fmt: skip
    tags = TagEngine([rule])
    tags.observe("u", "order", {}, NOW - 10, NOW)
    assert not tags.observe("u", "order", {}, NOW - 86_400, NOW)  # at the edge: out
    assert tags.observe("u", "order", {}, NOW - 86_399, NOW).added == {"regular"}


# --- profile times come from event times -------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "events", "first", "last"),
    [
        # a user known only from events: their times, not the arrival
        ((0.0, 0.0), [NOW - 40 * 86_400], NOW - 40 * 86_400, NOW - 40 * 86_400),
        ((0.0, 0.0), [NOW - 5, NOW - 90], NOW - 90, NOW - 5),
        # a late event moves first seen back, never last seen
        ((NOW - 10, NOW), [NOW - 100], NOW - 100, NOW),
        ((NOW - 10, NOW - 10), [NOW], NOW - 10, NOW),
    ],
)
def test_apply_events_takes_first_and_last_seen_from_event_times(
    start: tuple[float, float], events: list[float], first: float, last: float
) -> None:
    p = Profile(app="a", user_id="u", first_seen=start[0], last_seen=start[1])
    p = apply_events(p, [("open", {}, ts) for ts in events])
    assert (p.first_seen, p.last_seen) == (first, last)


def test_the_value_event_counts_purchases_by_its_own_name_and_amount() -> None:
    p = Profile(app="a", user_id="u")
    fired = [("order_paid", {"total": 30}, NOW - 5), ("purchase", {"amount": 99}, NOW)]
    p = apply_events(p, fired, purchase_event="order_paid", amount_prop="total")
    assert (p.purchase_count, p.purchase_total, p.last_purchase) == (1, 30.0, NOW - 5)


# --- a triggered campaign's end ---------------------------------------------------------------


def triggered(end_at: float | None) -> Campaign:
    window = {"start_at": NOW - 86_400} | ({} if end_at is None else {"end_at": end_at})
    return Campaign.from_json({"id": "t", "app": "a", "name": "T", "kind": "triggered",
                               "trigger": {"event": "cart", "window": window},
                               "content": {"body": "b"}})  # fmt: skip


@pytest.mark.parametrize(
    ("end_at", "at", "ended"),
    [
        (None, NOW + 10**9, False),
        (NOW, NOW - 0.001, False),
        (NOW, NOW, True),  # [start_at, end_at): the end itself is after the window
        (NOW, NOW + 1, True),
    ],
)
def test_a_campaign_has_ended_from_its_windows_end_on(
    end_at: float | None, at: float, ended: bool
) -> None:
    assert _ended(triggered(end_at), at) is ended
