"""Campaign measurement: funnels per variant and channel, control and lift, retention, verdicts.

The funnel stages of a variant, in order::

    targeted -> sent -> delivered -> displayed -> clicked / dismissed
                                              -> converted (conversion event within the window)

``displayed`` is what the user saw: a banner displayed, or an inbox item read (the inbox's
display), counted once per message. Per channel (the message kind) the funnel follows the
receipts as they are: banner ``delivered -> displayed -> clicked / dismissed`` (and ``expired``,
a banner that expired unseen on the device), inbox ``delivered -> read -> clicked``; any other
receipt kind the devices send appears there too.

Rates divide by the stage that makes sense and are 0.0 when the denominator is 0, so an empty
variant never raises. Variants are compared with the two-proportion z-test of
:func:`tidings.server.campaigns.variants.significance` on conversions per displayed message
(or clicks per displayed message, for ``metric="ctr"``); :func:`verdict` says which variant won
or why none has yet. The holdout is compared with everyone decided: :func:`lift` gives each
variant's difference in conversion rate over the control with a Newcombe interval
(:func:`diff_interval`), and :func:`retention` the share who came back. :func:`campaign_stats`
assembles a campaign's report for the admin API from what the store counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from statistics import NormalDist
from typing import Any

from tidings.protocol import kinds
from tidings.server.campaigns.model import (
    CONTROL,
    Campaign,
    CampaignStatus,
    Conversion,
)
from tidings.server.campaigns.variants import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLE,
    Arm,
    pick_winner,
    significance,
)

__all__ = [
    "CHANNEL_STAGES",
    "DAY_STAGES",
    "RETENTION_WINDOWS",
    "Cohort",
    "Comparison",
    "Funnel",
    "Lift",
    "Retention",
    "Stage",
    "Verdict",
    "attribute",
    "best_variant",
    "by_day",
    "campaign_stats",
    "compare_variants",
    "diff_interval",
    "first_conversions",
    "lift",
    "retention",
    "verdict",
    "wilson_interval",
    "winner",
]

CHANNEL_STAGES: Mapping[str, tuple[str, ...]] = {k.name: k.funnel for k in kinds.KINDS.values()}
"""The stages each channel's funnel always shows (with 0), in order; receipt kinds outside
these (such as ``expired``) follow when the devices sent any."""

RETENTION_WINDOWS: Mapping[str, int] = {"1d": 86_400, "7d": 7 * 86_400}
"""Retention is the share who come back (any event) within these windows."""

SEEN = "seen"
"""The stage the store counts for messages displayed, read or clicked (the general "display")."""


class Stage(StrEnum):
    """A funnel stage (also the name of the counter)."""

    TARGETED = "targeted"
    SENT = "sent"
    DELIVERED = "delivered"
    DISPLAYED = "displayed"
    CLICKED = "clicked"
    DISMISSED = "dismissed"
    CONVERTED = "converted"


DAY_STAGES = ("sent", "delivered", "displayed", "clicked", "converted")
"""The stages ``by_day`` counts: sends, and messages first delivered, first seen (displayed,
read or clicked), first clicked, and users first converting, each on its day."""


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


# --- the statistics -------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``x / n`` (``(0.0, 1.0)`` when ``n`` is 0).

    E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
    JASA 22 (1927) 209-212.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= x <= n:
        raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
    z = _z(confidence)
    p = x / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def diff_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of ``x1/n1 - x2/n2`` by Newcombe's hybrid score method.

    Method 10 of R. G. Newcombe, "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17 (1998) 873-890: the
    Wilson intervals ``(l1, u1)`` and ``(l2, u2)`` of each proportion combine into::

        low  = d - sqrt((p1 - l1)**2 + (u2 - p2)**2)
        high = d + sqrt((u1 - p1)**2 + (p2 - l2)**2)

    Unlike the Wald interval it stays inside [-1, 1] and keeps its coverage for small samples
    and rates near 0 or 1 (a few conversions out of a few hundred is the usual case here).
    An empty group gives the widest interval, ``(-1.0, 1.0)``.
    """
    if n1 <= 0 or n2 <= 0:
        return -1.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (
        max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
        min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)),
    )


