"""Variant assignment, the significance test and winner picking."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from tidings.server.campaigns.model import CONTROL, Content, Variant
from tidings.server.campaigns.variants import Arm, assign, bucket, pick_winner, significance


def variants(*weights: float) -> list[Variant]:
    return [Variant(f"v{i}", w, {}, Content(body="x")) for i, w in enumerate(weights)]


def test_assignment_is_deterministic_and_differs_between_campaigns() -> None:
    vs = variants(1, 1)
    first = [assign("spring", f"u{i}", vs, 0.1) for i in range(1000)]
    assert first == [assign("spring", f"u{i}", vs, 0.1) for i in range(1000)]
    other = [assign("autumn", f"u{i}", vs, 0.1) for i in range(1000)]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 300
    assert bucket("ab", "c") != bucket("a", "bc")  # no ambiguity from concatenation


@pytest.mark.parametrize(
    ("weights", "control"),
    [((1, 1), 0.0), ((1, 2, 1), 0.1), ((3, 1), 0.2), ((), 0.05)],
)
def test_distribution_follows_weights_within_one_percent(
    weights: tuple[float, ...], control: float
) -> None:
    n = 100_000
    vs = variants(*weights)
    counts = Counter(assign("camp-42", f"user-{i}", vs, control) for i in range(n))
    assert abs(counts[CONTROL] / n - control) < 0.01
    total = sum(weights)
    for v in vs:
        assert abs(counts[v.name] / n - (1 - control) * v.weight / total) < 0.01
    if not vs:
        assert abs(counts[None] / n - (1 - control)) < 0.01


@pytest.mark.parametrize(
    ("a", "b", "z", "p"),
    [
        # Textbook: 200/1000 vs 150/1000 -> pooled 0.175, se 0.01699: z = 2.9424, p = 0.0033
        ((200, 1000), (150, 1000), 2.9424, 0.0033),
        ((150, 1000), (200, 1000), -2.9424, 0.0033),
        ((100, 1000), (100, 1000), 0.0, 1.0),
        ((0, 0), (10, 100), 0.0, 1.0),
        ((0, 100), (0, 100), 0.0, 1.0),
        ((100, 100), (100, 100), 0.0, 1.0),
    ],
)
def test_significance(a: tuple[int, int], b: tuple[int, int], z: float, p: float) -> None:
    got_z, got_p = significance(*a, *b)
    assert math.isclose(got_z, z, abs_tol=1e-3)
    assert math.isclose(got_p, p, abs_tol=1e-4)


@pytest.mark.parametrize(
    ("arms", "winner"),
    [
        ({"a": Arm(200, 1000), "b": Arm(150, 1000)}, "a"),
        ({"a": Arm(160, 1000), "b": Arm(150, 1000)}, None),  # not significant
        ({"a": Arm(200, 999), "b": Arm(150, 1000)}, None),  # a below the minimum sample
        ({"a": Arm(200, 1000), "b": Arm(150, 1000), CONTROL: Arm(100, 1000)}, "a"),
        ({"a": Arm(200, 1000), CONTROL: Arm(300, 1000)}, None),  # the control wins: no roll-out
        ({"a": Arm(200, 1000), "b": Arm(195, 1000), "c": Arm(100, 1000)}, None),
        ({"a": Arm(200, 1000)}, None),
    ],
)
def test_pick_winner(arms: dict[str, Arm], winner: str | None) -> None:
    assert pick_winner(arms, min_sample=1000, alpha=0.05) == winner
