"""The simulator engine on the simulated clock: a real gateway process and devices that live."""

from __future__ import annotations

import time

import pytest

from tidings.simulator.engine.sim import AdminError, SimEngine


def test_the_engine_pauses_speeds_up_and_resumes_the_clock_of_gateway_and_devices() -> None:
    engine = SimEngine(12, workers=1, speed=3600)
    try:
        engine.start()
        running = engine.clock_state()
        assert running.speed == 3600 and not running.paused
        engine.pause()
        paused = engine.clock_state()
        time.sleep(0.3)
        assert engine.clock_state().now == paused.now and paused.paused
        snap = engine.sample()
        assert snap.paused and snap.sim_time == paused.now and snap.connected == 12
        engine.set_speed(86_400)
        engine.resume()
        time.sleep(0.5)
        day_later = engine.clock_state()
        assert day_later.speed == 86_400 and day_later.now > paused.now + 30_000
        # The devices lived through the simulated hours: sessions, and events at the gateway.
        snap = engine.sample()
        assert snap.sessions > 0 and (snap.events or 0) > 0
        dist = engine.distribution()
        assert sum(dist["lifecycle"].values()) == 12 == sum(dist["tier"].values())
        with pytest.raises(AdminError) as err:
            engine.set_speed(0)
        assert err.value.field == "speed"
    finally:
        engine.stop()
