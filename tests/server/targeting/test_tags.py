"""Tag rules as data and the sliding-window evaluator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.server.targeting.tags import (
    MAX_WINDOW_ENTRIES,
    TagChanges,
    TagEngine,
    TagRule,
    TagRuleError,
)

DAY = 86_400
SPORTS_FAN = {
    "name": "sports_fan",
    "event": "view_content",
    "where": [{"prop": "category", "op": "eq", "value": "sports"}],
    "threshold": {"count": 3},
    "window_s": 7 * DAY,
}
TAKEOUT = {
    "name": "takeout_regular",
    "event": "order",
    "where": [{"prop": "service", "op": "eq", "value": "takeout"}],
    "threshold": {"count": 5},
    "window_s": 14 * DAY,
}
BIG_SPENDER = {
    "name": "big_spender",
    "event": "purchase",
    "threshold": {"sum": "amount", "at_least": 500},
    "window_s": 30 * DAY,
}


def engine() -> TagEngine:
    return TagEngine([TagRule.from_json(r) for r in (SPORTS_FAN, TAKEOUT, BIG_SPENDER)])


def test_rules_round_trip_through_json() -> None:
    for data in (SPORTS_FAN, TAKEOUT, BIG_SPENDER):
        assert TagRule.from_json(data).to_json() == data


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"event": 3}, "event"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": 1.5}, "window_s"),
        ({"window_s": 10**9}, "window_s"),
        ({"threshold": {"count": 0}}, "threshold.count"),
        ({"threshold": {"count": True}}, "threshold.count"),
        ({"threshold": {"sum": "amount"}}, "threshold"),
        ({"threshold": {"sum": "amount", "at_least": -1}}, "threshold.at_least"),
        ({"threshold": {"avg": 3}}, "threshold"),
        ({"where": [{"prop": "category", "op": "like", "value": "s"}]}, "where[0].op"),
        ({"where": "category = sports"}, "where"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(TagRuleError) as info:
        TagRule.from_json({**SPORTS_FAN, **change})
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def view(e: TagEngine, ts: float, category: str = "sports", user: str = "u1") -> TagChanges:
    return e.observe(user, "view_content", {"category": category}, ts)


def test_count_rule_tags_at_the_threshold_and_ignores_non_matching_events() -> None:
    e = engine()
    assert not view(e, 0)
    assert not view(e, 1 * DAY, category="news")
    assert not e.observe("u1", "other", {"category": "sports"}, 1 * DAY)
    assert not view(e, 2 * DAY)
    assert view(e, 3 * DAY) == TagChanges(added=frozenset({"sports_fan"}))
    assert e.tags_of("u1") == {"sports_fan"}
    assert not view(e, 4 * DAY)  # already held
    assert e.tags_of("u2") == frozenset()


@pytest.mark.parametrize(
    ("now", "dropped"),
    [
        (7 * DAY - 1, {}),
        (7 * DAY, {}),  # the event at 0 left, but three newer ones remain
        (8 * DAY - 1, {}),
        (8 * DAY, {"u1": frozenset({"sports_fan"})}),  # the event at 1 d left the window
    ],
)
def test_tags_expire_when_the_window_slides_past(now: float, dropped: dict[str, Any]) -> None:
    e = engine()
    for ts in (0, 1 * DAY, 2 * DAY, 3 * DAY):
        view(e, ts)
    assert e.expire(now) == dropped
    assert ("sports_fan" in e.tags_of("u1")) is not dropped


def test_expiry_is_incremental_and_forgets_empty_windows() -> None:
    e = engine()
    for ts in (0, 1 * DAY, 2 * DAY):
        view(e, ts)
    assert e.next_expiry() == 7 * DAY
    assert e.expire(7 * DAY) == {"u1": frozenset({"sports_fan"})}
    assert e.tracked == 1  # two events left in the window
    assert e.expire(9 * DAY) == {}
    assert e.tracked == 0
    assert e.next_expiry() is None


def test_an_event_after_a_long_silence_drops_the_stale_tag_itself() -> None:
    e = engine()
    for ts in (0, 1, 2):
        view(e, ts)
    assert view(e, 30 * DAY) == TagChanges(removed=frozenset({"sports_fan"}))


def test_sum_rule_adds_values_and_drops_them_as_they_age() -> None:
    e = engine()

    def buy(ts: float, amount: Any) -> TagChanges:
        return e.observe("u1", "purchase", {"amount": amount}, ts)

    assert not buy(0, 300)
    assert not buy(1, "lots")  # not a number: counts as 0
    assert not buy(2, float("nan"))
    assert buy(10 * DAY, 200) == TagChanges(added=frozenset({"big_spender"}))
    assert e.expire(30 * DAY) == {"u1": frozenset({"big_spender"})}
    assert buy(31 * DAY, 300) == TagChanges(added=frozenset({"big_spender"}))


def test_late_events_are_placed_in_order_or_ignored_when_outside_the_window() -> None:
    e = engine()
    view(e, 10 * DAY)
    view(e, 9 * DAY)  # late but inside the window
    assert not view(e, 1 * DAY)  # older than the window ending at 10 d
    assert view(e, 8 * DAY) == TagChanges(added=frozenset({"sports_fan"}))
    assert e.expire(15 * DAY) == {"u1": frozenset({"sports_fan"})}


def test_memory_per_user_and_rule_is_bounded() -> None:
    e = engine()
    for i in range(5_000):
        view(e, i)
        e.observe("u1", "purchase", {"amount": 0.01}, i)
    windows = e._state["u1"]
    assert len(windows["sports_fan"].entries) == 3
    assert len(windows["big_spender"].entries) == MAX_WINDOW_ENTRIES


def test_users_are_independent_and_can_be_forgotten() -> None:
    e = engine()
    for ts in (0, 1, 2):
        view(e, ts, user="a")
    view(e, 3, user="b")
    assert e.tags_of("a") == {"sports_fan"} and e.tags_of("b") == frozenset()
    e.forget("a")
    assert e.tags_of("a") == frozenset()
    assert e.expire(100 * DAY) == {}


def test_rules_can_be_added_and_removed() -> None:
    e = TagEngine()
    rule = TagRule.from_json(SPORTS_FAN)
    e.add_rule(rule)
    with pytest.raises(TagRuleError):
        e.add_rule(rule)
    for ts in (0, 1, 2):
        view(e, ts)
    assert e.remove_rule("sports_fan") == {"u1"}
    assert e.rule_names == frozenset()
    assert not view(e, 3)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30 * DAY), st.sampled_from(["sports", "news"])), max_size=40),
    st.lists(st.integers(0, 40 * DAY), max_size=5),
)
def test_engine_agrees_with_counting_every_window(
    events: list[tuple[int, str]], expiries: list[int]
) -> None:
    e = engine()
    seen: list[int] = []
    clock = 0
    for ts, category in sorted(events):
        for t in sorted(expiries):
            if clock < t <= ts:
                e.expire(t)
        clock = ts
        view(e, ts, category)
        if category == "sports":
            seen.append(ts)
        in_window = [s for s in seen if ts - 7 * DAY < s <= ts]
        # Matching events update tags at once; windows slide on the expiry timer.
        e.expire(ts)
        assert ("sports_fan" in e.tags_of("u1")) is (len(in_window) >= 3)
    end = clock + 7 * DAY
    e.expire(end)
    assert e.tags_of("u1") == frozenset() and e.tracked == 0
