"""``tidings sim``: the Textual TUI over the simulator engine.

The app owns one :class:`~tidings.simulator.engine.sim.SimEngine` and samples it on a timer from
a worker thread (never one UI message per event); each sample lands in the ``snapshot`` reactive,
which the screens watch. Modes, one screen stack each, switched with F1–F4 from anywhere::

    dashboard   devices connected, events/s, deliveries/s, latency percentiles and plots
    devices     the device browser (search) → Enter pushes the device view
    campaigns   campaigns with their funnels; start, pause, cancel
    composer    a campaign with a live audience preview, or a direct message to everyone

Every screen shows the simulated date and time under its header, with the speed controls: F7
pauses or resumes, F8/F9/F10 run at 1×, 60× and 3600× (the chips can be clicked too). The
lifecycle/tier distribution is sampled every ``DISTRIBUTION_EVERY_S`` and kept, one entry per
simulated day, in ``distribution_days``.

Styles live in ``sim.tcss``; visual state (quiet now, preview error, tile state) is CSS classes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive

from tidings.simulator.engine.sim import AdminError, ClockState, SimEngine, Snapshot
from tidings.simulator.screens import (
    CampaignsScreen,
    ComposerScreen,
    DashboardScreen,
    DevicesScreen,
)

__all__ = [
    "DAYS_KEPT",
    "DISTRIBUTION_EVERY_S",
    "EVENTS_WINDOW_S",
    "HISTORY",
    "SAMPLE_S",
    "SimApp",
    "make_app",
]

SAMPLE_S = 0.5
"""Seconds between two samples of the engine."""

HISTORY = 120
"""Samples kept for the dashboard's plots (a minute at ``SAMPLE_S``)."""

EVENTS_WINDOW_S = 5.0
"""Real seconds the events/s rate is averaged over."""

DISTRIBUTION_EVERY_S = 2.0
"""Real seconds between two samples of the lifecycle/tier distribution (it costs the gateway a
few segment counts, so it is sampled less often than the counters)."""

DAYS_KEPT = 14
"""Simulated days of the distribution kept for the chart."""

Distribution = dict[str, dict[str, int]]


