"""Frequency capping and consent: may this user get this campaign's message now?

:func:`check` is a pure function of the user's send history, profile, the campaign, the
campaign's sent total and an injected ``now``. It answers with a
:class:`~tidings.server.campaigns.model.Decision` whose reason goes to the decision log, and for
caps a ``retry_at`` (when the oldest counted message leaves the window).

Checks, in order:

1. consent: a user who opted out of the message's category is never targeted
   (``opted_out``); ``transactional`` messages skip this and every marketing cap;
2. total budget (``budget_exhausted``);
3. the campaign's own per-user limit (``capped_campaign``);
4. the marketing caps of the user's value tier and lifecycle stage; both apply and the
   stricter wins (``capped_tier`` / ``capped_lifecycle``).

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tidings.server.campaigns.model import Campaign, Decision, Reason
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
    "check",
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
    """Cap tables of one app; categories in ``bypass`` are neither capped nor counted."""

    tier_caps: Mapping[Tier, CapRule] = field(default_factory=lambda: DEFAULT_TIER_CAPS)
    lifecycle_caps: Mapping[Lifecycle, CapRule] = field(
        default_factory=lambda: DEFAULT_LIFECYCLE_CAPS
    )
    bypass: frozenset[str] = frozenset({TRANSACTIONAL})


DEFAULT_CAPS = CapConfig()


def _in_window(stamps: Iterable[float], now: float, window_s: float) -> list[float]:
    return [t for t in stamps if now - window_s < t <= now]


def _cap(
    rule: CapRule | None, marketing: list[float], now: float, reason: Reason, who: str
) -> Decision | None:
    if rule is None:
        return None
    recent = _in_window(marketing, now, rule.window_s)
    if len(recent) < rule.limit:
        return None
    # Free again when enough of the counted messages have left the window.
    recent.sort()
    retry = recent[len(recent) - rule.limit] + rule.window_s
    return Decision(False, reason, f"{who}: {rule}", retry)


def check(
    history: Mapping[str, Iterable[float]],
    profile: Profile,
    campaign: Campaign,
    now: float,
    *,
    campaign_history: Iterable[float] = (),
    campaign_sent_total: int = 0,
    config: CapConfig = DEFAULT_CAPS,
) -> Decision:
    """Decide whether ``campaign`` may send to ``profile``'s user at ``now``.

    Args:
        history: Unix times of messages already sent to the user, by category.
        profile: The user's profile (consent, tier, lifecycle).
        campaign: The campaign (category, frequency limits, budget).
        now: Decision time.
        campaign_history: Unix times this campaign already sent to this user.
        campaign_sent_total: Messages this campaign sent to everyone so far.
        config: The app's cap tables.
    """
    category = campaign.content.category
    bypass = category in config.bypass
    if not bypass and not allows(profile, category):
        return Decision(False, Reason.OPTED_OUT, f"opted out of {category}")

    freq = campaign.frequency
    if freq.total_budget is not None and campaign_sent_total >= freq.total_budget:
        return Decision(False, Reason.BUDGET_EXHAUSTED, f"budget of {freq.total_budget} used")

    if freq.per_user_limit is not None:
        stamps = list(campaign_history)
        window = freq.per_user_window_s
        if window is None:
            if len(stamps) >= freq.per_user_limit:
                return Decision(
                    False, Reason.CAPPED_CAMPAIGN, f"campaign: {freq.per_user_limit} per user"
                )
        else:
            decision = _cap(
                CapRule(freq.per_user_limit, window),
                stamps,
                now,
                Reason.CAPPED_CAMPAIGN,
                "campaign",
            )
            if decision is not None:
                return decision

    if bypass:
        return Decision(True, Reason.SENT, "transactional: marketing caps do not apply")

    marketing = [t for cat, stamps in history.items() if cat not in config.bypass for t in stamps]
    tier = _cap(
        config.tier_caps.get(profile.tier), marketing, now, Reason.CAPPED_TIER, profile.tier
    )
    stage = _cap(
        config.lifecycle_caps.get(profile.lifecycle),
        marketing,
        now,
        Reason.CAPPED_LIFECYCLE,
        profile.lifecycle,
    )
    if tier is not None and stage is not None:
        # Both bind: report the one that keeps the user capped longer.
        return tier if (tier.retry_at or 0) >= (stage.retry_at or 0) else stage
    return tier or stage or Decision(True, Reason.SENT)
