"""Funnel counters, rates and variant comparisons."""

from __future__ import annotations

import math

from tidings.server.campaigns.model import CONTROL
from tidings.server.campaigns.stats import Funnel, Stage, compare_variants, winner


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
