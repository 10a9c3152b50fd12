"""The simulator screens over a scripted engine: campaign flows the gateway may not serve yet,
5,000 devices, and SVG snapshots of every main screen.

The scripted engine answers like the admin API contract says (campaign list, stats, start,
pause, cancel, decisions, segment preview with its 422 caret message) and never samples on its
own: the tests feed the app samples with fixed times, so the snapshots are byte for byte stable.
Set ``TIDINGS_UPDATE_SNAPSHOTS=1`` to rewrite them after a deliberate change, then look at them.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import timeout
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tidings.client_sdk.ui import InboxList
from tidings.simulator.app import SimApp, make_app
from tidings.simulator.engine.fleet import Fleet, FleetConfig
from tidings.simulator.engine.sim import (
    MORNING_UTC,
    AdminError,
    ClockState,
    DeviceInfo,
    Endpoints,
    SimEngine,
    Snapshot,
    next_morning,
)
from tidings.simulator.screens import CampaignsScreen, ComposerScreen, DeviceScreen, DevicesScreen
from tidings.simulator.screens.campaigns import cannot
from tidings.simulator.screens.composer import sent_summary
from tidings.simulator.widgets import ClockBar, DeviceList, FunnelView

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (120, 36)
NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC: 08:00 in Shanghai, 01:00 in Berlin
BAD_SEGMENT = "attr.persona = sports_fan and attr.age >"
SHOWN = f"{BAD_SEGMENT}\n{' ' * len(BAD_SEGMENT)}^ expected a value after '>'"


class ScriptedEngine(SimEngine):
    """A ``SimEngine`` with no gateway or fleet processes: fixed, contract-shaped answers."""

    def __init__(self, devices: int = 24, *, campaigns_api: bool = True) -> None:
        # No super().__init__(): it would prepare a gateway process; only the fleet config
        # (seed, personas) is needed for device_rows() and device_info().
        self.devices = devices
        self.started = False
        self.fleet = Fleet(FleetConfig(url="ws://127.0.0.1:9", devices=devices, workers=1))
        self.campaigns_api = campaigns_api
        self.calls: list[tuple[str, ...]] = []
        self.created: list[dict[str, Any]] = []
        self.store: dict[str, dict[str, Any]] = {
            "welcome": {"id": "welcome", "name": "Welcome", "status": "completed",
                        "sent_total": 24},
            "spring-sale": {"id": "spring-sale", "name": "Spring sale", "status": "running",
                            "sent_total": 9},
        }  # fmt: skip

    def start(self, progress: Callable[[int, int], None] | None = None) -> float:
        if progress is not None:
            progress(self.devices, self.devices)
        self.started = True
        return 1.0

    def sample(self) -> Snapshot:
        return Snapshot(self.devices, 0, 0)

    def endpoints(self) -> Endpoints:
        return Endpoints("ws://127.0.0.1:8765", "http://127.0.0.1:8766", "dev-admin-key")

    def stop(self) -> None:
        self.started = False

    def inbox(self, index: int) -> list[dict[str, Any]]:
        return [
            {"id": "m2", "title": "Spring sale", "body": "20% off running shoes", "read": False,
             "category": "marketing", "held": True},
            {"id": "m1", "title": "Welcome", "body": "Hi there, glad you are here", "read": True,
             "category": "marketing", "held": False},
        ]  # fmt: skip

    def device_info(self, index: int, now: float | None = None) -> DeviceInfo:
        return super().device_info(index, NOW)

    def clock_state(self) -> ClockState:
        return ClockState(NOW, 3600.0, False, NOW)

    def _need_api(self) -> None:
        if not self.campaigns_api:
            raise AdminError(404, "not_found", "no such endpoint: GET '/v1/campaigns'")

    def preview(self, text: str, sample: int = 5) -> dict[str, Any]:
        self.calls.append(("preview", text))
        if text.endswith(">"):
            indent = " " * len(f"text: {text}")  # the caret under the prefixed text
            raise AdminError(422, "invalid_field", f"text: {text}\n{indent}^ expected "
                             "a value after '>'", "text")  # fmt: skip
        count = 4 if "sports_fan" in text else self.devices
        return {"count": count, "sample": [f"u{i}" for i in range(min(sample, count))],
                "segment": {}, "text": text}  # fmt: skip

    def campaigns(self) -> list[dict[str, Any]]:
        self._need_api()
        return list(self.store.values())

    def campaign_stats(self, campaign: str) -> dict[str, Any]:
        self._need_api()
        if campaign == "welcome":
            total = {"targeted": 24, "sent": 24, "delivered": 24, "displayed": 20,
                     "clicked": 3, "dismissed": 9, "converted": 1, "ctr": 0.15}  # fmt: skip
            return {"total": total, "variants": {}}
        a = {"targeted": 6, "sent": 5, "delivered": 5, "displayed": 4, "clicked": 2,
             "dismissed": 1, "converted": 1, "ctr": 0.5}  # fmt: skip
        b = {"targeted": 6, "sent": 4, "delivered": 4, "displayed": 4, "clicked": 1,
             "dismissed": 2, "converted": 0, "ctr": 0.25}  # fmt: skip
        total = {k: a[k] + b[k] for k in a if k != "ctr"} | {"ctr": 3 / 8}
        comparison = {"variant": "b", "rate": 0.25, "baseline_rate": 0.5, "lift": -0.5,
                      "z": -0.7, "p_value": 0.484}  # fmt: skip
        return {"campaign": campaign, "status": "running", "metric": "ctr", "total": total,
                "variants": {"a": a, "b": b}, "comparisons": [comparison],
                "winner": None}  # fmt: skip

    def create_campaign(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._need_api()
        if not spec["content"]["title"]:
            raise AdminError(422, "invalid_field", "content.title: a banner needs a title",
                             "content.title")  # fmt: skip
        self.created.append(spec)
        self.store[spec["id"]] = {**spec, "status": "draft", "sent_total": 0}
        return self.store[spec["id"]]

    def campaign_action(self, campaign: str, action: str) -> dict[str, Any]:
        self._need_api()
        self.calls.append((action, campaign))
        status = {"start": "running", "pause": "paused", "cancel": "cancelled"}[action]
        self.store[campaign] = {**self.store[campaign], "status": status}
        return self.store[campaign]

    def decisions(self, campaign: str, user: str) -> list[dict[str, Any]]:
        self._need_api()
        return [  # newest first, as the gateway lists them
            {"user": user, "at": NOW, "reason": "sent", "detail": "1 device(s)", "variant": "a",
             "message_id": "07dc9607c7c7438192c794f70a1c3ea8",
             "after": [{"what": "delivered", "at": NOW + 1.5, "device": "d3"},
                       {"what": "clicked", "at": NOW + 30, "device": "d3", "action": "shop"}]},
            {"user": user, "at": NOW - 60, "reason": "scheduled", "detail": "",
             "variant": "a", "message_id": None},
        ]  # fmt: skip

    def send(self, *, title: str, body: str, users: list[str] | None = None,
             kind: str = "both", category: str = "marketing") -> dict[str, Any]:  # fmt: skip
        self.calls.append(("send", title, body, kind))
        return {"message_id": "0123456789abcdef", "devices": self.devices}


async def _until(pilot: Pilot[None], predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def _app(engine: ScriptedEngine | None = None) -> SimApp:
    return make_app(engine=engine or ScriptedEngine(), sample_s=3600)  # the tests sample


async def _running(pilot: Pilot[None], app: SimApp) -> None:
    await _until(pilot, lambda: app.running)
    app.apply_sample(Snapshot(app.engine.devices, 0, 0), 0.0)


async def _snapshot(pilot: Pilot[None], app: SimApp, name: str) -> None:
    """Compare the screen with ``snapshots/<name>.svg`` (rewrite it when asked to)."""
    app.clear_notifications()
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make two screenshots differ
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()
    svg = app.export_screenshot(title=name)
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("TIDINGS_UPDATE_SNAPSHOTS"):
        path.write_text(svg)
    assert path.exists(), f"no snapshot {path.name}: run with TIDINGS_UPDATE_SNAPSHOTS=1"
    if path.read_text() != svg:
        actual = Path(tempfile.mkdtemp(prefix="tidings-snapshot-")) / path.name
        actual.write_text(svg)
        pytest.fail(f"{name} differs from {path.name}; this run's screen is in {actual}")


# --- the dashboard -------------------------------------------------------------------------------


def _distribution(t: int) -> dict[str, dict[str, int]]:
    """24 users drifting from new to active, dormant and churned as samples go by."""
    active, dormant, churned = min(t // 2, 12), min(t // 5, 6), min(t // 10, 3)
    lifecycle = {"new": 24 - active - dormant - churned, "active": active, "dormant": dormant,
                 "churned": churned}  # fmt: skip
    tier = {"high_value": t // 10, "potential": t // 4, "basic": 24 - t // 10 - t // 4 - dormant,
            "dormant": dormant}  # fmt: skip
    return {"lifecycle": lifecycle, "tier": tier}


async def test_the_dashboard_shows_rates_percentiles_and_plots_from_samples() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        received, events = 0, 100
        for t in range(1, 41):
            received += 24 * (t % 5 == 0)
            events += 3 * (t % 3)
            lat = {"p50": 8.0 + t % 7, "p95": 20.0 + t % 11, "p99": 30.0 + (t * 7) % 23,
                   "max": 60.0}  # fmt: skip
            # Three simulated hours a sample: the 40 samples span five simulated days.
            sim_time = NOW + t * 3 * 3600
            app.apply_sample(Snapshot(24, received, received, lat, events, sim_time=sim_time,
                                      speed=3600.0), t * 0.5, _distribution(t))  # fmt: skip
        await pilot.pause()
        assert app.deliveries_per_s == 48.0  # the last half second
        assert app.events_per_s == 6.0  # the last five seconds: 30 events
        assert len(app.latency_history) == 40 and len(app.delivery_history) == 40
        assert max(app.delivery_history) == 48.0  # 24 deliveries in half a second
        # One entry per simulated day, the latest sample of each day.
        assert [day for day, _ in app.distribution_days] == [
            "Jan 01",
            "Jan 02",
            "Jan 03",
            "Jan 04",
            "Jan 05",
            "Jan 06",
        ]
        assert app.distribution_days[-1][1] == _distribution(40)
        assert app.distribution_days[0][1] == _distribution(7)  # 21:00 on Jan 01
        assert app.clock is not None and app.clock.now == NOW + 40 * 3 * 3600
        bar = app.screen.query_one("#clock", ClockBar)
        # Day 1 began with the first sample (03:00 on Jan 01): 117 hours later it is day 5.
        assert bar.text == "▶ 3,600× · Tue 2026-01-06 00:00:00 UTC · day 5"
        assert bar.query_one("#speed-3600").has_class("-active")
        # Where to reach this gateway from another terminal, and how.
        where = str(app.screen.query_one("#endpoints", Static).content)
        assert "ws://127.0.0.1:8765" in where and "admin API http://127.0.0.1:8766" in where
        assert "--admin-key dev-admin-key" in where
        await _snapshot(pilot, app, "dashboard")


async def test_the_dashboard_says_when_the_device_fleet_is_the_bottleneck() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        calm = {"cpu_pct": 40.0, "loop_lag_ms": {"p50": 1.0, "p99": 4.0}, "devices": 12}
        busy = {"cpu_pct": 99.0, "loop_lag_ms": {"p50": 30.0, "p99": 180.0}, "devices": 12}
        note = app.screen.query_one("#fleet-note", Static)
        app.apply_sample(Snapshot(24, 0, 0, loads=(calm, calm)), 0.5)
        await pilot.pause()
        assert str(note.content) == ""
        app.apply_sample(Snapshot(24, 0, 0, loads=(calm, busy)), 1.0)
        await _until(pilot, lambda: "bottleneck" in str(note.content))
        assert "worker 2: CPU 99 %, loop lag p99 180 ms" in str(note.content)
        # Late while waiting for a core other processes held: the machine, said as such.
        starved = {"cpu_pct": 12.0, "loop_lag_ms": {"p50": 30.0, "p99": 240.0}, "devices": 12,
                   "waited_for_cpu_pct": 55.0}  # fmt: skip
        app.apply_sample(Snapshot(24, 0, 0, loads=(calm, starved)), 1.5)
        await _until(pilot, lambda: "cores are the bottleneck" in str(note.content))
        assert "waited for a core 55 %" in str(note.content)


def test_a_simulation_starts_in_the_morning_of_the_most_personas() -> None:
    midnight = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    assert next_morning(midnight) == midnight + MORNING_UTC  # 09:00 in Shanghai
    assert next_morning(midnight + MORNING_UTC) == midnight + MORNING_UTC
    assert next_morning(midnight + 5 * 3600) == midnight + 86_400 + MORNING_UTC  # never back


async def test_events_per_second_stays_steady_when_the_gateway_counts_them_in_batches() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        events, rates = 0, []
        for t in range(1, 41):
            events += 100 * (t % 4 == 0)  # a batch of 100 every two seconds: 50 events/s
            app.apply_sample(Snapshot(24, 0, 0, {}, events), t * 0.5)
            rates.append(app.events_per_s)
        steady = rates[12:]  # once the window is full
        assert all(r is not None and 40 <= r <= 60 for r in steady), steady


# --- the device browser and the device view ----------------------------------------------------


async def test_the_device_list_filters_5000_devices_without_per_row_cost() -> None:
    app = _app(ScriptedEngine(devices=5000))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        screen = app.screen
        assert isinstance(screen, DevicesScreen)
        devices = screen.query_one("#devices", DeviceList)
        assert devices.row_count == 5000
        t0 = time.perf_counter()
        screen.apply_filter("night_owl")
        elapsed = time.perf_counter() - t0
        assert 0 < devices.row_count < 5000
        assert all(row[2] == "night_owl" for row in devices.shown_rows())
        assert elapsed < timeout(0.25), f"filtering took {elapsed:.3f} s"

        await pilot.press("end")
        assert devices.cursor == devices.row_count - 1
        await pilot.press("enter")
        assert isinstance(app.screen, DeviceScreen)
        assert app.screen.index == devices.shown[-1]


async def test_the_device_browser_snapshot_after_a_search() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2", "slash", *"sports", "enter", "down")
        devices = app.screen.query_one("#devices", DeviceList)
        assert devices.has_focus and devices.cursor == 1
        assert {r[2] for r in devices.shown_rows()} == {"sports_fan"}
        await _snapshot(pilot, app, "devices")


async def test_the_device_view_shows_inbox_quiet_hours_and_the_selected_campaign_log() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        index = next(i for i, r in enumerate(app.engine.device_rows()) if r[2] == "sports_fan")
        info = app.engine.device_info(index)
        assert info.quiet == ("23:00", "07:00") and info.local_time == "08:00"
        assert not info.quiet_now and info.next_change_in == 15 * 3600

        await pilot.press("f3")  # highlight a campaign: the device view follows it
        await _until(pilot, lambda: app.selected_campaign == "spring-sale")
        await pilot.press("f2")
        devices = app.screen.query_one("#devices", DeviceList)
        devices.cursor = index
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DeviceScreen) and screen.index == index
        log = screen.query_one("#decisions", Static)
        await _until(pilot, lambda: "1 device(s)" in str(log.content))
        # In words and in the device's local time (Shanghai), as ``tidings why`` says it.
        assert str(log.content).splitlines() == [
            "Jan 01 08:00:00 sent [variant a]: message 07dc9607c7c7438192c794f70a1c3ea8"
            " (1 device(s))",
            "  Jan 01 08:00:01 delivered to d3",
            "  Jan 01 08:00:30 clicked on d3 (action shop)",
            "Jan 01 07:59:00 scheduled [variant a]: scheduled to be sent later",
        ]
        inbox = screen.query_one("#inbox", InboxList)
        assert inbox.lines()[0].startswith("● Spring sale  20% off running shoes")
        assert str(inbox.border_title) == "Inbox · 2 items · 1 unread"
        await pilot.press("r")  # the SDK's list is read-only here: r still refreshes the view
        assert inbox.client is None and len(inbox.items) == 2
        panel = screen.query_one("#device-info", Static)
        assert "awake" in str(panel.content) and "starts in 15h00m" in str(panel.content)
        assert panel.has_class("-awake") and not panel.has_class("-quiet")
        await _snapshot(pilot, app, "device")


async def test_a_device_in_its_quiet_hours_is_marked_quiet() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        # Midnight in London is inside the dormant user's 22:00-08:00 window.
        index = next(i for i, r in enumerate(app.engine.device_rows()) if r[2] == "dormant_user")
        await pilot.press("f2")
        app.screen.query_one("#devices", DeviceList).cursor = index
        await pilot.press("enter")
        panel = app.screen.query_one("#device-info", Static)
        await _until(pilot, lambda: panel.has_class("-quiet"))
        assert "QUIET NOW" in str(panel.content) and "ends in 8h00m" in str(panel.content)
        assert "(no campaign selected)" in str(app.screen.query_one("#decisions", Static).content)


# --- campaigns -----------------------------------------------------------------------------------


async def test_campaigns_show_their_funnels_and_the_keys_start_pause_and_cancel_them() -> None:
    engine = ScriptedEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, CampaignsScreen)
        funnel = screen.query_one("#funnel", FunnelView)
        await _until(pilot, lambda: "variant" in str(funnel.content))
        assert screen.highlighted == "spring-sale" == app.selected_campaign  # newest first
        lines = str(funnel.content).splitlines()
        assert lines[0].split()[:2] == ["targeted", "12"]
        assert any(line.split()[:1] == ["b"] and line.endswith("25.0%") for line in lines)
        assert "b vs baseline: lift -50.0%, p = 0.484" in lines
        assert "winner: none yet (not significant)" in lines
        # 9 delivered, 8 displayed, and it is midnight in London: say why one waits.
        quiet = sum(1 for r in engine.device_rows() if r[2] == "dormant_user")
        assert quiet and lines[-1] == (
            f"1 delivered, not displayed yet: {quiet} of 24 devices are in their quiet hours"
            " now, and a banner waits on the device until they end"
        )
        await _snapshot(pilot, app, "campaigns")

        await pilot.press("p")
        await _until(pilot, lambda: ("pause", "spring-sale") in engine.calls)
        table = screen.query_one("#campaigns")
        await _until(pilot, lambda: "paused" in str(table.get_row("spring-sale")[2]))  # type: ignore[attr-defined]
        await pilot.press("s")
        await _until(pilot, lambda: ("start", "spring-sale") in engine.calls)
        await pilot.press("x")
        await _until(pilot, lambda: ("cancel", "spring-sale") in engine.calls)
        # A completed one-off cannot start again: the screen says why, and asks nothing.
        await pilot.press("down", "s")
        assert app.selected_campaign == "welcome"
        await _until(pilot, lambda: any("welcome is completed: it is over" in n.message
                                        for n in app._notifications))  # fmt: skip
        assert ("start", "welcome") not in engine.calls


def test_a_campaign_key_that_cannot_apply_says_why_by_the_gateways_transitions() -> None:
    assert cannot("completed", "start") is not None and "compose a new campaign" in str(
        cannot("completed", "start"))  # fmt: skip
    assert cannot("running", "pause") is None and cannot("paused", "start") is None
    assert cannot("draft", "cancel") is None
    assert cannot("paused", "pause") == "it is paused already"
    assert cannot("draft", "pause") == "it has not started (s starts it)"
    assert cannot("unknown-status", "start") is None  # the gateway decides


class GrowingEngine(ScriptedEngine):
    """The welcome campaign's stats as the gateway reports them: ``by_day`` from the stored
    sends and receipts, whatever the UI did meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.store = {"welcome": self.store["welcome"]}
        self.by_day: list[dict[str, Any]] = []

    def campaign_stats(self, campaign: str) -> dict[str, Any]:
        total = {k: sum(d.get(k, 0) for d in self.by_day)
                 for k in ("sent", "delivered", "displayed", "clicked")}  # fmt: skip
        return {"total": total, "variants": {}, "by_day": list(self.by_day)}