class SimApp(App[None]):
    """Dashboard, device browser and device view, campaigns and composer of a simulation."""

    CSS_PATH = "sim.tcss"
    TITLE = "Tidings simulator"
    MODES: ClassVar[dict[str, Any]] = {
        "dashboard": DashboardScreen,
        "devices": DevicesScreen,
        "campaigns": CampaignsScreen,
        "composer": ComposerScreen,
    }
    DEFAULT_MODE = "dashboard"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "switch_mode('dashboard')", "Dashboard"),
        Binding("f2", "switch_mode('devices')", "Devices"),
        Binding("f3", "switch_mode('campaigns')", "Campaigns"),
        Binding("f4", "switch_mode('composer')", "Compose"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        # Single keys for when no text input has the focus.
        Binding("1", "switch_mode('dashboard')", show=False),
        Binding("2,d", "switch_mode('devices')", show=False),
        Binding("3", "switch_mode('campaigns')", show=False),
        Binding("4,c", "switch_mode('composer')", show=False),
        Binding("q", "quit", show=False),
        # The simulated clock (the clock bar under the header shows these keys).
        Binding("f7", "toggle_pause", "Pause/resume", show=False, priority=True),
        Binding("f8", "set_speed(1)", "1×", show=False, priority=True),
        Binding("f9", "set_speed(60)", "60×", show=False, priority=True),
        Binding("f10", "set_speed(3600)", "3600×", show=False, priority=True),
    ]

    snapshot: reactive[Snapshot] = reactive(Snapshot(0, 0, 0), always_update=True)
    """The latest sample of the engine."""
    status: reactive[str] = reactive("starting the gateway…")
    """What the engine is doing until every device is connected, then ``"running"``."""
    selected_campaign: reactive[str | None] = reactive(None)
    """The campaign highlighted on the campaigns screen (the device view shows its decisions)."""
    clock: reactive[ClockState | None] = reactive(None, always_update=True)
    """The simulated clock as last read (None until the gateway told it)."""

    def __init__(self, engine: SimEngine, sample_s: float = SAMPLE_S) -> None:
        super().__init__()
        self.engine = engine
        self.sample_s = sample_s
        self.running = False
        self.latency_history: list[float] = []
        self.delivery_history: list[float] = []
        self.deliveries_per_s = 0.0
        self.events_per_s: float | None = None
        self._last: tuple[float, Snapshot] | None = None
        self._window: list[tuple[float, int]] = []  # (when, events) of the last few seconds
        self.sim_start: float | None = None
        """Simulated time of the first sample that had one (day 1 of the run)."""
        self.distribution_days: list[tuple[str, Distribution]] = []
        """The latest lifecycle/tier distribution of each simulated day, oldest first."""
        self._distribution_at = -DISTRIBUTION_EVERY_S

    def on_mount(self) -> None:
        self.start_engine()

    @work(thread=True, exclusive=True, group="start")
    def start_engine(self) -> None:
        """Start the gateway and connect every device, reporting progress."""

        def progress(n: int, total: int) -> None:
            self._from_thread(self._set_status, f"connecting {n:,} / {total:,}")

        try:
            seconds = self.engine.start(progress)
        except Exception as exc:  # shown to the user: the app stays up to say what went wrong
            self._from_thread(self._start_failed, exc)
            return
        self._from_thread(self._started, seconds)

    def _from_thread(
        self, callback: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the app has closed meanwhile
            self.call_from_thread(callback, *args, **kwargs)

    def _set_status(self, status: str) -> None:
        self.status = status

    def _start_failed(self, exc: Exception) -> None:
        self.status = f"failed to start: {exc}"
        self.notify(self.status, severity="error", timeout=30)

    def _started(self, seconds: float) -> None:
        self.running = True
        self.status = "running"
        self.notify(f"{self.engine.devices:,} devices connected in {seconds:.1f} s")
        self.set_interval(self.sample_s, self.sample)

    @work(thread=True, exclusive=True, group="sample")
    def sample(self) -> None:
        """Take one sample of the engine (in a thread: it asks the worker processes)."""
        try:
            snap = self.engine.sample()
        except (OSError, EOFError):  # the fleet is stopping
            return
        now = time.monotonic()
        distribution: Distribution | None = None
        if now - self._distribution_at >= DISTRIBUTION_EVERY_S:
            self._distribution_at = now
            with contextlib.suppress(AdminError):  # shown again at the next try
                distribution = self.engine.distribution()
        self._from_thread(self.apply_sample, snap, now, distribution)

    def apply_sample(
        self, snap: Snapshot, now: float, distribution: Distribution | None = None
    ) -> None:
        """Derive rates from the previous sample, extend the plots, publish ``snapshot``.

        Args:
            snap: The sample.
            now: Real (monotonic) time it was taken at.
            distribution: Users by lifecycle stage and tier, when it was sampled this time.
        """
        if snap.sim_time is not None:
            if self.sim_start is None:
                self.sim_start = snap.sim_time
            self.clock = ClockState(snap.sim_time, snap.speed, snap.paused)
            if distribution is not None:
                self._add_distribution(snap.sim_time, distribution)
        if self._last is not None:
            then, prev = self._last
            elapsed = max(now - then, 1e-3)
            self.deliveries_per_s = max(0, snap.received - prev.received) / elapsed
            self.delivery_history = [*self.delivery_history, self.deliveries_per_s][-HISTORY:]
        # Events reach the gateway's counter in batches (devices gather reports for a second),
        # so their rate is taken over the last few seconds, not the last sample.
        self._window = [(t, e) for t, e in self._window if now - t <= EVENTS_WINDOW_S]
        if snap.events is not None:
            if self._window and now > self._window[0][0]:
                first_t, first = self._window[0]
                self.events_per_s = max(0, snap.events - first) / (now - first_t)
            self._window.append((now, snap.events))
        self._last = (now, snap)
        if snap.latency_ms:
            self.latency_history = [*self.latency_history, snap.latency_ms["p99"]][-HISTORY:]
        self.snapshot = snap

    def _add_distribution(self, sim_time: float, distribution: Distribution) -> None:
        _keep_day(self.distribution_days, _day(sim_time), distribution)

    # --- the simulated clock ------------------------------------------------------------------

    def action_set_speed(self, speed: float) -> None:
        """Run simulated time at ``speed`` (and resume it if it was paused)."""
        self.change_clock(float(speed))

    def action_toggle_pause(self) -> None:
        """Pause simulated time, or resume it."""
        self.change_clock(None)

    @work(thread=True, group="clock")
    def change_clock(self, speed: float | None) -> None:
        """Set the speed (``None``: toggle pause), then read the clock back for the display."""
        if not self.running:
            self._from_thread(self.notify, "the clock starts once every device is connected",
                              severity="warning")  # fmt: skip
            return
        try:
            if speed is not None:
                self.engine.set_speed(speed)
                if self.clock is not None and self.clock.paused:
                    self.engine.resume()
            elif self.engine.clock_state().paused:
                self.engine.resume()
            else:
                self.engine.pause()
            state = self.engine.clock_state()
        except AdminError as exc:
            self._from_thread(self.notify, f"clock: {exc.reason}", severity="error")
            return
        self._from_thread(self._set_clock, state)

    def _set_clock(self, state: ClockState) -> None:
        if self.sim_start is None:
            self.sim_start = state.now
        self.clock = state

    def on_unmount(self) -> None:
        self.engine.stop()


def _day(sim_time: float) -> str:
    return dt.datetime.fromtimestamp(sim_time, dt.UTC).strftime("%b %d")


def _keep_day(days: list[tuple[str, Any]], day: str, value: Any) -> None:
    """The latest sample of a day stands for it; only the last ``DAYS_KEPT`` days are kept."""
    if days and days[-1][0] == day:
        days[-1] = (day, value)
    else:
        days.append((day, value))
    del days[:-DAYS_KEPT]


def make_app(
    devices: int = 1000,
    workers: int = 2,
    *,
    engine: SimEngine | None = None,
    sample_s: float = SAMPLE_S,
) -> SimApp:
    """The simulator app over a fresh engine (used by ``tidings sim`` and the tests).

    Args:
        devices: Simulated devices to connect.
        workers: Worker processes the devices are spread over.
        engine: Use this engine instead of a new one (``devices`` and ``workers`` are then
            ignored); the app stops it on exit.
        sample_s: Seconds between samples of the engine.
    """
    return SimApp(engine or SimEngine(devices=devices, workers=workers), sample_s)
