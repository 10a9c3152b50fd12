"""Campaigns: the campaign model, caps, variants, templates, send times and funnel stats.

Pure functions and frozen values with an injected ``now``, and :class:`CampaignEngine`, which
runs campaigns against the store over its :class:`~tidings.server.targeting.Audience` and hands
messages to the node for fan-out.
"""

from __future__ import annotations

from tidings.server.campaigns.capping import (
    DEFAULT_CAPS,
    CapConfig,
    CapRule,
    limits_for,
    marketing_cap,
)
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.campaigns.model import (
    CONTROL,
    Action,
    Campaign,
    CampaignError,
    CampaignKind,
    CampaignStatus,
    Category,
    Content,
    ContentKind,
    Conversion,
    Decision,
    Frequency,
    Priority,
    Reason,
    Schedule,
    SendTime,
    TimeWindow,
    Trigger,
    Unless,
    Variant,
)
from tidings.server.campaigns.sendtime import SendPolicy, SendWindow, choose_send_time
from tidings.server.campaigns.stats import (
    Comparison,
    Funnel,
    Stage,
    campaign_stats,
    compare_variants,
    winner,
)
from tidings.server.campaigns.templates import (
    DEFAULT_LIMITS,
    ContentLimits,
    Rendered,
    TemplateError,
    event_context,
    render,
    render_content,
    user_context,
    validate,
    validate_campaign,
    validate_content,
)
from tidings.server.campaigns.variants import Arm, assign, bucket, pick_winner, significance

__all__ = [
    "CONTROL",
    "DEFAULT_CAPS",
    "DEFAULT_LIMITS",
    "Action",
    "Arm",
    "Campaign",
    "CampaignEngine",
    "CampaignError",
    "CampaignKind",
    "CampaignStatus",
    "CapConfig",
    "CapRule",
    "Category",
    "Comparison",
    "Content",
    "ContentKind",
    "ContentLimits",
    "Conversion",
    "Decision",
    "Frequency",
    "Funnel",
    "Priority",
    "Reason",
    "Rendered",
    "Schedule",
    "SendPolicy",
    "SendTime",
    "SendWindow",
    "Stage",
    "TemplateError",
    "TimeWindow",
    "Trigger",
    "Unless",
    "Variant",
    "assign",
    "bucket",
    "campaign_stats",
    "choose_send_time",
    "compare_variants",
    "event_context",
    "limits_for",
    "marketing_cap",
    "pick_winner",
    "render",
    "render_content",
    "significance",
    "user_context",
    "validate",
    "validate_campaign",
    "validate_content",
    "winner",
]