async def test_the_campaigns_screen_shows_what_each_simulated_day_added_to_the_funnel() -> None:
    engine = GrowingEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        # Two days happened before the screen was ever opened: they are shown all the same,
        # each on its own day.
        engine.by_day = [
            {"day": "2026-01-01", "sent": 100, "delivered": 100, "displayed": 80, "clicked": 8},
            {"day": "2026-01-02", "sent": 50, "delivered": 50, "displayed": 40, "clicked": 10},
        ]
        await pilot.press("f3")
        days = app.screen.query_one("#funnel-days", Static)
        await _until(pilot, lambda: "Jan 02" in str(days.content))
        engine.by_day.append(
            {"day": "2026-01-03", "sent": 30, "delivered": 30, "displayed": 30, "clicked": 3}
        )
        app.apply_sample(Snapshot(24, 0, 0, sim_time=NOW + 2 * 86_400, speed=3600.0), 1.0)
        await _until(pilot, lambda: "Jan 03" in str(days.content))
        lines = str(days.content).splitlines()
        assert [line.split()[:6] for line in lines[1:]] == [
            ["Jan", "01", "100", "100", "80", "8"],
            ["Jan", "02", "50", "50", "40", "10"],
            ["Jan", "03", "30", "30", "30", "3"],
        ]
        assert str(days.border_title) == "By simulated day · welcome"
        await _snapshot(pilot, app, "campaigns-by-day")


