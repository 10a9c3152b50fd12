"""The simulator TUI driven with Textual's pilot over a real (small) fleet."""

from __future__ import annotations

import time

from textual.widgets import Input, Static
from tidings.simulator.app import make_app


async def _until(pilot, predicate, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.1)


async def test_compose_a_message_watch_it_deliver_and_open_a_device() -> None:
    app = make_app(devices=12, workers=1)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.snapshot.connected == 12)
        await pilot.press("c")
        app.query_one("#title", Input).value = "Spring sale"
        app.query_one("#body", Input).value = "20% off shoes"
        await pilot.click("#send")
        await _until(pilot, lambda: app.snapshot.received >= 12)
        assert "deliveries 12" in str(app.query_one("#deliveries", Static).render())
        await pilot.press("d")
        await pilot.press("down", "enter")  # the second device
        view = app.query_one("#device-view", Static)
        await _until(pilot, lambda: "Spring sale" in str(view.render()))
        assert "d1" in str(view.render())
