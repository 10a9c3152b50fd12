"""When a banner may be shown: quiet hours, local caps, minimum gap, expiry (pure policy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tidings.client_sdk.quiet_hours import QuietHours
from tidings.protocol.frames import Message

__all__ = [
    "DEFAULT_MAX_SHOWN_AFTER_QUIET",
    "BannerPolicy",
    "Verdict",
    "decide",
    "held_expiry",
    "release",
]

DEFAULT_MAX_SHOWN_AFTER_QUIET = 3
"""Banners shown, newest first, when quiet hours end; older held ones stay in the inbox."""

Verdict = Literal["show", "hold", "drop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BannerPolicy:
    """On-device display rules.

    Attributes:
        max_per_hour: At most this many banners in any rolling hour (None: no cap).
        min_gap_s: At least this many seconds between two banners.
        max_shown_after_quiet: How many held banners to show when quiet hours end.
        allow_urgent_bypass: Urgent transactional messages ignore quiet hours and caps.
    """

    max_per_hour: int | None = None
    min_gap_s: float = 0.0
    max_shown_after_quiet: int = DEFAULT_MAX_SHOWN_AFTER_QUIET
    allow_urgent_bypass: bool = True


def _urgent(msg: Message) -> bool:
    return msg.priority == "urgent" and msg.category == "transactional"


def decide(
    msg: Message,
    now: float,
    *,
    policy: BannerPolicy,
    quiet: QuietHours | None,
    device_tz: str,
    shown_at: Sequence[float],
) -> Verdict:
    """Show the banner now, hold it for later, or drop it (expired).

    Args:
        msg: The message with a banner.
        now: Unix seconds on the device clock.
        shown_at: When earlier banners were shown (any order).
    """
    if msg.expires_at and msg.expires_at <= now * 1000:
        return "drop"
    if policy.allow_urgent_bypass and _urgent(msg):
        return "show"
    if quiet is not None and quiet.is_quiet(now, device_tz):
        return "hold"
    if shown_at:
        if now - max(shown_at) < policy.min_gap_s:
            return "hold"
        if policy.max_per_hour is not None:
            recent = sum(1 for t in shown_at if now - t < 3600)
            if recent >= policy.max_per_hour:
                return "hold"
    return "show"


def release(
    held: Sequence[Message], now: float, *, policy: BannerPolicy
) -> tuple[list[Message], list[Message]]:
    """When a hold ends: the banners to show (newest first) and the ones left in the inbox.

    Expired ones are never shown.
    """
    live = [m for m in held if not (m.expires_at and m.expires_at <= now * 1000)]
    live.sort(key=lambda m: (m.created_at, m.id), reverse=True)
    n = max(0, policy.max_shown_after_quiet)
    return live[:n], live[n:]


def held_expiry(msg: Message, now: float, *, quiet: QuietHours | None, device_tz: str) -> int:
    """When a banner held now expires (Unix ms).

    A banner whose lifetime is the server's default (``msg.ttl_default``) held by quiet hours
    keeps that whole lifetime after the window ends, so a message sent at night is still seen
    in the morning. A lifetime the sender chose (a flash sale ending at midnight) is kept as
    sent, even if that means the banner expires unseen during the quiet hours.
    """
    if not msg.ttl_default or not msg.expires_at or quiet is None:
        return msg.expires_at
    if not quiet.is_quiet(now, device_tz):
        return msg.expires_at
    lifetime = max(0, msg.expires_at - msg.created_at)
    window_end_ms = int(quiet.window_end(now, device_tz) * 1000)
    return max(msg.expires_at, window_end_ms + lifetime)