async def test_campaigns_say_plainly_when_the_gateway_has_no_campaigns_api() -> None:
    app = _app(ScriptedEngine(campaigns_api=False))
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f3")
        message = app.screen.query_one("#campaigns-message", Static)
        await _until(pilot, lambda: message.has_class("-error"))
        assert "not available on this gateway yet" in str(message.content)
        await pilot.press("s")  # nothing highlighted: a warning, no crash
        await pilot.pause()
        assert app.selected_campaign is None


# --- the composer --------------------------------------------------------------------------------


async def _fill(pilot: Pilot[None], app: SimApp, **values: str) -> None:
    for name, value in values.items():
        app.screen.query_one(f"#{name.replace('_', '-')}", Input).value = value
    await pilot.pause()


async def test_the_composer_creates_a_campaign_with_variants_and_starts_it() -> None:
    engine = ScriptedEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f4")
        assert isinstance(app.screen, ComposerScreen)
        await _fill(pilot, app, name="Match day!", segment='attr.persona = "sports_fan"',
                    title="Big game tonight", body='Hi {{ user.first_name | default("there") }}',
                    variant_b="Kick-off at 8")  # fmt: skip
        await pilot.click("#kind-banner")
        await pilot.press("ctrl+s")
        await _until(pilot, lambda: isinstance(app.screen, CampaignsScreen))
        assert engine.created == [{
            "id": "match-day", "app": "demo", "name": "Match day!", "kind": "one_off",
            "segment": 'attr.persona = "sports_fan"',
            "content": {"kind": "banner", "title": "Big game tonight",
                        "body": 'Hi {{ user.first_name | default("there") }}',
                        "category": "marketing"},
            "variants": [{"name": "a", "weight": 50},
                         {"name": "b", "weight": 50, "content": {"title": "Kick-off at 8"}}],
        }]  # fmt: skip
        assert ("start", "match-day") in engine.calls
        assert app.selected_campaign == "match-day"


