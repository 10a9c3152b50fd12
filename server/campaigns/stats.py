"""Campaign funnels per variant: counts, rates and significance between variants.

The funnel stages, in order::

    targeted -> sent -> delivered -> displayed -> clicked / dismissed
                                              -> converted (conversion event within the window)

Rates divide by the stage that makes sense and are 0.0 when the denominator is 0, so an empty
variant never raises. Comparisons use the two-proportion z-test of
:func:`tidings.server.campaigns.variants.significance` on conversions per displayed message
(or clicks per displayed message, for ``metric="ctr"``). :func:`campaign_stats` assembles a
campaign's report for the admin API from what the store counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

from tidings.server.campaigns.model import CONTROL, Campaign
from tidings.server.campaigns.variants import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLE,
    Arm,
    pick_winner,
    significance,
)

__all__ = ["Comparison", "Funnel", "Stage", "campaign_stats", "compare_variants", "winner"]


class Stage(StrEnum):
    """A funnel stage (also the name of the counter)."""

    TARGETED = "targeted"
    SENT = "sent"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    CLICKED = "clicked"
    DISMISSED = "dismissed"
    CONVERTED = "converted"


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Funnel:
    """Counters of one variant (or of a whole campaign)."""

    targeted: int = 0
    sent: int = 0
    delivered: int = 0
    displayed: int = 0
    clicked: int = 0
    dismissed: int = 0
    converted: int = 0

    def add(self, stage: Stage, n: int = 1) -> Funnel:
        """Return a copy with ``n`` more at ``stage``."""
        return replace(self, **{str(stage): getattr(self, stage) + n})

    def __add__(self, other: Funnel) -> Funnel:
        return Funnel(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> Funnel:
        """Build a funnel from ``{stage: count}``; unknown keys are ignored."""
        return cls(**{s.value: int(counts.get(s.value, 0)) for s in Stage})

    @property
    def delivery_rate(self) -> float:
        """delivered / sent."""
        return _ratio(self.delivered, self.sent)

    @property
    def display_rate(self) -> float:
        """displayed / delivered (the "open" rate of in-app messages)."""
        return _ratio(self.displayed, self.delivered)

    @property
    def ctr(self) -> float:
        """clicked / displayed."""
        return _ratio(self.clicked, self.displayed)

    @property
    def dismiss_rate(self) -> float:
        """dismissed / displayed."""
        return _ratio(self.dismissed, self.displayed)

    @property
    def conversion_rate(self) -> float:
        """converted / displayed."""
        return _ratio(self.converted, self.displayed)

    def to_json(self) -> dict[str, Any]:
        """Return counts and rates for the admin API."""
        return asdict(self) | {
            "delivery_rate": self.delivery_rate,
            "display_rate": self.display_rate,
            "ctr": self.ctr,
            "dismiss_rate": self.dismiss_rate,
            "conversion_rate": self.conversion_rate,
        }


def _arm(f: Funnel, metric: str) -> Arm:
    if metric == "ctr":
        return Arm(f.clicked, f.displayed)
    if metric == "conversion":
        return Arm(f.converted, f.displayed)
    raise ValueError(f"unknown metric {metric!r}; expected 'conversion' or 'ctr'")


@dataclass(frozen=True, slots=True)
class Comparison:
    """One variant against the baseline: rates, relative lift, z and p."""

    variant: str
    rate: float
    baseline_rate: float
    lift: float
    z: float
    p_value: float


def compare_variants(
    funnels: Mapping[str, Funnel], *, baseline: str | None = None, metric: str = "conversion"
) -> list[Comparison]:
    """Compare every variant with ``baseline`` (default: the control, else the first variant).

    ``lift`` is relative (0.25 = 25 % better); 0.0 when the baseline rate is 0.
    """
    if not funnels:
        return []
    base_name = baseline or (CONTROL if CONTROL in funnels else next(iter(funnels)))
    base = _arm(funnels[base_name], metric)
    out = []
    for name, f in funnels.items():
        if name == base_name:
            continue
        arm = _arm(f, metric)
        z, p = significance(arm.conversions, arm.exposures, base.conversions, base.exposures)
        lift = (arm.rate - base.rate) / base.rate if base.rate > 0 else 0.0
        out.append(Comparison(name, arm.rate, base.rate, lift, z, p))
    return out


def winner(
    funnels: Mapping[str, Funnel],
    *,
    metric: str = "conversion",
    min_sample: int = DEFAULT_MIN_SAMPLE,
    alpha: float = DEFAULT_ALPHA,
) -> str | None:
    """Return the variant to roll out, or None while no variant is significantly best."""
    arms = {name: _arm(f, metric) for name, f in funnels.items()}
    return pick_winner(arms, min_sample=min_sample, alpha=alpha)


def campaign_stats(
    c: Campaign,
    counts: Mapping[str | None, Mapping[str, int]],
    conversions: Iterable[tuple[str | None, str, Mapping[str, Any]]],
) -> dict[str, Any]:
    """Per-variant funnels, totals, comparisons and the current winner (if any) of a campaign.

    Args:
        c: The campaign.
        counts: Per variant (``None`` when it has none), the count at each stage but
            ``converted``.
        conversions: ``(variant, user, props)`` of each conversion event within the window
            after exposure; those the conversion's filters refuse are not counted, and all are
            ignored when the campaign has no conversion goal.
    """
    converted: dict[str | None, set[str]] = {}
    if c.conversion is not None:
        conv = c.conversion
        for variant, user, props in conversions:
            if all(f.matches(props) for f in conv.where):
                converted.setdefault(variant, set()).add(user)
    names: list[str | None] = [v.name for v in c.variants] or [None]
    if c.control_share:
        names.append(CONTROL)
    funnels: dict[str, Funnel] = {}
    for name in dict.fromkeys([*names, *counts]):
        n = counts.get(name, {})
        funnels[name or "default"] = Funnel.from_counts(
            {s: n.get(s, 0) for s in Stage} | {"converted": len(converted.get(name, ()))}
        )
    total = Funnel()
    for name, f in funnels.items():
        if name != CONTROL:
            total = total + f
    arms = {k: f for k, f in funnels.items() if k != CONTROL}
    metric = "conversion" if c.conversion is not None else "ctr"
    return {
        "campaign": c.id,
        "status": str(c.status),
        "metric": metric,
        "total": total.to_json(),
        "variants": {k: f.to_json() for k, f in funnels.items()},
        "comparisons": [
            {"variant": x.variant, "rate": x.rate, "baseline_rate": x.baseline_rate,
             "lift": x.lift, "z": x.z, "p_value": x.p_value}
            for x in compare_variants(arms, metric=metric)
        ] if len(arms) > 1 else [],
        "winner": winner(arms, metric=metric) if len(arms) > 1 else None,
    }  # fmt: skip
