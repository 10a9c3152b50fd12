"""The simulator TUI driven with Textual's pilot over a real (small) fleet and gateway."""

from __future__ import annotations

import time
from collections.abc import Callable

from helpers import timeout
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from tidings.client_sdk.ui import InboxList
from tidings.simulator.app import SimApp, make_app
from tidings.simulator.engine.sim import LIFECYCLE_STAGES, TIERS
from tidings.simulator.screens import CampaignsScreen, ComposerScreen, DeviceScreen, DevicesScreen
from tidings.simulator.widgets import (
    ClockBar,
    DeviceList,
    DistributionChart,
    FunnelView,
    MetricTile,
)

DEVICES = 12
SIZE = (130, 42)


async def _until(pilot: Pilot[None], predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.1)


def _text(app: SimApp, selector: str) -> str:
    if selector == "#inbox":
        return "\n".join(app.screen.query_one(selector, InboxList).lines())
    return str(app.screen.query_one(selector, Static).content)


def _table_users(app: SimApp) -> list[str]:
    return [row[1] for row in app.screen.query_one("#devices", DeviceList).shown_rows()]


async def _connected(pilot: Pilot[None], app: SimApp) -> None:
    await _until(pilot, lambda: app.running and app.snapshot.connected == DEVICES)


async def test_compose_a_message_watch_it_deliver_and_open_a_device() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        tile = app.screen.query_one("#connected", MetricTile)
        await _until(pilot, lambda: tile.value == f"{DEVICES} / {DEVICES}")
        assert tile.has_class("-ok")

        await pilot.press("f4")
        assert isinstance(app.screen, ComposerScreen)
        app.screen.query_one("#title", Input).value = "Spring sale"
        app.screen.query_one("#body", Input).value = "20% off shoes"
        await pilot.click("#send")
        await _until(pilot, lambda: app.snapshot.received >= DEVICES)

        await pilot.press("f1")
        deliveries = app.screen.query_one("#deliveries", MetricTile)
        await _until(pilot, lambda: f"(total {DEVICES})" in deliveries.value)
        await _until(pilot, lambda: "–" not in app.screen.query_one("#latency", MetricTile).value)

        await pilot.press("f2")
        assert isinstance(app.screen, DevicesScreen)
        await pilot.press("down", "enter")  # the second device
        assert isinstance(app.screen, DeviceScreen) and app.screen.index == 1
        inbox = app.screen.query_one("#inbox", InboxList)
        await _until(pilot, lambda: "Spring sale" in "\n".join(inbox.lines()))
        assert "20% off shoes" in inbox.lines()[0]
        assert "1 unread" in str(inbox.border_title)

        info = app.engine.device_info(1)
        panel = app.screen.query_one("#device-info", Static)
        await _until(pilot, lambda: info.persona in str(panel.content))
        shown = str(panel.content)
        assert info.tz in shown and f"{info.quiet[0]}–{info.quiet[1]}" in shown  # type: ignore[index]
        assert ("QUIET NOW" in shown) == info.quiet_now == panel.has_class("-quiet")
        assert "(no campaign selected)" in _text(app, "#decisions")

        await pilot.press("escape")
        assert isinstance(app.screen, DevicesScreen)


async def test_the_search_box_filters_the_device_table_by_id_user_and_persona() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        assert _table_users(app) == [f"u{i}" for i in range(DEVICES)]

        await pilot.press("slash", *"d1")
        await _until(pilot, lambda: _table_users(app) == ["u1", "u10", "u11"])
        assert _text(app, "#match-count").startswith(f"3 of {DEVICES} devices")

        persona = app.engine.device_rows()[0][2]
        expected = [r[1] for r in app.engine.device_rows() if r[2] == persona]
        search = app.screen.query_one("#search", Input)
        search.value = persona.upper()  # case does not matter
        await _until(pilot, lambda: _table_users(app) == expected)

        search.value = "no-such-device"
        await _until(pilot, lambda: _table_users(app) == [])
        assert app.screen.query_one("#match-count", Static).has_class("-none")

        search.value = "u7"
        await pilot.press("enter")  # applies at once and moves to the table
        assert _table_users(app) == ["u7"]
        await pilot.press("enter")
        assert isinstance(app.screen, DeviceScreen) and app.screen.index == 7