@dataclass(frozen=True, slots=True)
class Lift:
    """One variant against the holdout: conversion rates, their difference and its interval.

    ``relative`` is ``difference / control_rate`` (0.25 = 25 % better), None when the control
    converted nobody. ``low`` and ``high`` bound ``difference`` (Newcombe, 95 %).
    """

    variant: str
    users: int
    converted: int
    rate: float
    control_users: int
    control_converted: int
    control_rate: float
    difference: float
    relative: float | None
    low: float
    high: float
    confidence: float = 0.95

    def to_json(self) -> dict[str, Any]:
        """The admin API form."""
        return asdict(self) | {"method": "newcombe"}


def lift(variant: str, arm: Arm, control: Arm, confidence: float = 0.95) -> Lift:
    """Lift of ``arm`` (converted / users decided to get it) over the ``control`` holdout."""
    low, high = diff_interval(
        arm.conversions, arm.exposures, control.conversions, control.exposures, confidence
    )
    diff = arm.rate - control.rate
    return Lift(
        variant=variant, users=arm.exposures, converted=arm.conversions, rate=arm.rate,
        control_users=control.exposures, control_converted=control.conversions,
        control_rate=control.rate, difference=diff,
        relative=diff / control.rate if control.rate > 0 else None,
        low=low, high=high, confidence=confidence,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """The A/B test's answer: the winner and by which metric, or why there is none yet.

    ``needs`` is how many more displays the smallest variant needs (0 once all have enough);
    ``p_value`` is the best variant against its closest rival (None before the sample is in).
    """

    winner: str | None
    metric: str
    reason: str
    p_value: float | None = None
    needs: int = 0
    min_sample: int = DEFAULT_MIN_SAMPLE
    alpha: float = DEFAULT_ALPHA

    def to_json(self) -> dict[str, Any]:
        """The admin API form (``min_sample`` as ``min_sample_per_variant``)."""
        out = asdict(self)
        out["min_sample_per_variant"] = out.pop("min_sample")
        return out


_METRIC_WORDS = {"conversion": "conversion", "ctr": "click-through"}


def verdict(
    arms: Mapping[str, Arm],
    *,
    metric: str = "conversion",
    min_sample: int = DEFAULT_MIN_SAMPLE,
    alpha: float = DEFAULT_ALPHA,
) -> Verdict:
    """Pick the winner of an A/B test (the variants only, never the control) or say why not.

    In order: fewer than two variants, no test; a variant with fewer than ``min_sample``
    exposures, "needs N more displays per variant"; the best rate not significantly better
    than every other (two-sided z-test, Bonferroni: ``p < alpha / (variants - 1)``), "not
    significant, p = ..." (the largest of those p-values); else the best variant wins.
    """
    word = _METRIC_WORDS.get(metric, metric)
    kw: dict[str, Any] = {"metric": metric, "min_sample": min_sample, "alpha": alpha}
    arms = {k: a for k, a in arms.items() if k != CONTROL}
    if len(arms) < 2:
        return Verdict(None, reason="no A/B test: the campaign has one variant", **kw)
    needs = max(min_sample - a.exposures for a in arms.values())
    if needs > 0:
        return Verdict(None, reason=f"needs {needs} more displays per variant (at least "
                                    f"{min_sample} each)", needs=needs, **kw)  # fmt: skip
    best = max(arms, key=lambda k: arms[k].rate)  # the first in order on a tie
    a = arms[best]
    threshold = alpha / (len(arms) - 1)
    worst_p, rival = 0.0, ""
    for name, b in arms.items():
        if name == best:
            continue
        z, p = significance(a.conversions, a.exposures, b.conversions, b.exposures)
        if z <= 0:
            p = 1.0
        if p >= worst_p:
            worst_p, rival = p, name
    if worst_p >= threshold:
        return Verdict(None, reason=f"not significant, p = {worst_p:.2g} (needs p < "
                                    f"{threshold:.2g})", p_value=worst_p, **kw)  # fmt: skip
    r = arms[rival]
    return Verdict(best, reason=f"{best} wins on {word}: {a.rate:.1%} vs {r.rate:.1%} "
                                f"({rival}), p = {worst_p:.2g}", p_value=worst_p, **kw)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Cohort:
    """One user of a campaign group and when the measurement starts for them.

    ``start``: the first send (recipients), the first display, read or click (exposed), or the
    decision that held the user out (control). ``returned_at``: the user's first event after
    ``start`` (within the longest retention window), or None.
    """

    group: str  # "sent", "exposed" or "holdout"
    variant: str | None
    user: str
    start: float
    returned_at: float | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    """How many of a group came back within a window.

    Only users whose window has ended count (``users``); ``waiting`` are still inside it.
    """

    users: int
    returned: int
    waiting: int

    @property
    def rate(self) -> float:
        """returned / users (0.0 for nobody)."""
        return _ratio(self.returned, self.users)

    def to_json(self) -> dict[str, Any]:
        """The admin API form."""
        return asdict(self) | {"rate": self.rate}


def retention(cohort: Iterable[Cohort], window_s: float, now: float) -> Retention:
    """The share of ``cohort`` with an event within ``window_s`` after their start."""
    users = returned = waiting = 0
    for c in cohort:
        if c.start + window_s > now:
            waiting += 1
            continue
        users += 1
        if c.returned_at is not None and c.returned_at <= c.start + window_s:
            returned += 1
    return Retention(users, returned, waiting)


def attribute(
    cohort: Iterable[Cohort],
    events: Iterable[tuple[str, float, Mapping[str, Any]]],
    window_s: float,
    where: Sequence[Any] = (),
) -> set[tuple[str | None, str]]:
    """The (variant, user) pairs of ``cohort`` that converted.

    A conversion is an event of ``events`` (``(user, ts, props)``, all of the conversion's name)
    whose properties match every filter of ``where`` and whose time is within ``window_s``
    after the user's start.
    """
    return set(first_conversions(cohort, events, window_s, where))


def first_conversions(
    cohort: Iterable[Cohort],
    events: Iterable[tuple[str, float, Mapping[str, Any]]],
    window_s: float,
    where: Sequence[Any] = (),
) -> dict[tuple[str | None, str], float]:
    """When each (variant, user) pair of ``cohort`` that converted first did (see
    :func:`attribute`)."""
    by_user: dict[str, list[float]] = {}
    for user, ts, props in events:
        if all(f.matches(props) for f in where):
            by_user.setdefault(user, []).append(ts)
    out: dict[tuple[str | None, str], float] = {}
    for c in cohort:
        times = [ts for ts in by_user.get(c.user, ()) if c.start <= ts <= c.start + window_s]
        if times:
            out[(c.variant, c.user)] = min(times)
    return out


def by_day(
    days: Mapping[int, Mapping[str, int]], converted: Iterable[float] = ()
) -> list[dict[str, Any]]:
    """What each UTC day added to the funnel, oldest first: ``days`` as the store counts them
    (:meth:`~tidings.server.storage.AnalyticsStore.funnel_by_day`), plus the first conversions
    at ``converted`` times. Days on which nothing happened are left out."""
    per_day = {d: dict(counts) for d, counts in days.items()}
    for ts in converted:
        day = per_day.setdefault(int(ts // 86_400), {})
        day["converted"] = day.get("converted", 0) + 1
    return [
        {"day": datetime.fromtimestamp(d * 86_400, UTC).date().isoformat()}
        | {stage: int(per_day[d].get(stage, 0)) for stage in DAY_STAGES}
        for d in sorted(per_day)
    ]


# --- the report -----------------------------------------------------------------------------


def _channels(per_kind: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for kind, counts in per_kind.items():
        stages = CHANNEL_STAGES.get(kind, ("delivered",))
        out[kind] = {s: int(counts.get(s, 0)) for s in stages} | {
            k: int(n) for k, n in sorted(counts.items()) if k not in stages and k != SEEN
        }
    return out


def _users(cohort: Iterable[Cohort], group: str) -> dict[str | None, set[str]]:
    out: dict[str | None, set[str]] = {}
    for c in cohort:
        if c.group == group:
            out.setdefault(c.variant, set()).add(c.user)
    return out


def campaign_stats(
    c: Campaign,
    counts: Mapping[str | None, Mapping[str, int]],
    channels: Mapping[str | None, Mapping[str, Mapping[str, int]]] | None = None,
    cohorts: Sequence[Cohort] = (),
    events: Sequence[tuple[str, float, Mapping[str, Any]]] = (),
    *,
    now: float = 0.0,
    rollout: Mapping[str, Any] | None = None,
    days: Mapping[int, Mapping[str, int]] | None = None,
    default_goal: Conversion | None = None,
) -> dict[str, Any]:
    """A campaign's report: funnels, channels, control and lift, retention, verdict, roll-out.

    Args:
        c: The campaign.
        counts: Per variant (``None`` when it has none), ``targeted``, ``sent`` and
            ``delivered`` (more stages are ignored: receipts come from ``channels``).
        channels: Per variant, per message kind (channel), ``delivered`` and each receipt kind,
            counted once per message.
        cohorts: Every recipient (``sent``), exposed user (``exposed``) and held-out user
            (``holdout``) with their start, see :class:`Cohort`.
        events: ``(user, ts, props)`` of the conversion event since the earliest start; ignored
            when the campaign has no conversion goal.
        now: The time retention windows are checked against.
        rollout: The stored roll-out state (None before the test started).
        days: Per UTC day, what the store counted that day (``by_day`` in the report).
        default_goal: What counts as a conversion when the campaign names no goal (the app's
            value event): conversions, control and lift are measured against it, marked
            ``"default": true``; variants are still compared on click-through.
    """
    channels = channels or {}
    conv = c.conversion or default_goal
    converted: dict[str, dict[tuple[str | None, str], float]] = {}
    if conv is not None:
        for group in ("sent", "exposed", "holdout"):
            converted[group] = first_conversions(
                [x for x in cohorts if x.group == group], events, conv.window_s, conv.where
            )
    names: list[str | None] = [v.name for v in c.variants] or [None]
    if c.control_share:
        names.append(CONTROL)
    holdout = _users(cohorts, "holdout")
    control_users = set().union(*holdout.values()) if holdout else set()
    control_conv = {u for _, u in converted.get("holdout", ())}
    funnels: dict[str, Funnel] = {}
    channel_json: dict[str, dict[str, dict[str, int]]] = {}
    for name in dict.fromkeys([*names, *counts, *channels]):
        n = counts.get(name, {})
        per_kind = channels.get(name, {})
        displayed = sum(k.get(SEEN, 0) for k in per_kind.values())
        # Delivered from the same read as displayed (one snapshot): never fewer.
        delivered = (sum(k.get("delivered", 0) for k in per_kind.values()) if per_kind
                     else n.get("delivered", 0))  # fmt: skip
        clicked = sum(k.get("clicked", 0) for k in per_kind.values())
        dismissed = sum(k.get("dismissed", 0) for k in per_kind.values())
        if name == CONTROL:
            got = len(control_conv)
        else:
            got = sum(1 for v, _ in converted.get("exposed", ()) if v == name)
        key = name or "default"
        funnels[key] = Funnel(
            targeted=n.get("targeted", 0), sent=n.get("sent", 0),
            delivered=delivered, displayed=displayed, clicked=clicked,
            dismissed=dismissed, converted=got,
        )  # fmt: skip
        channel_json[key] = _channels(per_kind)
    total = Funnel()
    total_channels: dict[str, dict[str, int]] = {}
    for name, f in funnels.items():
        if name == CONTROL:
            continue
        total = total + f
        for kind, stages in channel_json[name].items():
            into = total_channels.setdefault(kind, {})
            for stage, k in stages.items():
                into[stage] = into.get(stage, 0) + k
    tested = {v.name for v in c.variants}  # the base content a roll-out may send is no arm
    arms = {k: f for k, f in funnels.items() if k != CONTROL and (not tested or k in tested)}
    metric = "conversion" if c.conversion is not None else "ctr"
    variants_json = {k: f.to_json() | {"channels": channel_json[k]} for k, f in funnels.items()}
    control_arm = Arm(len(control_conv), len(control_users))
    control_json: dict[str, Any] | None = None
    if c.control_share or control_users:
        control_json = {
            "users": len(control_users),
            "converted": control_arm.conversions if conv is not None else None,
            "conversion_rate": control_arm.rate if conv is not None else None,
        }
        if CONTROL in variants_json:  # the holdout converts per user held out, not per display
            variants_json[CONTROL]["conversion_rate"] = control_arm.rate
    recipients = _users(cohorts, "sent")
    lifts: list[dict[str, Any]] = []
    if conv is not None and control_users:
        sent_conv = converted.get("sent", {})
        for name in names:
            if name == CONTROL:
                continue
            users = recipients.get(name, set())
            got = sum(1 for v, _ in sent_conv if v == name)
            lifts.append(lift(name or "default", Arm(got, len(users)), control_arm).to_json())
    groups: dict[str, list[Cohort]] = {}
    for x in cohorts:
        if x.group == "sent":
            groups.setdefault(x.variant or "default", []).append(x)
        elif x.group == "holdout":
            groups.setdefault(CONTROL, []).append(x)
    retention_json = {
        label: {g: retention(members, window, now).to_json() for g, members in groups.items()}
        for label, window in RETENTION_WINDOWS.items()
    }
    v = verdict(
        {k: _arm(f, metric) for k, f in arms.items()},
        metric=metric, min_sample=c.min_sample_per_variant,
    )  # fmt: skip
    return {
        "campaign": c.id,
        "status": str(c.status),
        "metric": metric,
        "conversion": None if conv is None else {
            "event": conv.event, "window_s": conv.window_s,
            "where": [{"prop": f.prop, "op": str(f.op), "value": f.value} for f in conv.where],
            "default": c.conversion is None,
        },
        "total": total.to_json() | {"channels": total_channels},
        "variants": variants_json,
        "control": control_json,
        "lift": lifts,
        "retention": retention_json,
        "comparisons": [
            {"variant": x.variant, "rate": x.rate, "baseline_rate": x.baseline_rate,
             "lift": x.lift, "z": x.z, "p_value": x.p_value}
            for x in compare_variants(arms, metric=metric)
        ] if len(arms) > 1 else [],
        "winner": v.winner,
        "verdict": v.to_json(),
        "rollout": _rollout_json(c, rollout),
        "by_day": by_day(days or {}, [
            ts for (v, _), ts in converted.get("exposed", {}).items() if v != CONTROL
        ]),
    }  # fmt: skip


def best_variant(funnels: Mapping[str, Funnel], metric: str) -> str:
    """The variant with the best observed rate (the first in order on a tie)."""
    return max(funnels, key=lambda k: _arm(funnels[k], metric).rate)


def _rollout_json(c: Campaign, state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    r = c.rollout
    if r is None:
        return None
    out: dict[str, Any] = {
        "test_share": r.test_share, "decide_after_s": r.decide_after_s,
        "at_deadline": str(r.at_deadline),
    }  # fmt: skip
    if state is None:
        return out | {"phase": "not_started"}
    out |= {k: state[k] for k in ("phase", "started_at", "deadline") if k in state}
    if state.get("phase") == "testing" and c.status is CampaignStatus.CANCELLED:
        # The check that would have ended the test went with the campaign: nothing more comes.
        out |= {"phase": "stopped", "detail": "cancelled during the test: the rest were not sent"}
    if state.get("phase") == "rolled_out":
        out |= {k: state.get(k) for k in ("variant", "decided_by", "detail", "decided_at")}
    return out
