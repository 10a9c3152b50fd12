"""Frequency capping and consent: which limits a send to this user must still fit?

:func:`limits_for` is a pure function of the user's profile, the message's category and the
campaign. It answers with a :class:`~tidings.server.campaigns.model.Decision` when the user
may not be asked at all (``opted_out``), or with the :class:`~tidings.server.storage.Limit` s
that the store checks and consumes inside the transaction that records the send: counting
happens where the sends are, so caps hold under any concurrency and on any number of nodes,
and a direct marketing send counts the moment it is stored. The campaign's total budget is
checked the same way (:attr:`~tidings.server.storage.Outcome.budget`).

In order:

1. consent: a user who opted out of the message's category is never targeted
   (``opted_out``); ``transactional`` messages skip this and every marketing cap;
2. the campaign's own per-user limit (``capped_campaign``);
3. the marketing caps of the user's value tier and lifecycle stage; both apply, and when both
   are reached the store reports the one with the longer window (``capped_tier`` /
   ``capped_lifecycle``);
4. an optional minimum gap between two marketing messages (``capped_gap``).

Default marketing caps (seeds: highly active users 3-4 a week, ordinary users 1-2 a week,
dormant users 2 a month), counted over every category except the bypass ones:

=================  ==============  ==================================================
who                cap             why
=================  ==============  ==================================================
tier high_value    4 per 7 days    the seeds' "highly active" figure
tier potential     3 per 7 days    between high-value and basic: being nurtured
tier basic         2 per 7 days    the seeds' ordinary users
tier dormant       2 per 30 days   bought before, not for 90 days
lifecycle new      3 per 7 days    onboarding, without drowning a first-week user
lifecycle dormant  2 per 30 days   the seeds' dormant users
lifecycle churned  1 per 30 days   one win-back attempt a month, not a spam stream
=================  ==============  ==================================================

``active`` lifecycle adds no cap of its own: the tier decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tidings.server.campaigns.model import Campaign, Decision, Reason
from tidings.server.storage import Limit
from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import TRANSACTIONAL, Profile, allows

__all__ = [
    "DEFAULT_CAPS",
    "DEFAULT_LIFECYCLE_CAPS",
    "DEFAULT_TIER_CAPS",
    "MONTH",
    "WEEK",
    "CapConfig",
    "CapRule",
    "limits_for",
]

WEEK = 7 * 86_400
MONTH = 30 * 86_400


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most ``limit`` marketing messages within the last ``window_s`` seconds."""

    limit: int
    window_s: int

    def __str__(self) -> str:
        days = self.window_s / 86_400
        return f"{self.limit} per {days:g} days"


DEFAULT_TIER_CAPS: Mapping[Tier, CapRule] = MappingProxyType(
    {
        Tier.HIGH_VALUE: CapRule(4, WEEK),
        Tier.POTENTIAL: CapRule(3, WEEK),
        Tier.BASIC: CapRule(2, WEEK),
        Tier.DORMANT: CapRule(2, MONTH),
    }
)

DEFAULT_LIFECYCLE_CAPS: Mapping[Lifecycle, CapRule] = MappingProxyType(
    {
        Lifecycle.NEW: CapRule(3, WEEK),
        Lifecycle.DORMANT: CapRule(2, MONTH),
        Lifecycle.CHURNED: CapRule(1, MONTH),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapConfig:
    """Cap tables of one app; categories in ``bypass`` are neither capped nor counted.

    ``min_gap_s``: at least this long between two marketing messages to one user (None: no
    gap beyond the caps).
    """

    tier_caps: Mapping[Tier, CapRule] = field(default_factory=lambda: DEFAULT_TIER_CAPS)
    lifecycle_caps: Mapping[Lifecycle, CapRule] = field(
        default_factory=lambda: DEFAULT_LIFECYCLE_CAPS
    )
    bypass: frozenset[str] = frozenset({TRANSACTIONAL})
    min_gap_s: int | None = None


DEFAULT_CAPS = CapConfig()


def limits_for(
    profile: Profile,
    category: str,
    *,
    campaign: Campaign | None = None,
    config: CapConfig = DEFAULT_CAPS,
) -> Decision | tuple[Limit, ...]:
    """What stands between ``profile``'s user and a message of ``category`` now.

    Returns a refusal (opted out), or the limits the store must find room under at commit.
    """
    bypass = category in config.bypass
    if not bypass and not allows(profile, category):
        return Decision(False, Reason.OPTED_OUT, f"opted out of {category}")
    out: list[Limit] = []
    freq = campaign.frequency if campaign is not None else None
    if campaign is not None and freq is not None and freq.per_user_limit is not None:
        window = freq.per_user_window_s
        per_user = (
            f"{freq.per_user_limit} per user"
            if window is None
            else str(CapRule(freq.per_user_limit, window))
        )
        out.append(Limit(freq.per_user_limit, window, str(Reason.CAPPED_CAMPAIGN),
                         f"campaign: {per_user}", campaign=campaign.id))  # fmt: skip
    if bypass:
        return tuple(out)
    for rule, reason, who in (
        (config.tier_caps.get(profile.tier), Reason.CAPPED_TIER, profile.tier),
        (config.lifecycle_caps.get(profile.lifecycle), Reason.CAPPED_LIFECYCLE, profile.lifecycle),
    ):
        if rule is not None:
            out.append(Limit(rule.limit, rule.window_s, str(reason), f"{who}: {rule}",
                             uncounted=config.bypass))  # fmt: skip
    if config.min_gap_s is not None:
        out.append(Limit(1, config.min_gap_s, str(Reason.CAPPED_GAP),
                         f"at least {config.min_gap_s} s between marketing messages",
                         uncounted=config.bypass))  # fmt: skip
    return tuple(out)
