"""Send-time choice: when one user should get one campaign's message, as a pure function.

Policies (:class:`SendPolicy`):

- ``immediate``: now.
- ``fixed``: an absolute unix time (now if it already passed).
- ``user_local``: the next ``HH:MM`` on the user's own wall clock.
- ``best_time``: the user's most active local hour from the 24-bucket histogram (ties: the
  earliest hour; an empty histogram: ``default_hour``). If that hour is under way now, now.

An optional :class:`SendWindow` (e.g. 09:00-21:00 local) then moves a time outside the window to
the next opening. Local times follow the user's IANA zone with its DST rules: a wall time that a
spring-forward skips is sent at the same offset after the jump (02:30 becomes 03:30), an
ambiguous one at its first occurrence. Unknown zones count as UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tidings.server.targeting.profiles import Profile, best_hour, zone

__all__ = [
    "DEFAULT_SEND_HOUR",
    "SendPolicy",
    "SendWindow",
    "choose_send_time",
    "next_local_time",
    "parse_hhmm",
]

DEFAULT_SEND_HOUR = 19
"""Local hour used by ``best_time`` when the user has no activity yet (evening engagement)."""

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class SendPolicy(StrEnum):
    """How the send time of each user's message is chosen."""

    IMMEDIATE = "immediate"
    FIXED = "fixed"
    USER_LOCAL = "user_local"
    BEST_TIME = "best_time"


def parse_hhmm(text: str) -> int:
    """Return the minute of day of ``"HH:MM"`` (00:00-23:59); raise ValueError otherwise."""
    m = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"expected HH:MM, got {text!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True, slots=True)
class SendWindow:
    """Local wall-clock window ``[start, end)`` in minutes of day; may cross midnight."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < 1440 and 0 <= self.end < 1440) or self.start == self.end:
            raise ValueError("a send window needs two different times of day")

    @classmethod
    def parse(cls, start: str, end: str) -> SendWindow:
        """Build a window from ``"HH:MM"`` strings, e.g. ``SendWindow.parse("09:00", "21:00")``."""
        return cls(parse_hhmm(start), parse_hhmm(end))

    def to_json(self) -> dict[str, str]:
        """Return ``{"start": "HH:MM", "end": "HH:MM"}``."""
        return {"start": _hhmm(self.start), "end": _hhmm(self.end)}

    def contains(self, minute: int) -> bool:
        """Return True when the local minute of day is inside the window."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def next_local_time(now: float, tz: str, minute_of_day: int) -> float:
    """Return the first unix time >= ``now`` whose wall clock in ``tz`` reads ``minute_of_day``."""
    zi = zone(tz)
    local = datetime.fromtimestamp(now, zi)
    day = local.date()
    hour, minute = divmod(minute_of_day, 60)
    for offset in range(3):
        d = day + timedelta(days=offset)
        candidate = datetime(d.year, d.month, d.day, hour, minute, tzinfo=zi).timestamp()
        if candidate >= now:
            return candidate
    raise AssertionError("unreachable: a wall time recurs within two days")


def _clamp(t: float, tz: str, window: SendWindow | None) -> float:
    if window is None:
        return t
    local = datetime.fromtimestamp(t, zone(tz))
    if window.contains(local.hour * 60 + local.minute):
        return t
    return next_local_time(t, tz, window.start)


def choose_send_time(
    policy: SendPolicy,
    profile: Profile,
    now: float,
    *,
    at: float | None = None,
    local_time: int | None = None,
    default_hour: int = DEFAULT_SEND_HOUR,
    window: SendWindow | None = None,
) -> float:
    """Return the unix time at which ``profile``'s user should get the message.

    Args:
        policy: The campaign's send-time policy.
        profile: The user (time zone and active-hours histogram).
        now: Decision time.
        at: Absolute time for ``fixed``.
        local_time: Minute of day for ``user_local``.
        default_hour: Hour for ``best_time`` when the histogram is empty.
        window: Optional local send window applied last.
    """
    tz = profile.tz
    if policy is SendPolicy.IMMEDIATE:
        t = now
    elif policy is SendPolicy.FIXED:
        if at is None:
            raise ValueError("the fixed policy needs 'at'")
        t = max(at, now)
    elif policy is SendPolicy.USER_LOCAL:
        if local_time is None:
            raise ValueError("the user_local policy needs 'local_time'")
        t = next_local_time(now, tz, local_time)
    else:
        hour = best_hour(profile.active_hours, default_hour)
        in_hour = datetime.fromtimestamp(now, zone(tz)).hour == hour
        t = now if in_hour else next_local_time(now, tz, hour * 60)
    return _clamp(t, tz, window)
