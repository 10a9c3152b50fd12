"""Why a profile is not in a segment, or an event did not pass a trigger's filter, in words.

Pure functions for the decision log (``tidings why``): they name the first condition that did
not hold and, where the profile or event has one, the value it had instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tidings.server.targeting.profiles import Profile
from tidings.server.targeting.segments import (
    AllOf,
    AnyOf,
    Attr,
    EventSource,
    Field,
    LifecycleIn,
    Node,
    Not,
    PropFilter,
    Tag,
    TierIn,
    evaluate,
    field_value,
    to_text,
)
from tidings.server.targeting.segments import Event as EventCond

__all__ = ["failed_filter", "failed_part"]


def failed_part(
    node: Node, profile: Profile, now: float, events: EventSource | None = None
) -> str | None:
    """The part of segment ``node`` that ``profile`` does not match at ``now``, in words
    (``plan = "pro" did not hold (plan is "free")``), or None when it is in the segment."""
    if evaluate(node, profile, now, events):
        return None
    if isinstance(node, AllOf):
        for child in node.children:
            part = failed_part(child, profile, now, events)
            if part is not None:
                return part
    if isinstance(node, AnyOf):
        return f"none of: {to_text(node)}"
    if isinstance(node, Not):
        return f"{to_text(node)} did not hold"
    return f"{to_text(node)} did not hold{_actual(node, profile, now, events)}"


def failed_filter(where: Sequence[PropFilter], props: Mapping[str, Any]) -> str | None:
    """The first filter of a trigger's ``where`` the event's properties fail, in words, or
    None when they pass every one."""
    for f in where:
        if not f.matches(props):
            seen = "missing" if f.prop not in props else _show(props[f.prop])
            return (
                f"{to_text(_as_attr(f)).removeprefix('attr.')} did not hold ({f.prop} was {seen})"
            )
    return None


def _as_attr(f: PropFilter) -> Attr:
    return Attr(name=f.prop, op=f.op, value=f.value)


def _actual(node: Node, profile: Profile, now: float, events: EventSource | None) -> str:
    if isinstance(node, Attr):
        value = profile.attrs.get(node.name)
        return f" ({node.name} is {'missing' if value is None else _show(value)})"
    if isinstance(node, Field):
        return f" ({node.field} is {_show(field_value(profile, node.field))})"
    if isinstance(node, Tag):
        tags = ", ".join(sorted(profile.tags)) or "none"
        return f" (tags: {tags})"
    if isinstance(node, LifecycleIn):
        return f" (lifecycle is {profile.lifecycle})"
    if isinstance(node, TierIn):
        return f" (tier is {profile.tier})"
    if isinstance(node, EventCond) and events is not None:
        return f" ({node.agg} was {_show(events(profile.user_id, node, now))})"
    return ""


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
