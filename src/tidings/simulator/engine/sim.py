"""The engine behind ``tidings sim``: a gateway process and a fleet, sampled on demand.

No Textual here: the TUI calls these blocking methods from worker threads and keeps its own
history for plots. Admin API failures reach the UI as :class:`AdminError` (HTTP and socket
errors are translated in one place, :meth:`SimEngine.call`).

The gateway runs on a simulated clock (``--clock simulated``; the demo app is a development
app) and every device follows it: :meth:`SimEngine.set_speed`, :meth:`SimEngine.pause` and
:meth:`SimEngine.resume` move the gateway's clock and tell the devices at once. The devices
live their personas' days (sessions, carts, purchases, reactions to messages; see
:mod:`tidings.simulator.engine.living`), so at ``speed=3600`` a day passes in 24 seconds.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from tidings.admin_client import AdminError, quote
from tidings.client_sdk import ClockState, QuietHours
from tidings.client_sdk.quiet_hours import zone
from tidings.simulator.engine.fleet import Fleet, FleetConfig, read_clock
from tidings.simulator.engine.loadtest import DEV_ADMIN_KEY, GatewayProcess
from tidings.simulator.engine.personas import assign
from tidings.simulator.engine.report import percentiles, saturated_workers

__all__ = ["DEFAULT_SPEED", "LIFECYCLE_STAGES", "MORNING_UTC", "TIERS", "AdminError", "ClockState",
           "DeviceInfo", "Endpoints", "SimEngine", "Snapshot", "next_morning"]  # fmt: skip

ADMIN_TIMEOUT_S = 30.0
"""How long one admin API call from the UI may take before it counts as failed."""

LIFECYCLE_STAGES = ("new", "active", "dormant", "churned")
"""Lifecycle stages, in the order :meth:`SimEngine.distribution` reports them."""

TIERS = ("high_value", "potential", "basic", "dormant")
"""Value tiers, in the order :meth:`SimEngine.distribution` reports them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """Who a simulated device is and whether it is in its quiet hours right now."""

    index: int
    device: str
    user: str
    persona: str
    interests: tuple[str, ...]
    tz: str
    local_time: str  # "HH:MM" on the device's clock
    quiet: tuple[str, str] | None
    quiet_now: bool
    next_change_in: float | None  # seconds until quiet_now flips; None without a window


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One sample of the fleet for the dashboard."""

    connected: int
    received: int
    displayed: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    events: int | None = None  # behaviour events the gateway received (None: unknown)
    sim_time: float | None = None  # the gateway's simulated unix time (None: unknown)
    speed: float = 1.0  # simulated seconds per real second
    paused: bool = False
    sessions: int = 0  # app sessions the living devices had so far
    purchases: int = 0
    loads: tuple[dict[str, Any], ...] = ()
    """Each fleet worker's own load since the last sample (CPU share, loop lag)."""

    @property
    def saturated(self) -> list[int]:
        """The fleet workers (1-based) that are the bottleneck now."""
        return saturated_workers(self.loads)


DEFAULT_SPEED = 60.0
"""Simulated seconds per real second by default: the first real minute is an hour of the
devices' lives, so the dashboard moves at once (F8 runs at 1x)."""

MORNING_UTC = 1 * 3600.0
"""Seconds after UTC midnight that a simulation starts at by default: 09:00 in Shanghai (three
personas), 20:00 in New York, 02:00 for Berlin's night owls; only London sleeps."""


def next_morning(now: float) -> float:
    """The first :data:`MORNING_UTC` at or after ``now`` (the clock never goes back)."""
    day = now - now % 86_400
    at = day + MORNING_UTC
    return at if at >= now else at + 86_400


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a simulation's gateway is reached from outside."""

    url: str
    admin_url: str
    admin_key: str