async def test_the_composer_shows_an_api_error_next_to_the_field_it_names() -> None:
    engine = ScriptedEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f4", "ctrl+s")  # no name: caught before asking the gateway
        name_error = app.screen.query_one("#name-error", Static)
        assert name_error.has_class("-shown") and "name" in str(name_error.content)
        await _fill(pilot, app, name="No title", body="just a body")
        assert not name_error.has_class("-shown")  # typing in the field clears its error
        await pilot.press("ctrl+s")
        title_error = app.screen.query_one("#title-error", Static)
        await _until(pilot, lambda: title_error.has_class("-shown"))
        assert str(title_error.content) == "a banner needs a title"
        assert engine.created == [] and isinstance(app.screen, ComposerScreen)


async def test_the_composer_previews_as_you_type_and_sends_directly_to_everyone() -> None:
    engine = ScriptedEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f4")
        preview = app.screen.query_one("#preview", Static)
        await _until(pilot, lambda: str(preview.content).startswith("24 users"))
        app.screen.query_one("#segment", Input).focus()
        await pilot.press(*"attr.persona = sports_fan")
        await _until(pilot, lambda: str(preview.content).startswith("4 users"))
        # Debounced: a burst of keys asks for a preview only when typing pauses, not per key
        # (a loaded machine may pause mid-word, so allow a few).
        typed = "attr.persona = sports_fan"
        previews = [c[1] for c in engine.calls if c[0] == "preview"]
        assert previews[0] == "everyone" and previews[-1] == typed
        assert len(previews) - 1 <= len(typed) // 5

        await _fill(pilot, app, title="Hello", body="everyone")
        await pilot.press("ctrl+t")
        await _until(pilot, lambda: ("send", "Hello", "everyone", "both") in engine.calls)


