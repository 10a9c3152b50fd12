"""The engine behind ``tidings sim``: a gateway process and a fleet, sampled on demand.

No Textual here: the TUI calls these blocking methods from worker threads and keeps its own
history for plots.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from tidings.simulator.engine.fleet import Fleet, FleetConfig
from tidings.simulator.engine.loadtest import GatewayProcess
from tidings.simulator.engine.report import percentiles

__all__ = ["SimEngine", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One sample of the fleet for the dashboard."""

    connected: int
    received: int
    displayed: int
    latency_ms: dict[str, float] = field(default_factory=dict)


class SimEngine:
    """Runs the gateway and N simulated devices; every method blocks (call from a thread)."""

    def __init__(self, devices: int, workers: int = 2, db: str | None = None) -> None:
        # Start multiprocessing's helper now, while the process still has real stdio: under a
        # TUI stderr is replaced and the helper could not be spawned from a worker thread.
        resource_tracker.ensure_running()
        self.devices = devices
        self._tmp = tempfile.TemporaryDirectory() if db is None else None
        path = db or str(Path(self._tmp.name if self._tmp else ".") / "sim.db")
        self.gateway = GatewayProcess(path)
        self.fleet = Fleet(FleetConfig(url=self.gateway.url, devices=devices, workers=workers))
        self.started = False
        self._latencies: list[float] = []

    def start(self, progress: Callable[[int, int], None] | None = None) -> float:
        """Start the gateway, connect every device; return the connect time in seconds."""
        self.gateway.start()
        self.fleet = Fleet(
            FleetConfig(url=self.gateway.url, devices=self.devices, workers=self.fleet.cfg.workers)
        )
        seconds = self.fleet.start(progress)
        self.started = True
        return seconds

    def sample(self) -> Snapshot:
        """Current counters, with latency percentiles over the last 5,000 deliveries."""
        stats = self.fleet.stats()
        self._latencies = (self._latencies + stats["latencies"])[-5000:]
        lat = percentiles(self._latencies) if self._latencies else {}
        return Snapshot(stats["connected"], stats["received"], stats["displayed"], lat)

    def send(self, *, title: str, body: str, users: list[str] | None = None,
             kind: str = "both", category: str = "marketing") -> dict[str, Any]:  # fmt: skip
        """Send a message to some users (default: every device's user) through the admin API."""
        targets = users or [f"u{i}" for i in range(min(self.devices, 10_000))]
        result: dict[str, Any] = self.gateway.admin("POST", "/v1/messages", {
            "app": "demo", "to": {"users": targets}, "kind": kind, "title": title, "body": body,
            "category": category,
        })  # fmt: skip
        return result

    def inbox(self, index: int) -> list[dict[str, Any]]:
        """Device ``index``'s inbox as its SDK holds it."""
        return self.fleet.inbox(index)

    def stop(self) -> None:
        """Disconnect every device and stop the gateway."""
        if self.started:
            self.fleet.stop()
        self.gateway.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