async def test_the_composer_previews_the_audience_live_and_shows_a_parse_error_in_place() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        await pilot.press("f4")
        preview = app.screen.query_one("#preview", Static)
        await _until(pilot, lambda: f"{DEVICES} users" in str(preview.content))  # everyone

        persona = app.engine.device_rows()[0][2]
        fans = sum(1 for r in app.engine.device_rows() if r[2] == persona)
        app.screen.query_one("#segment", Input).focus()
        await pilot.press(*f"attr.persona = {persona}")
        # Each key restarts the debounce; the profiles are stored once the devices identified.
        await _until(pilot, lambda: str(preview.content).startswith(f"{fans} users"))
        assert preview.has_class("-ok") and not preview.has_class("-error")
        assert f'attr.persona = "{persona}"' in str(preview.content)  # the canonical text

        await pilot.press(*" and attr.age >")
        await _until(pilot, lambda: preview.has_class("-error"))
        echo, caret = str(preview.content).splitlines()
        text = f"attr.persona = {persona} and attr.age >"
        assert echo == text
        assert caret.index("^") == len(text) and "expected a value" in caret

        await pilot.press("backspace", "backspace", *"> 30")
        await _until(pilot, lambda: preview.has_class("-ok"))


async def test_a_composed_campaign_runs_shows_its_funnel_and_each_device_its_decision() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        rows = app.engine.device_rows()
        persona = rows[0][2]
        fans = [i for i, r in enumerate(rows) if r[2] == persona]
        other = next(i for i, r in enumerate(rows) if r[2] != persona)

        await pilot.press("f4")
        preview = app.screen.query_one("#preview", Static)
        for name, value in (("name", "Match day"), ("segment", f"attr.persona = {persona}"),
                            ("title", "Big game"), ("body", "Hi {{ user.first_name }}"),
                            ("variant-b", "Kick-off at 8")):  # fmt: skip
            app.screen.query_one(f"#{name}", Input).value = value
        await _until(pilot, lambda: str(preview.content).startswith(f"{len(fans)} users"))
        await pilot.press("ctrl+s")  # the gateway refuses a template that may not render
        body_error = app.screen.query_one("#body-error", Static)
        await _until(pilot, lambda: body_error.has_class("-shown"))
        assert "default" in str(body_error.content)
        body = app.screen.query_one("#body", Input)
        body.value = 'Hi {{ user.first_name | default("there") }}'
        await pilot.press("ctrl+s")
        await _until(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert app.selected_campaign == "match-day"

        funnel = app.screen.query_one("#funnel", FunnelView)
        await _until(pilot, lambda: "Funnel · match-day" in str(funnel.border_title))
        lines = str(funnel.content).splitlines()
        assert lines[0].split()[:2] == ["targeted", str(len(fans))]
        assert any(line.split()[:1] == ["b"] for line in lines)  # the A/B table
        table = app.screen.query_one("#campaigns", DataTable)
        assert str(table.get_row("match-day")[2]) in ("running", "completed")

        for index, reason in ((fans[0], "sent"), (other, "not_in_segment")):
            await pilot.press("f2")
            app.screen.query_one("#devices", DeviceList).cursor = index
            await pilot.press("enter")
            screen = app.screen
            assert isinstance(screen, DeviceScreen) and screen.index == index
            await _until(pilot, lambda: reason in _text(app, "#decisions"))  # noqa: B023
            assert "match-day" in str(screen.query_one("#decisions", Static).border_title)
            if reason == "sent":
                await _until(pilot, lambda: "Hi " in _text(app, "#inbox"))
                assert any(t in _text(app, "#inbox") for t in ("Big game", "Kick-off at 8"))
            await pilot.press("escape")


async def test_the_composer_works_from_the_keyboard_alone_and_f5_creates_the_campaign() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, ComposerScreen)
        assert app.focused is screen.query_one("#name", Input)  # type straight away

        await pilot.press(*"Keyboard sale", "tab")
        assert app.focused is screen.query_one("#segment", Input)
        await pilot.press(*"everyone", "tab", *"Shoes", "tab", *"Half price today")
        assert screen.query_one("#body", Input).value == "Half price today"
        await pilot.press("f5")  # reaches the app in tmux and screen, unlike ctrl+s
        await _until(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert app.selected_campaign == "keyboard-sale"
        created = {c["id"]: c for c in app.engine.campaigns()}["keyboard-sale"]
        assert created["name"] == "Keyboard sale"
        assert created["content"]["title"] == "Shoes"
        assert created["content"]["body"] == "Half price today"
        await _until(pilot, lambda: app.snapshot.received >= DEVICES)  # it was started


async def test_an_empty_composer_says_what_is_missing_and_creates_nothing() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        await pilot.press("f4", "tab", "tab")  # the focus leaves the name field
        screen = app.screen
        await pilot.press("f5")
        name_error = screen.query_one("#name-error", Static)
        title_error = screen.query_one("#title-error", Static)
        assert name_error.has_class("-shown") and name_error.display
        assert "required" in str(name_error.content)
        assert title_error.has_class("-shown") and "title, a body" in str(title_error.content)
        assert screen.query_one("#name", Input).has_class("-invalid")
        assert "nothing was created" in str(screen.query_one("#form-error", Static).content)
        assert app.focused is screen.query_one("#name", Input)  # the first field to fix
        assert app.engine.campaigns() == [] and isinstance(app.screen, ComposerScreen)

        await pilot.press(*"X")  # typing into the field clears its mark
        assert not name_error.has_class("-shown")
        assert not screen.query_one("#name", Input).has_class("-invalid")


async def test_the_speed_keys_move_the_engines_clock_and_every_screen_shows_it() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        bar = app.screen.query_one("#clock", ClockBar)
        # A new world starts at 60x, at 01:00 UTC (09:00 in Shanghai), most personas awake.
        await _until(pilot, lambda: bar.text.startswith("▶ 60× · ") and "day 1" in bar.text)
        assert " 01:0" in bar.text and " UTC · day 1" in bar.text
        assert bar.has_class("-running") and bar.query_one("#speed-60").has_class("-active")

        await pilot.press("f8")
        await _until(pilot, lambda: app.engine.clock_state().speed == 1.0)
        await _until(pilot, lambda: "▶ 1×" in bar.text)
        await pilot.press("f9")
        await _until(pilot, lambda: app.engine.clock_state().speed == 60.0)
        await _until(pilot, lambda: "▶ 60×" in bar.text)
        assert bar.query_one("#speed-60").has_class("-active")
        assert not bar.query_one("#speed-1").has_class("-active")

        await pilot.press("f7")
        await _until(pilot, lambda: app.engine.clock_state().paused)
        await _until(pilot, lambda: "⏸ paused" in bar.text and bar.has_class("-paused"))
        stopped = app.engine.clock_state().now
        await pilot.pause(0.5)
        assert app.engine.clock_state().now == stopped  # paused: simulated time stands still

        await pilot.press("f10")  # 3600×, and running again
        await _until(pilot, lambda: not app.engine.clock_state().paused)
        state = app.engine.clock_state()
        assert state.speed == 3600.0
        await pilot.pause(1.0)
        assert app.engine.clock_state().now - state.now >= 1800  # about an hour a second
        await _until(pilot, lambda: "▶ 3,600×" in bar.text and bar.has_class("-running"))

        # The keys work while a text field has the focus, and every screen has the bar.
        await pilot.press("f4")
        name = app.screen.query_one("#name", Input)
        assert app.focused is name
        composer_bar = app.screen.query_one("#clock", ClockBar)
        await pilot.press("f8")
        await _until(pilot, lambda: app.engine.clock_state().speed == 1.0)
        await _until(pilot, lambda: "▶ 1×" in composer_bar.text)
        assert name.value == ""  # the key was not typed into the field
        await pilot.click("#speed-60")  # the chips are buttons too
        await _until(pilot, lambda: app.engine.clock_state().speed == 60.0)
        for key, screen in (("f2", DevicesScreen), ("f3", CampaignsScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, screen)
            shown = app.screen.query_one("#clock", ClockBar)
            await _until(pilot, lambda: "▶ 60×" in shown.text)  # noqa: B023


async def test_the_dashboard_charts_the_fleets_lifecycle_and_tiers_by_simulated_day() -> None:
    app = make_app(devices=DEVICES, workers=1)
    async with app.run_test(size=SIZE) as pilot:
        await _connected(pilot, app)
        await _until(pilot, lambda: bool(app.distribution_days))
        await _until(pilot, lambda: sum(app.distribution_days[-1][1]["lifecycle"].values())
                     == DEVICES)  # fmt: skip
        day, counts = app.distribution_days[-1]
        assert set(counts["lifecycle"]) == set(LIFECYCLE_STAGES)
        assert set(counts["tier"]) == set(TIERS)
        chart = app.screen.query_one("#lifecycle-chart", DistributionChart)
        await _until(pilot, lambda: day in str(chart.content))
        lines = str(chart.content).splitlines()
        assert lines[0].startswith("■ new  ■ active")
        assert lines[-1].startswith(day) and "█" in lines[-1]

        events = app.snapshot.events or 0
        await pilot.press("f10")  # an hour a second: the devices live their days
        await _until(pilot, lambda: (app.snapshot.events or 0) > events, seconds=30)
        await _until(pilot, lambda: (app.events_per_s or 0) > 0, seconds=30)
        tile = app.screen.query_one("#events", MetricTile)
        assert tile.value != "0"