class SimEngine:
    """Runs the gateway and N simulated devices; every method blocks (call from a thread)."""

    def __init__(
        self, devices: int, workers: int = 2, db: str | None = None, *,
        speed: float = DEFAULT_SPEED, seed: int = 0, living: bool = True, morning: bool = True,
    ) -> None:  # fmt: skip
        # Start multiprocessing's helper now, while the process still has real stdio: under a
        # TUI stderr is replaced and the helper could not be spawned from a worker thread.
        resource_tracker.ensure_running()
        self.devices = devices
        self.speed = speed
        self.morning = morning
        self._tmp = tempfile.TemporaryDirectory() if db is None else None
        path = db or str(Path(self._tmp.name if self._tmp else ".") / "sim.db")
        self.gateway = GatewayProcess(path, clock="simulated")
        self.fleet = Fleet(self._fleet_config(workers, seed, living))
        self.started = False
        self._latencies: list[float] = []

    def _fleet_config(self, workers: int, seed: int, living: bool) -> FleetConfig:
        return FleetConfig(url=self.gateway.url, devices=self.devices, workers=workers, seed=seed,
                           admin=self.gateway.admin_url, admin_key=DEV_ADMIN_KEY,
                           living=living)  # fmt: skip

    def start(self, progress: Callable[[int, int], None] | None = None) -> float:
        """Start the gateway, connect every device; return the connect time in seconds.

        The simulated clock starts at the real time, or with ``morning`` at the next
        :data:`MORNING_UTC` (most personas awake, few in their quiet hours), and runs at
        ``speed`` once every device is connected.
        """
        self.gateway.start()
        cfg = self.fleet.cfg
        start: dict[str, Any] = {"paused": True}
        if self.morning:
            start["now"] = next_morning(self.clock_state().now)
        self.call("PUT", "/v1/clock", start)
        self.fleet = Fleet(self._fleet_config(cfg.workers, cfg.seed, cfg.living))
        seconds = self.fleet.start(progress)
        self.started = True
        self._clock({"speed": self.speed, "paused": False})
        return seconds

    def endpoints(self) -> Endpoints:
        """Where the simulation's gateway listens, and its development admin key: what
        ``tidings why``, ``tidings campaign`` and ``curl`` need to reach it from outside."""
        return Endpoints(self.gateway.url, self.gateway.admin_url, DEV_ADMIN_KEY)

    # --- simulated time --------------------------------------------------------------------

    def clock_state(self) -> ClockState:
        """The gateway's clock: simulated unix time, speed and whether it is paused."""
        body = self.call("GET", "/v1/clock")
        return ClockState(float(body["now"]), float(body["speed"]), bool(body["paused"]),
                          float(body["real_time"]))  # fmt: skip

    def set_speed(self, speed: float) -> None:
        """Run simulated time at ``speed`` simulated seconds per real second (gateway and
        devices); :class:`AdminError` names ``speed`` when it is out of range."""
        self._clock({"speed": speed})

    def pause(self) -> None:
        """Stop simulated time (devices and gateway); counters and the admin API still work."""
        self._clock({"paused": True})

    def resume(self) -> None:
        """Let simulated time run again at its speed."""
        self._clock({"paused": False})

    def advance(self, seconds: float) -> None:
        """Jump simulated time ``seconds`` forward (what was due meanwhile runs at once)."""
        if not seconds >= 0:
            raise AdminError(422, "invalid_field", "now: time never runs backwards", "now")
        self._clock({"now": self.clock_state().now + seconds})

    def _clock(self, change: dict[str, Any]) -> None:
        self.call("PUT", "/v1/clock", change)
        if self.started:  # the devices follow now, not at their next poll
            self.fleet.set_clock(read_clock(self.gateway.admin))

    def distribution(self) -> dict[str, dict[str, int]]:
        """Users of the demo app by lifecycle stage and by value tier, as the gateway sees them
        now: ``{"lifecycle": {"new": n, ...}, "tier": {"high_value": n, ...}}`` (every stage
        and tier present, in :data:`LIFECYCLE_STAGES` / :data:`TIERS` order)."""
        out: dict[str, dict[str, int]] = {"lifecycle": {}, "tier": {}}
        for kind, names in (("lifecycle", LIFECYCLE_STAGES), ("tier", TIERS)):
            for name in names:
                out[kind][name] = int(self.preview(f"{kind} = {name}", sample=0)["count"])
        return out

    def sample(self) -> Snapshot:
        """Current counters, with latency percentiles over the last 5,000 deliveries."""
        stats = self.fleet.stats()
        self._latencies = (self._latencies + stats["latencies"])[-5000:]
        lat = percentiles(self._latencies) if self._latencies else {}
        events = self.gateway_counters().get("tidings_events_total")
        try:
            clock: ClockState | None = self.clock_state()
        except AdminError:
            clock = None
        return Snapshot(
            stats["connected"],
            stats["received"],
            stats["displayed"],
            lat,
            None if events is None else int(events),
            sim_time=None if clock is None else clock.now,
            speed=1.0 if clock is None else clock.speed,
            paused=False if clock is None else clock.paused,
            sessions=stats.get("sessions", 0),
            purchases=stats.get("purchases", 0),
            loads=tuple(stats.get("loads", ())),
        )

    def gateway_counters(self) -> dict[str, float]:
        """The gateway's unlabelled Prometheus counters (``{}`` when it does not answer)."""
        try:
            samples = self.gateway.admin.metrics()
        except AdminError:
            return {}
        return {name: value for name, value in samples.items() if "{" not in name}

    def send(self, *, title: str, body: str, users: list[str] | None = None,
             kind: str = "both", category: str = "marketing") -> dict[str, Any]:  # fmt: skip
        """Send a message to some users (default: every device's user) through the admin API."""
        targets = users or [f"u{i}" for i in range(min(self.devices, 10_000))]
        result: dict[str, Any] = self.call("POST", "/v1/messages", {
            "app": "demo", "to": {"users": targets}, "kind": kind, "title": title, "body": body,
            "category": category,
        })  # fmt: skip
        return result

    def inbox(self, index: int) -> list[dict[str, Any]]:
        """Device ``index``'s inbox as its SDK holds it."""
        return self.fleet.inbox(index)

    def device_rows(self) -> list[tuple[str, str, str, str]]:
        """(device, user, persona, time zone) of every device, from the run's seed."""
        return [self._identity(i) for i in range(self.devices)]

    def _identity(self, index: int) -> tuple[str, str, str, str]:
        cfg = self.fleet.cfg
        if not cfg.personas:
            return f"d{index}", f"u{index}", "-", "UTC"
        persona = assign(cfg.seed, index)
        return f"d{index}", f"u{index}", persona.name, persona.tz

    def device_info(self, index: int, now: float | None = None) -> DeviceInfo:
        """Device ``index``'s persona, zone and quiet-hours state at ``now`` (default: now).

        Derived the way the fleet sets each device up (persona from the seed, window possibly
        overridden), so it matches what that device's SDK applies. ``now`` defaults to the
        gateway's simulated time (the devices' clock), or the real time if it does not answer.
        """
        if now is None:
            try:
                now = self.clock_state().now
            except AdminError:
                now = time.time()
        cfg = self.fleet.cfg
        persona = assign(cfg.seed, index) if cfg.personas else None
        tz = persona.tz if persona else "UTC"
        window = cfg.quiet_override or (persona.quiet if persona else None)
        quiet = QuietHours(*window) if window else None
        quiet_now = quiet.is_quiet(now, tz) if quiet else False
        change = None
        if quiet is not None and quiet.start != quiet.end:
            change = quiet.window_end(now, tz) if quiet_now else quiet.next_start(now, tz)
        return DeviceInfo(
            index=index,
            device=f"d{index}",
            user=f"u{index}",
            persona=persona.name if persona else "-",
            interests=tuple(sorted(persona.interests)) if persona else (),
            tz=tz,
            local_time=dt.datetime.fromtimestamp(now, zone(tz)).strftime("%H:%M"),
            quiet=window,
            quiet_now=quiet_now,
            next_change_in=None if change is None else change - now,
        )

    def quiet_now(self, now: float | None = None) -> int:
        """How many devices are in their quiet hours at ``now`` (default: the gateway's
        simulated time)."""
        if now is None:
            now = self.clock_state().now
        return sum(1 for i in range(self.devices) if self.device_info(i, now).quiet_now)

    # --- admin API (campaigns, segments) ---------------------------------------------------

    def preview(self, text: str, sample: int = 5) -> dict[str, Any]:
        """The audience segment ``text`` selects now: ``{"count", "sample", "segment", "text"}``."""
        result: dict[str, Any] = self.call(
            "POST", "/v1/segments/preview", {"app": "demo", "text": text, "sample": sample}
        )
        return result

    def campaigns(self) -> list[dict[str, Any]]:
        """Every campaign of the demo app (JSON form with ``status`` and ``sent_total``)."""
        result = self.call("GET", "/v1/campaigns?app=demo")
        return list(result.get("campaigns", []))

    def campaign_stats(self, campaign: str) -> dict[str, Any]:
        """The funnel of one campaign: ``{"total": {...}, "variants": {name: {...}}}``."""
        result: dict[str, Any] = self.call("GET", f"/v1/campaigns/{quote(campaign)}/stats?app=demo")
        return result

    def create_campaign(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a campaign from its JSON form (the admin API validates it)."""
        result: dict[str, Any] = self.call("POST", "/v1/campaigns", spec)
        return result

    def campaign_action(self, campaign: str, action: str) -> dict[str, Any]:
        """``start``, ``pause`` or ``cancel`` a campaign."""
        if action not in ("start", "pause", "cancel"):
            raise ValueError(f"unknown campaign action {action!r}")
        result = self.call("POST", f"/v1/campaigns/{quote(campaign)}/{action}?app=demo")
        return result if isinstance(result, dict) else {}

    def decisions(self, campaign: str, user: str) -> list[dict[str, Any]]:
        """The decision log of ``campaign`` for one user, newest first."""
        result = self.call(
            "GET", f"/v1/campaigns/{quote(campaign)}/decisions?app=demo&user={quote(user)}"
        )
        items = result.get("decisions", []) if isinstance(result, dict) else result
        return [d for d in items if isinstance(d, dict)]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One admin API request; its JSON answer (``{}`` for none), or :class:`AdminError`."""
        answer = self.gateway.admin.call(method, path, body)
        return {} if answer is None else answer

    def stop(self) -> None:
        """Disconnect every device and stop the gateway."""
        if self.started:
            self.fleet.stop()
        self.gateway.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
