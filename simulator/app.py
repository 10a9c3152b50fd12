"""``tidings sim``: the Textual TUI over the simulator engine.

The app owns one :class:`~tidings.simulator.engine.sim.SimEngine` and samples it on a timer from
a worker thread (never one UI message per event); each sample lands in the ``snapshot`` reactive,
which the screens watch. Modes, one screen stack each, switched with F1–F4 from anywhere::

    dashboard   devices connected, events/s, deliveries/s, latency percentiles and plots
    devices     the device browser (search) → Enter pushes the device view
    campaigns   campaigns with their funnels; start, pause, cancel
    composer    a campaign with a live audience preview, or a direct message to everyone

Styles live in ``sim.tcss``; visual state (quiet now, preview error, tile state) is CSS classes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from tidings.simulator.engine.sim import SimEngine, Snapshot
from tidings.simulator.screens import (
    CampaignsScreen,
    ComposerScreen,
    DashboardScreen,
    DevicesScreen,
)

__all__ = ["HISTORY", "SAMPLE_S", "SimApp", "make_app"]

SAMPLE_S = 0.5
"""Seconds between two samples of the engine."""

HISTORY = 120
"""Samples kept for the dashboard's plots (a minute at ``SAMPLE_S``)."""


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
    ]

    snapshot: reactive[Snapshot] = reactive(Snapshot(0, 0, 0), always_update=True)
    """The latest sample of the engine."""
    status: reactive[str] = reactive("starting the gateway…")
    """What the engine is doing until every device is connected, then ``"running"``."""
    selected_campaign: reactive[str | None] = reactive(None)
    """The campaign highlighted on the campaigns screen (the device view shows its decisions)."""

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

    def _from_thread(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the app has closed meanwhile
            self.call_from_thread(callback, *args)

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
        self._from_thread(self.apply_sample, snap, time.monotonic())

    def apply_sample(self, snap: Snapshot, now: float) -> None:
        """Derive rates from the previous sample, extend the plots, publish ``snapshot``."""
        if self._last is not None:
            then, prev = self._last
            elapsed = max(now - then, 1e-3)
            self.deliveries_per_s = max(0, snap.received - prev.received) / elapsed
            if snap.events is not None and prev.events is not None:
                self.events_per_s = max(0, snap.events - prev.events) / elapsed
            self.delivery_history = [*self.delivery_history, self.deliveries_per_s][-HISTORY:]
        self._last = (now, snap)
        if snap.latency_ms:
            self.latency_history = [*self.latency_history, snap.latency_ms["p99"]][-HISTORY:]
        self.snapshot = snap

    def on_unmount(self) -> None:
        self.engine.stop()


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
