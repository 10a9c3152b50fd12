"""On-device quiet hours: a local time window when banners are held (pure functions)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tidings.protocol.errors import ConfigError

__all__ = ["QuietHours", "zone"]

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAX_TZ_LEN = 64


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ConfigError naming it when unknown."""
    if not isinstance(name, str) or not name or len(name) > _MAX_TZ_LEN or ".." in name:
        raise ConfigError(f"tz: {str(name)[:_MAX_TZ_LEN]!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"tz: unknown time zone {name!r} (use an IANA name like 'Asia/Shanghai')"
        ) from None


def _minutes(text: str, name: str) -> int:
    m = _HHMM.match(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(f"quiet_hours.{name}: {str(text)[:20]!r} is not a time like '22:00'")
    return int(m.group(1)) * 60 + int(m.group(2))


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window, e.g. ``QuietHours("22:00", "08:00")``, that may cross midnight.

    Args:
        start: Local time the window opens, ``"HH:MM"``.
        end: Local time it closes. ``start == end`` means never quiet.
        tz: Pin the window to this IANA zone; ``None`` follows the device's current zone,
            so a traveller's quiet hours move with them.
    """

    start: str
    end: str
    tz: str | None = None
    _start_min: int = field(init=False, repr=False, compare=False)
    _end_min: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_start_min", _minutes(self.start, "start"))
        object.__setattr__(self, "_end_min", _minutes(self.end, "end"))
        if self.tz is not None:
            zone(self.tz)

    def _zone(self, device_tz: str) -> ZoneInfo:
        return zone(self.tz or device_tz or "UTC")

    def is_quiet(self, now: float, device_tz: str = "UTC") -> bool:
        """Whether ``now`` (Unix seconds) falls inside the window in the applicable zone."""
        if self._start_min == self._end_min:
            return False
        local = dt.datetime.fromtimestamp(now, self._zone(device_tz))
        minute = local.hour * 60 + local.minute
        if self._start_min < self._end_min:
            return self._start_min <= minute < self._end_min
        return minute >= self._start_min or minute < self._end_min

    def window_end(self, now: float, device_tz: str = "UTC") -> float:
        """The next moment after ``now`` when the window closes (DST-correct)."""
        return self._next_local(now, self._end_min, device_tz)

    def next_start(self, now: float, device_tz: str = "UTC") -> float:
        """The next moment after ``now`` when the window opens."""
        return self._next_local(now, self._start_min, device_tz)

    def _next_local(self, now: float, minute_of_day: int, device_tz: str) -> float:
        tz = self._zone(device_tz)
        local = dt.datetime.fromtimestamp(now, tz)
        for days in range(3):
            day = local.date() + dt.timedelta(days=days)
            naive = dt.datetime.combine(day, dt.time(minute_of_day // 60, minute_of_day % 60))
            # fold=0: an ambiguous fall-back time means its first occurrence; a time skipped
            # by spring-forward maps to just after the jump (zoneinfo's normalisation).
            when = naive.replace(tzinfo=tz).astimezone(dt.UTC).timestamp()
            if when > now:
                return when
        raise AssertionError("unreachable: a daily time recurs within three days")
