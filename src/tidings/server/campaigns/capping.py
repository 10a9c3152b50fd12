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
3. one marketing cap, chosen by the resolution rule below (``capped_lifecycle`` /
   ``capped_tier``);
4. an optional minimum gap between two marketing messages (``capped_gap``).

Which marketing cap binds a user (:func:`marketing_cap`): **the cap of the user's lifecycle
stage when the app sets one for that stage, else the cap of their value tier.** Exactly one
applies, never both: how active a user is decides first (the seeds set frequency by activity),
and the value tier refines it for stages without a cap of their own (``new`` by default).

Default marketing caps (seeds: highly active users 3-4 a week, ordinary users 1-2 a week,
dormant users 2 a month), counted over every category except the bypass ones; each app may
change them (:class:`~tidings.server.policy.AppPolicy`, ``[apps.caps]`` in the TOML,
``PUT /v1/settings``):

==================  ==============  =================================================
who                 cap             why
==================  ==============  =================================================
lifecycle active    4 per 7 days    the seeds' highly active users, whatever their tier
lifecycle dormant   2 per 30 days   the seeds' dormant users
lifecycle churned   1 per 30 days   one win-back attempt a month, not a spam stream
lifecycle new       (tier decides)  a first-week user is capped by what they bought:
tier high_value     4 per 7 days    bought often or much, recently
tier potential      3 per 7 days    between high-value and basic: being nurtured
tier basic          2 per 7 days    the seeds' ordinary users
tier dormant        2 per 30 days   bought before, not for 90 days
==================  ==============  =================================================

So with the defaults an active user gets at most 4 a week whether they ever bought or not, a
new user who never bought 2 a week, and a dormant or churned user 2 (1) a month.
"""

from __future__ import annotations

from tidings.server.campaigns.model import Campaign, Decision, Reason
from tidings.server.policy import (
    DEFAULT_CAPS,
    DEFAULT_LIFECYCLE_CAPS,
    DEFAULT_TIER_CAPS,
    MONTH,
    WEEK,
    CapConfig,
    CapRule,
)
from tidings.server.storage import Limit
from tidings.server.targeting.profiles import Profile, allows

__all__ = [
    "DEFAULT_CAPS",
    "DEFAULT_LIFECYCLE_CAPS",
    "DEFAULT_TIER_CAPS",
    "MONTH",
    "WEEK",
    "CapConfig",
    "CapRule",
    "limits_for",
    "marketing_cap",
]


def marketing_cap(
    profile: Profile, config: CapConfig = DEFAULT_CAPS
) -> tuple[CapRule | None, Reason, str]:
    """The one marketing cap that binds this user: their lifecycle stage's, else their tier's.

    Returns the rule (None: no cap), the reason a refusal under it gives, and who it binds.
    """
    stage = config.lifecycle_caps.get(profile.lifecycle)
    if stage is not None:
        return stage, Reason.CAPPED_LIFECYCLE, str(profile.lifecycle)
    return config.tier_caps.get(profile.tier), Reason.CAPPED_TIER, str(profile.tier)


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
    rule, reason, who = marketing_cap(profile, config)
    if rule is not None:
        out.append(Limit(rule.limit, rule.window_s, str(reason), f"{who}: {rule}",
                         uncounted=config.bypass))  # fmt: skip
    if config.min_gap_s is not None:
        out.append(Limit(1, config.min_gap_s, str(Reason.CAPPED_GAP),
                         f"at least {config.min_gap_s} s between marketing messages",
                         uncounted=config.bypass))  # fmt: skip
    return tuple(out)
