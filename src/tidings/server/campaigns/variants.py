"""A/B variants: deterministic assignment, a significance test, and winner picking.

Assignment hashes ``campaign_id`` and ``user_id`` with BLAKE2b into a uniform number in
[0, 1): the first ``control_share`` of the interval is the holdout group, the rest is split in
proportion to the variant weights. The same (campaign, user) always lands in the same group, on
every node and after every restart, and different campaigns shuffle users independently.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tidings.server.campaigns.model import CONTROL, DEFAULT_MIN_SAMPLE, Variant

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SAMPLE",
    "Arm",
    "assign",
    "bucket",
    "in_test_group",
    "pick_winner",
    "significance",
]

DEFAULT_ALPHA = 0.05
"""Significance level of the winner test (two-sided)."""


def bucket(campaign_id: str, user_id: str) -> float:
    """Return a stable uniform number in [0, 1) for (campaign, user)."""
    digest = hashlib.blake2b(
        f"{len(campaign_id)}:{campaign_id}:{user_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(
    campaign_id: str, user_id: str, variants: Sequence[Variant], control_share: float = 0.0
) -> str | None:
    """Return the user's variant name, :data:`CONTROL` for the holdout, or None (no variants).

    With no variants the campaign has one arm: users outside the holdout get ``None`` (the base
    content).
    """
    u = bucket(campaign_id, user_id)
    if u < control_share:
        return CONTROL
    if not variants:
        return None
    total = sum(v.weight for v in variants)
    x = (u - control_share) / (1.0 - control_share) * total
    acc = 0.0
    for v in variants:
        acc += v.weight
        if x < acc:
            return v.name
    return variants[-1].name  # float rounding at the very top


def in_test_group(campaign_id: str, user_id: str, test_share: float) -> bool:
    """Whether a user is in a roll-out's test group (the first ``test_share`` of the users).

    The hash is independent of :func:`bucket`'s, so the test group is a fair sample of every
    variant and of the holdout.
    """
    return bucket(f"{campaign_id}#rollout", user_id) < test_share


def significance(a_conv: int, a_n: int, b_conv: int, b_n: int) -> tuple[float, float]:
    """Two-proportion z-test of conversion rates; return ``(z, two-sided p-value)``.

    ``z > 0`` means A converts better. Degenerate inputs (an empty arm, or everyone/no one
    converting in both) give ``(0.0, 1.0)``: no evidence either way.
    """
    if a_n <= 0 or b_n <= 0:
        return 0.0, 1.0
    pa, pb = a_conv / a_n, b_conv / b_n
    pooled = (a_conv + b_conv) / (a_n + b_n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / a_n + 1.0 / b_n))
    if se == 0.0:
        return 0.0, 1.0
    z = (pa - pb) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class Arm:
    """Exposures and conversions of one variant (or the control)."""

    conversions: int
    exposures: int

    @property
    def rate(self) -> float:
        """Conversion rate, 0 for an empty arm."""
        return self.conversions / self.exposures if self.exposures else 0.0


def pick_winner(
    arms: Mapping[str, Arm],
    *,
    min_sample: int = DEFAULT_MIN_SAMPLE,
    alpha: float = DEFAULT_ALPHA,
) -> str | None:
    """Return the arm that converts significantly better than every other, or None.

    Only arms with at least ``min_sample`` exposures take part, and at least two must. The
    control may take part but is never returned: when it wins, no variant should roll out.
    The threshold is Bonferroni-corrected for the number of comparisons.
    """
    eligible = {k: a for k, a in arms.items() if a.exposures >= min_sample}
    if len(eligible) < 2:
        return None
    best = max(eligible, key=lambda k: (eligible[k].rate, k != CONTROL))
    if best == CONTROL:
        return None
    others = [k for k in eligible if k != best]
    a = eligible[best]
    for k in others:
        b = eligible[k]
        z, p = significance(a.conversions, a.exposures, b.conversions, b.exposures)
        if z <= 0 or p >= alpha / len(others):
            return None
    return best
