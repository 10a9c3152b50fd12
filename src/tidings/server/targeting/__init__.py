"""Targeting: profiles, behaviour tags, lifecycle and value tiers, segments and their index.

Everything here but :class:`Audience` is pure or an in-memory state machine driven with explicit
times: no sockets, no SQL, no event loop. :class:`Audience` holds those machines live for every
app: it rebuilds them from the store at start, is fed what users do and say, reads the store
for segments' event conditions and stores tag rules (through the ``Store`` protocol, never SQL).
"""

from __future__ import annotations

from tidings.server.targeting.audience import Audience
from tidings.server.targeting.index import ProfileIndex
from tidings.server.targeting.lifecycle import (
    DEFAULT_THRESHOLDS,
    Lifecycle,
    Thresholds,
    Tier,
    lifecycle,
    next_change_at,
    value_tier,
)
from tidings.server.targeting.profiles import (
    TRANSACTIONAL,
    Profile,
    allows,
    apply_attributes,
    apply_device,
    apply_event,
    best_hour,
    local_hour,
    new_profile,
    reclassify,
    set_consent,
    with_tags,
)
from tidings.server.targeting.segments import (
    AllOf,
    AnyOf,
    Attr,
    Consent,
    Event,
    EventSource,
    Field,
    LastSeen,
    LifecycleIn,
    Node,
    Not,
    Op,
    PropFilter,
    SegmentError,
    SegmentSyntaxError,
    Tag,
    TierIn,
    evaluate,
    from_json,
    parse,
    to_json,
    to_text,
)
from tidings.server.targeting.tags import TagChanges, TagEngine, TagRule, TagRuleError, Threshold

__all__ = [
    "DEFAULT_THRESHOLDS",
    "TRANSACTIONAL",
    "AllOf",
    "AnyOf",
    "Attr",
    "Audience",
    "Consent",
    "Event",
    "EventSource",
    "Field",
    "LastSeen",
    "Lifecycle",
    "LifecycleIn",
    "Node",
    "Not",
    "Op",
    "Profile",
    "ProfileIndex",
    "PropFilter",
    "SegmentError",
    "SegmentSyntaxError",
    "Tag",
    "TagChanges",
    "TagEngine",
    "TagRule",
    "TagRuleError",
    "Threshold",
    "Thresholds",
    "Tier",
    "TierIn",
    "allows",
    "apply_attributes",
    "apply_device",
    "apply_event",
    "best_hour",
    "evaluate",
    "from_json",
    "lifecycle",
    "local_hour",
    "new_profile",
    "next_change_at",
    "parse",
    "reclassify",
    "set_consent",
    "to_json",
    "to_text",
    "value_tier",
    "with_tags",
]
