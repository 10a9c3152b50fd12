"""Funnel counters, rates and variant comparisons."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tidings.server.campaigns.model import CONTROL, Campaign
from tidings.server.campaigns.stats import (
    Cohort,
    Funnel,
    Stage,
    attribute,
    campaign_stats,
    compare_variants,
    diff_interval,
    lift,
    retention,
    verdict,
    wilson_interval,
    winner,
)
from tidings.server.campaigns.variants import Arm
from tidings.server.targeting.segments import Op, PropFilter


def test_rates_guard_against_zero() -> None:
    empty = Funnel()
    assert (empty.ctr, empty.conversion_rate, empty.delivery_rate) == (0.0, 0.0, 0.0)
    f = Funnel(targeted=100, sent=90, delivered=80, displayed=40, clicked=10, dismissed=20,
               converted=4)  # fmt: skip
    assert (f.delivery_rate, f.display_rate, f.ctr) == (80 / 90, 0.5, 0.25)
    assert (f.dismiss_rate, f.conversion_rate) == (0.5, 0.1)
    assert f.to_json()["ctr"] == 0.25 and f.to_json()["targeted"] == 100


def test_funnels_add_up() -> None:
    f = Funnel().add(Stage.SENT).add(Stage.SENT, 2).add(Stage.CLICKED)
    assert f == Funnel(sent=3, clicked=1)
    assert f + f == Funnel(sent=6, clicked=2)
    assert Funnel.from_counts({"sent": 3, "clicked": 1, "bogus": 9}) == f


def test_variants_are_compared_with_the_control() -> None:
    funnels = {
        CONTROL: Funnel(displayed=1000, converted=150),
        "a": Funnel(displayed=1000, converted=200),
        "b": Funnel(displayed=0),
    }
    a, b = compare_variants(funnels)
    assert a.variant == "a" and math.isclose(a.lift, 1 / 3) and a.p_value < 0.01 and a.z > 0
    assert (b.rate, b.z, b.p_value) == (0.0, 0.0, 1.0)
    assert winner(funnels, min_sample=1000) == "a"
    assert winner(funnels, min_sample=1000, metric="ctr") is None


# --- intervals, lift, verdicts, retention (pure, table-driven) --------------------------------


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [  # Newcombe (1998), Table II, method 10 (hybrid score), to 4 decimals
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
        (10, 10, 0, 10, 0.6075, 1.0000),
    ],
)
def test_the_difference_interval_matches_newcombes_published_values(
    x1: int, n1: int, x2: int, n2: int, low: float, high: float
) -> None:
    got = diff_interval(x1, n1, x2, n2)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)
    flipped = diff_interval(x2, n2, x1, n1)  # the interval of -d is the mirror image
    assert flipped == pytest.approx((-got[1], -got[0]))


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [  # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_the_wilson_interval_matches_published_values(
    x: int, n: int, low: float, high: float
) -> None:
    got = wilson_interval(x, n)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)


def test_empty_groups_give_the_widest_intervals() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert diff_interval(3, 10, 0, 0) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="x <= n"):
        wilson_interval(5, 4)


def test_lift_is_the_difference_over_the_control_with_its_interval() -> None:
    x = lift("a", Arm(7, 10), Arm(5, 15))
    assert (x.rate, x.control_rate) == (0.7, 5 / 15)
    assert x.difference == pytest.approx(0.7 - 1 / 3)
    assert x.relative == pytest.approx(1.1)
    assert (x.low, x.high) == diff_interval(7, 10, 5, 15)
    assert lift("a", Arm(1, 10), Arm(0, 10)).relative is None  # no control conversions


@pytest.mark.parametrize(
    ("arms", "min_sample", "winner_", "reason"),
    [
        ({"a": Arm(10, 100)}, 10, None, "no A/B test: the campaign has one variant"),
        ({"a": Arm(1, 5), "b": Arm(4, 20)}, 100, None,
         "needs 95 more displays per variant (at least 100 each)"),
        ({"a": Arm(10, 100), "b": Arm(12, 100)}, 100, None,
         "not significant, p = 0.65 (needs p < 0.05)"),
        ({"a": Arm(6, 97), "b": Arm(40, 99)}, 50, "b",
         "b wins on conversion: 40.4% vs 6.2% (a), p = 1.6e-08"),
        ({"a": Arm(6, 97), "b": Arm(40, 99)}, 1000, None,
         "needs 903 more displays per variant (at least 1000 each)"),
        ({"a": Arm(30, 100), "b": Arm(30, 100)}, 100, None,
         "not significant, p = 1 (needs p < 0.05)"),
        # Three variants: the best must beat each other one at alpha / 2.
        ({"a": Arm(10, 200), "b": Arm(30, 200), "c": Arm(21, 200)}, 100, None,
         "not significant, p = 0.18 (needs p < 0.025)"),
        ({"a": Arm(10, 200), "b": Arm(40, 200), "c": Arm(12, 200)}, 100, "b",
         "b wins on conversion: 20.0% vs 6.0% (c), p = 3.1e-05"),
        ({CONTROL: Arm(90, 100), "a": Arm(10, 100), "b": Arm(40, 100)}, 100, "b",
         "b wins on conversion: 40.0% vs 10.0% (a), p = 9.6e-07"),
    ],
)  # fmt: skip
def test_the_verdict_names_the_winner_or_why_there_is_none(
    arms: dict[str, Arm], min_sample: int, winner_: str | None, reason: str
) -> None:
    v = verdict(arms, min_sample=min_sample)
    assert (v.winner, v.reason) == (winner_, reason)
    assert v.to_json()["min_sample_per_variant"] == min_sample


def test_the_verdict_on_click_through_says_so() -> None:
    v = verdict({"a": Arm(0, 50), "b": Arm(20, 50)}, metric="ctr", min_sample=50)
    assert v.winner == "b" and v.reason.startswith("b wins on click-through: 40.0% vs 0.0%")


@pytest.mark.parametrize(
    ("starts", "window", "now", "expected"),
    [
        ([], 86_400, 0, (0, 0, 0)),
        # (start, returned_at): back within the day, after it, never, window still open
        ([(0, 100), (0, 90_000), (0, None), (50_000, 60_000)], 86_400, 100_000, (3, 1, 1)),
        ([(0, 100), (0, 90_000), (0, None)], 7 * 86_400, 7 * 86_400, (3, 2, 0)),
        ([(0, 86_400)], 86_400, 86_400, (1, 1, 0)),  # the window's last second counts
    ],
)
def test_retention_counts_only_users_whose_window_has_ended(
    starts: list[tuple[float, float | None]], window: int, now: float,
    expected: tuple[int, int, int],
) -> None:  # fmt: skip
    cohort = [Cohort("sent", "a", f"u{i}", s, r) for i, (s, r) in enumerate(starts)]
    got = retention(cohort, window, now)
    assert (got.users, got.returned, got.waiting) == expected


def test_conversions_are_attributed_inside_the_window_and_the_filter() -> None:
    where = (PropFilter("sku", Op.EQ, "x"),)
    cohort = [Cohort("exposed", "a", "u1", 100.0), Cohort("exposed", "b", "u2", 100.0),
              Cohort("exposed", "a", "u3", 100.0), Cohort("exposed", "a", "u4", 100.0)]  # fmt: skip
    events = [
        ("u1", 150.0, {"sku": "x"}),  # inside
        ("u2", 250.0, {"sku": "x"}),  # after the window
        ("u3", 150.0, {"sku": "y"}),  # another product
        ("u4", 50.0, {"sku": "x"}),  # before the exposure
        ("u9", 150.0, {"sku": "x"}),  # not in the cohort
    ]
    assert attribute(cohort, events, 100, where) == {("a", "u1")}


def _campaign(**extra: Any) -> Campaign:
    return Campaign.from_json({
        "id": "c", "app": "demo", "name": "c", "kind": "one_off",
        "content": {"kind": "both", "title": "t"}, "control_share": 0.2,
        "variants": [{"name": "a"}, {"name": "b"}], **extra,
    })  # fmt: skip


def test_the_report_shows_each_channel_with_any_receipt_kind_and_the_control() -> None:
    c = _campaign(conversion={"event": "paid"}, min_sample_per_variant=1)
    channels = {
        "a": {"banner": {"delivered": 5, "displayed": 3, "expired": 2, "seen": 3}},
        "b": {"inbox": {"delivered": 4, "read": 2, "clicked": 1, "seen": 2},
              "both": {"delivered": 1, "displayed": 1, "read": 1, "seen": 1}},
    }  # fmt: skip
    cohorts = [
        Cohort("holdout", CONTROL, "h1", 0.0, 10.0), Cohort("holdout", CONTROL, "h2", 0.0),
        Cohort("sent", "a", "u1", 0.0, 5.0), Cohort("exposed", "a", "u1", 1.0),
    ]  # fmt: skip
    events = [("h1", 10.0, {}), ("u1", 5.0, {})]
    report = campaign_stats(c, {"a": {"sent": 5}, "b": {"sent": 5}}, channels, cohorts, events,
                            now=10 * 86_400)  # fmt: skip
    assert report["total"]["channels"] == {
        "banner": {"delivered": 5, "displayed": 3, "clicked": 0, "dismissed": 0, "expired": 2},
        "inbox": {"delivered": 4, "read": 2, "clicked": 1},
        "both": {"delivered": 1, "displayed": 1, "read": 1, "clicked": 0, "dismissed": 0},
    }
    assert report["variants"]["b"]["displayed"] == 3  # read in the inbox counts as seen
    assert report["control"] == {"users": 2, "converted": 1, "conversion_rate": 0.5}
    assert report["variants"][CONTROL]["conversion_rate"] == 0.5
    (a, b) = report["lift"]
    assert (a["variant"], a["users"], a["converted"], a["control_rate"]) == ("a", 1, 1, 0.5)
    assert (b["users"], b["rate"]) == (0, 0.0)
    assert report["retention"]["1d"][CONTROL] == {"users": 2, "returned": 1, "waiting": 0,
                                                  "rate": 0.5}  # fmt: skip
    assert report["rollout"] is None


def test_a_report_without_a_conversion_goal_has_no_lift() -> None:
    report = campaign_stats(_campaign(), {}, {}, [Cohort("holdout", CONTROL, "h", 0.0)])
    assert report["metric"] == "ctr" and report["lift"] == []
    assert report["control"] == {"users": 1, "converted": None, "conversion_rate": None}


def test_a_rollout_cancelled_during_its_test_is_reported_as_stopped() -> None:
    rollout = {"test_share": 0.2, "decide_after_s": 3600}
    testing = {"phase": "testing", "started_at": 0.0, "deadline": 3600.0}
    running = campaign_stats(_campaign(rollout=rollout, status="running"), {}, {}, [],
                             rollout=testing)  # fmt: skip
    assert running["rollout"]["phase"] == "testing"
    cancelled = campaign_stats(_campaign(rollout=rollout, status="cancelled"), {}, {}, [],
                               rollout=testing)  # fmt: skip
    assert cancelled["rollout"]["phase"] == "stopped"
    assert "the rest were not sent" in cancelled["rollout"]["detail"]
