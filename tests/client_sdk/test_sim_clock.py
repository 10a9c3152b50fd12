"""The simulated clock: pure time arithmetic on a fake real clock, and sleeps that re-plan."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.client_sdk import ClockState, SimClock
from tidings.protocol.simtime import SimTime


class Real:
    """A real-time source the test moves by hand."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_simulated_time_runs_speed_times_faster_than_real_time() -> None:
    real = Real()
    clock = SimTime(start=5_000.0, speed=3600, real=real)
    real.t += 2.0
    assert clock.now() == 5_000.0 + 7_200.0


def test_a_paused_clock_stands_still_and_resumes_where_it_stopped() -> None:
    real = Real()
    clock = SimTime(start=0.0, speed=10, real=real)
    real.t += 1.0
    clock.pause()
    real.t += 100.0
    assert clock.now() == 10.0
    assert clock.real_seconds(5.0) == float("inf")
    clock.resume()
    real.t += 1.0
    assert clock.now() == 20.0


def test_changing_the_speed_keeps_the_time_continuous() -> None:
    real = Real()
    clock = SimTime(start=0.0, speed=10, real=real)
    real.t += 1.0
    clock.set(speed=1000)
    assert clock.now() == 10.0
    real.t += 0.5
    assert clock.now() == 510.0
    assert clock.real_seconds(1000.0) == 1.0


def test_time_never_runs_backwards() -> None:
    real = Real()
    clock = SimTime(start=100.0, real=real)
    with pytest.raises(ValueError, match=r"now: .* never runs backwards"):
        clock.set(now=50.0)
    clock.set(now=500.0)
    assert clock.now() == 500.0
    # A follower given an older reading (another process paused a moment ago) stays put.
    clock.follow(ClockState(now=400.0, speed=1.0, paused=True, real=real.t))
    assert clock.now() == 500.0


@pytest.mark.parametrize("speed", [0, -1, float("nan"), 2_000_000, True, "fast"])
def test_a_bad_speed_is_refused_naming_the_field(speed: object) -> None:
    with pytest.raises(ValueError, match=r"^speed: "):
        SimTime(speed=1).set(speed=speed)  # type: ignore[arg-type]


def test_a_follower_reads_the_same_time_as_the_clock_it_follows() -> None:
    real = Real()
    leader = SimTime(start=0.0, speed=60, real=real)
    real.t += 3.0
    follower = SimTime(start=0.0, real=real)
    follower.follow(leader.state())
    real.t += 7.0
    assert follower.now() == leader.now() == 600.0


def test_listeners_hear_every_change() -> None:
    clock = SimTime(real=Real())
    heard: list[bool] = []
    clock.subscribe(lambda: heard.append(clock.paused))
    clock.pause()
    clock.set(speed=5)
    clock.resume()
    assert heard == [True, True, False]


async def test_a_sleeper_wakes_early_when_the_speed_goes_up() -> None:
    clock = SimClock(start=0.0, speed=1.0)
    sleeper = asyncio.create_task(clock.sleep(3600.0))  # an hour at real speed
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    clock.set(speed=100_000)  # the remaining hour now takes 36 ms
    await asyncio.wait_for(sleeper, 2.0)
    assert time.monotonic() - t0 < 1.0
    assert clock.now() >= 3600.0


async def test_a_sleeper_does_not_wake_while_the_clock_is_paused() -> None:
    clock = SimClock(start=0.0, speed=1_000.0)
    clock.pause()
    sleeper = asyncio.create_task(clock.sleep(1.0))  # 1 ms of real time, were it running
    await asyncio.sleep(0.1)
    assert not sleeper.done()
    clock.resume()
    await asyncio.wait_for(sleeper, 2.0)
    assert clock.now() >= 1.0


async def test_a_jump_forward_wakes_sleepers_that_are_due() -> None:
    clock = SimClock(start=0.0, speed=1.0)
    sleeper = asyncio.create_task(clock.sleep(86_400.0))
    await asyncio.sleep(0.01)
    clock.set(now=86_401.0)
    await asyncio.wait_for(sleeper, 1.0)


def test_a_reading_pins_the_time_at_the_real_instant_it_names() -> None:
    ticks = iter(range(1000, 2000))
    leader = SimTime(start=0.0, speed=7200, real=lambda: float(next(ticks)))
    state = leader.state()  # the real clock moves on between any two reads
    assert state.now == (state.real - 1000.0) * 7200
