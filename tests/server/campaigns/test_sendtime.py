"""Send-time choice: policies, best time, send windows, time zones and DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tidings.server.campaigns.sendtime import (
    SendPolicy,
    SendWindow,
    choose_send_time,
    next_local_time,
    parse_hhmm,
)
from tidings.server.targeting.profiles import Profile

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")


def ts(tz: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def user(tz: str = "Asia/Shanghai", hours: tuple[int, ...] = (0,) * 24) -> Profile:
    return Profile(app="shop", user_id="u1", tz=tz, active_hours=hours)


def hist(*pairs: tuple[int, int]) -> tuple[int, ...]:
    h = [0] * 24
    for hour, n in pairs:
        h[hour] = n
    return tuple(h)


NOW = ts(SH, 2024, 5, 1, 10, 30)


@pytest.mark.parametrize(
    ("policy", "kwargs", "expected"),
    [
        (SendPolicy.IMMEDIATE, {}, NOW),
        (SendPolicy.FIXED, {"at": NOW + 600}, NOW + 600),
        (SendPolicy.FIXED, {"at": NOW - 600}, NOW),
        (SendPolicy.USER_LOCAL, {"local_time": 12 * 60}, ts(SH, 2024, 5, 1, 12, 0)),
        (SendPolicy.USER_LOCAL, {"local_time": 9 * 60}, ts(SH, 2024, 5, 2, 9, 0)),
        (SendPolicy.USER_LOCAL, {"local_time": 10 * 60 + 30}, NOW),
    ],
)
def test_policies(policy: SendPolicy, kwargs: dict[str, int | float], expected: float) -> None:
    assert choose_send_time(policy, user(), NOW, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (hist((20, 5), (8, 3)), ts(SH, 2024, 5, 1, 20, 0)),
        (hist((8, 5), (20, 5)), ts(SH, 2024, 5, 2, 8, 0)),  # tie: the earliest hour
        (hist((10, 1)), NOW),  # the best hour is under way
        (hist(), ts(SH, 2024, 5, 1, 19, 0)),  # no activity: the default hour
    ],
)
def test_best_time(hours: tuple[int, ...], expected: float) -> None:
    assert choose_send_time(SendPolicy.BEST_TIME, user(hours=hours), NOW) == expected


@pytest.mark.parametrize(
    ("local", "window", "expected"),
    [
        ((2024, 5, 1, 10, 30), ("09:00", "21:00"), (2024, 5, 1, 10, 30)),
        ((2024, 5, 1, 7, 0), ("09:00", "21:00"), (2024, 5, 1, 9, 0)),
        ((2024, 5, 1, 21, 0), ("09:00", "21:00"), (2024, 5, 2, 9, 0)),
        ((2024, 5, 1, 23, 59), ("09:00", "21:00"), (2024, 5, 2, 9, 0)),
        ((2024, 5, 1, 23, 0), ("22:00", "02:00"), (2024, 5, 1, 23, 0)),  # crosses midnight
        ((2024, 5, 1, 1, 0), ("22:00", "02:00"), (2024, 5, 1, 1, 0)),
        ((2024, 5, 1, 12, 0), ("22:00", "02:00"), (2024, 5, 1, 22, 0)),
    ],
)
def test_send_window_moves_times_outside_it_to_the_next_opening(
    local: tuple[int, ...], window: tuple[str, str], expected: tuple[int, ...]
) -> None:
    now = ts(SH, *local)
    got = choose_send_time(SendPolicy.IMMEDIATE, user(), now, window=SendWindow.parse(*window))
    assert got == ts(SH, *expected)


def test_window_applies_after_best_time() -> None:
    p = user(hours=hist((23, 9)))
    got = choose_send_time(SendPolicy.BEST_TIME, p, NOW, window=SendWindow.parse("09:00", "21:00"))
    assert got == ts(SH, 2024, 5, 2, 9, 0)


@pytest.mark.parametrize(
    ("now", "minute", "expected_utc"),
    [
        # 2024-03-10: New York springs forward at 02:00 -> 03:00 (EST -5 to EDT -4).
        (ts(NY, 2024, 3, 9, 12, 0), 9 * 60, datetime(2024, 3, 10, 13, 0).timestamp()),
        (ts(NY, 2024, 3, 9, 12, 0), 2 * 60 + 30, datetime(2024, 3, 10, 7, 30).timestamp()),
        # 2024-11-03: falls back at 02:00 -> 01:00; 01:30 happens twice, the first one wins.
        (ts(NY, 2024, 11, 2, 12, 0), 1 * 60 + 30, datetime(2024, 11, 3, 5, 30).timestamp()),
        (ts(NY, 2024, 11, 2, 12, 0), 9 * 60, datetime(2024, 11, 3, 14, 0).timestamp()),
    ],
)
def test_user_local_times_follow_dst(now: float, minute: int, expected_utc: float) -> None:
    from datetime import UTC

    got = next_local_time(now, "America/New_York", minute)
    assert datetime.fromtimestamp(got, UTC).replace(tzinfo=None).timestamp() == expected_utc


def test_absurd_time_zones_count_as_utc() -> None:
    assert next_local_time(0, "Mars/Olympus", 60) == 3600
    assert next_local_time(0, "", 60) == 3600


@pytest.mark.parametrize("bad", ["24:00", "9:00", "09:60", "", "noon"])
def test_bad_times_of_day_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hhmm(bad)


def test_windows_need_two_different_times() -> None:
    with pytest.raises(ValueError):
        SendWindow.parse("09:00", "09:00")
    assert SendWindow.parse("09:00", "21:00").to_json() == {"start": "09:00", "end": "21:00"}
