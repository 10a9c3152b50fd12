"""Quiet hours: pure, table-driven, with real time zones and DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tidings.client_sdk import QuietHours
from tidings.protocol.errors import ConfigError


def at(tz: str, *args: int) -> float:
    return dt.datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()


NIGHT = QuietHours("22:00", "08:00", tz="Asia/Shanghai")


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        ((2026, 11, 22, 21, 59), False),
        ((2026, 11, 22, 22, 0), True),
        ((2026, 11, 22, 23, 30), True),
        ((2026, 11, 23, 0, 0), True),  # crosses midnight
        ((2026, 11, 23, 7, 59), True),
        ((2026, 11, 23, 8, 0), False),
        ((2026, 11, 23, 12, 0), False),
    ],
)
def test_a_window_across_midnight_in_shanghai(local: tuple[int, ...], quiet: bool) -> None:
    assert NIGHT.is_quiet(at("Asia/Shanghai", *local), device_tz="UTC") is quiet


def test_a_pinned_window_ignores_the_device_zone_and_a_floating_one_follows_it() -> None:
    floating = QuietHours("22:00", "08:00")
    instant = at("Asia/Shanghai", 2026, 11, 22, 23, 0)  # 10:00 in New York
    assert NIGHT.is_quiet(instant, device_tz="America/New_York")
    assert floating.is_quiet(instant, device_tz="Asia/Shanghai")
    assert not floating.is_quiet(instant, device_tz="America/New_York")  # a traveller


@pytest.mark.parametrize(
    ("local", "quiet"),
    [((2026, 1, 1, 12, 59), False), ((2026, 1, 1, 13, 0), True), ((2026, 1, 1, 14, 0), False)],
)
def test_a_window_inside_one_day(local: tuple[int, ...], quiet: bool) -> None:
    lunch = QuietHours("13:00", "14:00")
    assert lunch.is_quiet(at("Europe/Paris", *local), device_tz="Europe/Paris") is quiet


def test_equal_start_and_end_is_never_quiet() -> None:
    assert not QuietHours("08:00", "08:00").is_quiet(at("UTC", 2026, 1, 1, 8, 0))


def test_the_window_end_follows_dst_in_new_york() -> None:
    ny = QuietHours("22:00", "08:00")
    # The night of the 2026 spring-forward (8 March, 02:00 → 03:00): 22:00 EST → 08:00 EDT.
    start = at("America/New_York", 2026, 3, 7, 23, 0)
    assert ny.is_quiet(start, "America/New_York")
    end = ny.window_end(start, "America/New_York")
    assert dt.datetime.fromtimestamp(end, ZoneInfo("America/New_York")).hour == 8
    assert end - start == 8 * 3600  # one hour shorter than a usual 9-hour stretch
    # And in autumn (1 November 2026, 02:00 → 01:00) the same window lasts 11 hours.
    autumn = at("America/New_York", 2026, 10, 31, 22, 0)
    assert ny.window_end(autumn, "America/New_York") - autumn == 11 * 3600


@pytest.mark.parametrize("bad", ["25:00", "8", "", "ab:cd", "22:60", "7:00", None])
def test_bad_times_are_refused_with_the_field_named(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"quiet_hours\.start"):
        QuietHours(bad, "08:00")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["Mars/Base", "../../etc/passwd", "", "X" * 200])
def test_absurd_time_zones_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="tz"):
        QuietHours("22:00", "08:00", tz=bad)