async def test_a_direct_send_of_a_template_is_refused_with_the_way_to_send_it() -> None:
    # F6 sends the copy as written: {{ ... }} would reach every device unrendered.
    engine = ScriptedEngine()
    app = _app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f4")
        await _fill(pilot, app, title="Sale", body="Hi {{ user.first_name }}!")
        await pilot.press("f6")
        error = app.screen.query_one("#body-error", Static)
        await _until(pilot, lambda: "press F5" in str(error.content))
        assert not [c for c in engine.calls if c[0] == "send"]


def test_a_direct_sends_toast_says_who_was_skipped_and_why() -> None:
    result = {"message_id": "0123456789abcdef", "devices": 840, "users": 840, "no_device": 0,
              "skipped": {"capped_tier": 150, "opted_out": 10}}  # fmt: skip
    assert sent_summary(result) == (
        "sent 01234567 to 840 devices; 160 users skipped: 150 over their tier's marketing"
        " cap, 10 opted out"
    )
    assert sent_summary({"message_id": "ab", "devices": 3, "skipped": {}}) == "sent ab to 3 devices"


async def test_on_an_80_by_24_terminal_the_speed_and_the_composers_buttons_are_in_sight() -> None:
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await _running(pilot, app)
        app.apply_sample(Snapshot(24, 0, 0, sim_time=NOW, speed=3600.0), 0.5)
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        time_shown = screen.query_one("#clock-time", Static)
        region = time_shown.content_region
        assert region.width > 0 and str(time_shown.content).startswith("▶ 3,600×")
        assert region.width >= len("▶ 3,600×")  # the start of the line, the speed, shows
        for button in ("#create", "#send"):
            r = screen.query_one(button).region
            assert r.height > 0 and r.bottom <= 23, (button, r)  # above the footer line
            assert r.right <= 80, (button, r)


async def test_the_composer_snapshot_with_a_segment_that_does_not_parse() -> None:
    app = _app()
    async with app.run_test(size=SIZE) as pilot:
        await _running(pilot, app)
        await pilot.press("f4")
        await _fill(pilot, app, name="Sports fans over 30", title="Match day",
                    body='Hi {{ user.first_name | default("there") }}, kick-off at 8')  # fmt: skip
        app.screen.query_one("#segment", Input).focus()
        await pilot.press(*BAD_SEGMENT)
        preview = app.screen.query_one("#preview", Static)
        await _until(pilot, lambda: preview.has_class("-error"))
        assert str(preview.content) == SHOWN
        await _snapshot(pilot, app, "composer")


@pytest.mark.parametrize("name", ["tidings.simulator.screens", "tidings.simulator.widgets"])
def test_the_tui_packages_export_every_name_they_list(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)
