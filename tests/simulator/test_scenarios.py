"""Campaign scenarios of the load test: the ground truth alone, then end to end, small."""

from __future__ import annotations

import dataclasses

import pytest

from tidings.server.campaigns.capping import marketing_cap
from tidings.server.targeting.profiles import new_profile
from tidings.simulator.engine import run_loadtest
from tidings.simulator.engine.loadtest import MIN_AGE, SPORTS_FAN
from tidings.simulator.engine.personas import plan
from tidings.simulator.engine.truth import (
    NEW_BASIC_WEEKLY_CAP,
    accuracy,
    cart_audience,
    count_violations,
    greeting,
    never_bought,
    segment_audience,
)

PLANS = [plan(0, i) for i in range(600)]


def test_device_plans_are_stable_and_put_users_on_both_sides_of_every_line() -> None:
    assert [plan(3, i) for i in range(40)] == [plan(3, i) for i in range(40)]
    fans = [p for p in PLANS if SPORTS_FAN.holds(p.events)]
    assert fans and len(fans) < len(PLANS)
    assert any(p.persona.name == "sports_fan" and p not in fans for p in PLANS)
    loose = dataclasses.replace(SPORTS_FAN, at_least=2)
    assert any(p.persona.name != "sports_fan" and loose.holds(p.events) for p in PLANS)
    ages = [p.attrs["age"] for p in fans]
    assert min(ages) < MIN_AGE <= max(ages)  # type: ignore[operator]
    assert {p.cart for p in PLANS} == {"none", "abandon", "purchase"}
    assert any("first_name" not in p.attrs for p in PLANS)


def test_the_segment_audience_is_tagged_adults_only() -> None:
    audience = segment_audience(PLANS, SPORTS_FAN, MIN_AGE)
    for p in PLANS:
        views = sum(1 for name, props in p.events
                    if name == "view_content" and props.get("category") == "sports")  # fmt: skip
        assert (p.user in audience) == (views >= 3 and p.attrs["age"] >= 18)  # type: ignore[operator]


def test_the_checker_catches_a_wrong_tag_threshold() -> None:
    right = segment_audience(PLANS, SPORTS_FAN, MIN_AGE)
    too_loose = segment_audience(PLANS, dataclasses.replace(SPORTS_FAN, at_least=2), MIN_AGE)
    too_strict = segment_audience(PLANS, dataclasses.replace(SPORTS_FAN, at_least=4), MIN_AGE)
    # The "server" sends to the right set; a checker expecting the wrong one must notice.
    assert accuracy(too_loose, right).recall < 1.0
    assert accuracy(too_strict, right).precision < 1.0
    assert accuracy(right, right) == accuracy(right, set(right))
    assert (accuracy(right, right).precision, accuracy(right, right).recall) == (1.0, 1.0)


def test_the_cart_audience_is_those_who_added_and_did_not_buy() -> None:
    audience = cart_audience(PLANS)
    assert audience == {p.user for p in PLANS if p.cart == "abandon"}
    assert not audience & {p.user for p in PLANS if p.cart == "purchase"}


def test_the_expected_greeting_uses_the_first_name_or_there() -> None:
    named = next(p for p in PLANS if "first_name" in p.attrs)
    nameless = next(p for p in PLANS if "first_name" not in p.attrs)
    assert greeting(named) == f"Hi {named.attrs['first_name']}"
    assert greeting(nameless) == "Hi there"


def test_messages_beyond_or_short_of_a_users_count_are_violations_but_a_repeat_is_not() -> None:
    receipts = [("u1", "c", "m1"), ("u1", "c", "m1"), ("u2", "c", "m2"), ("u2", "c", "m3"),
                ("u2", "other", "m4"), ("u3", "c", "m5")]  # fmt: skip
    # u1: one message shown twice (a duplicate, not a second message); u2: three, two expected;
    # u3 should have got nothing; u4 got nothing of its one.
    assert count_violations(receipts, {"u1": 1, "u2": 2, "u4": 1}) == (2, 1)
    assert count_violations(receipts, {"u1": 1, "u2": 3, "u3": 1}) == (0, 0)


def test_the_caps_audience_never_bought_and_each_gets_the_basic_weekly_cap() -> None:
    audience = never_bought(PLANS)
    buyers = {p.user for p in PLANS if any(name == "purchase" for name, _ in p.events)}
    assert audience and buyers
    assert audience == {p.user for p in PLANS} - buyers
    assert NEW_BASIC_WEEKLY_CAP == 2  # SPEC §5: basic users at most 2 marketing messages a week
    rule, _, _ = marketing_cap(new_profile("demo", "u", 0.0))  # and the gateway agrees
    assert rule is not None and (rule.limit, rule.window_s) == (NEW_BASIC_WEEKLY_CAP, 7 * 86_400)


def test_the_tag_rule_the_server_gets_is_the_one_the_checker_uses() -> None:
    assert SPORTS_FAN.to_json() == {
        "name": "sports_fan", "event": "view_content",
        "where": [{"prop": "category", "op": "eq", "value": "sports"}],
        "threshold": {"count": 3}, "window_s": 7 * 86_400,
    }  # fmt: skip


@pytest.mark.parametrize("scenario", ["segment", "trigger", "caps"])
def test_a_campaign_scenario_reaches_exactly_its_audience_with_personal_titles(
    scenario: str,
) -> None:
    report = run_loadtest(devices=60, scenario=scenario, workers=1, timeout=30)
    assert report.violations == {}, report.extra
    assert (report.precision, report.recall) == (1.0, 1.0)
    assert report.delivery_ratio == 1.0
    assert 0 < report.extra["audience"] < 60
    per_user = NEW_BASIC_WEEKLY_CAP if scenario == "caps" else 1  # caps: 3 campaigns, 2 each
    expected = report.extra["audience"] * per_user
    assert report.extra["received"] == expected == report.extra["server_sent"]
    assert len(report.latencies_ms) == expected
