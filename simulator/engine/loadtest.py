"""The headless load test: a gateway process, a fleet of SDK devices, a scenario, a report.

The gateway runs as ``python -m tidings gateway`` in its own process (so it has a core of its
own and its CPU and RSS can be read from /proc); devices run in worker processes; the optional
bare baseline runs the same fleet harness against a minimal websockets broadcast server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tidings.simulator.engine.baseline import BareServer
from tidings.simulator.engine.fleet import DeviceReport, Fleet, FleetConfig
from tidings.simulator.engine.report import LoadReport

__all__ = ["SCENARIOS", "GatewayProcess", "run_loadtest"]

SCENARIOS = ("broadcast", "reconnect-storm", "segment", "trigger")
AVAILABLE = ("broadcast", "reconnect-storm")
MAX_TARGETS_PER_SEND = 10_000
DEV_ADMIN_KEY = "dev-admin-key"

Progress = Callable[[str, int, int], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``tidings gateway`` in a child process, restartable on the same ports and database."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.port, self.admin_port = _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tidings", "gateway", "--port", str(self.port),
               "--admin-port", str(self.admin_port), "--db", self.db]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.admin("GET", "/healthz")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the gateway did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush (the reconnect-storm scenario)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {DEV_ADMIN_KEY}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=300) as resp:
            return json.loads(resp.read())

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


def _broadcast(gateway: GatewayProcess, devices: int) -> list[str]:
    """Send one message to every device's user, at most 10,000 users per request."""
    ids = []
    for start in range(0, devices, MAX_TARGETS_PER_SEND):
        users = [f"u{i}" for i in range(start, min(devices, start + MAX_TARGETS_PER_SEND))]
        result = gateway.admin("POST", "/v1/messages", {
            "app": "demo", "to": {"users": users}, "kind": "banner", "title": "Flash sale",
            "body": "Half price until midnight", "category": "transactional",
        })  # fmt: skip
        ids.append(result["message_id"])
    return ids


def _collect(fleet: Fleet, ids: list[str], timeout: float) -> DeviceReport:
    merged = DeviceReport()
    for message_id in ids:
        r = fleet.wait_received(message_id, timeout)
        merged.latencies_ms += r.latencies_ms
        for mid, n in r.received.items():
            merged.received[mid] = max(merged.received.get(mid, 0), n)
        merged.displayed_twice += r.displayed_twice
        merged.shown_in_quiet_hours = r.shown_in_quiet_hours
        merged.clicks = r.clicks
        merged.duplicates_dropped = r.duplicates_dropped
        merged.reconnects = r.reconnects
    return merged


def run_loadtest(
    *,
    devices: int,
    scenario: str,
    baseline: bool = False,
    workers: int = 2,
    frame_size: int = 260,
    timeout: float = 120.0,
    progress: Progress | None = None,
    seed: int = 0,
    personas: bool = True,
    quiet_override: tuple[str, str] | None = None,
    fault: str | None = None,
) -> LoadReport:
    """Run one scenario end to end and return its report."""
    if scenario not in AVAILABLE:
        raise ValueError(
            f"scenario {scenario!r} is not available yet (available: {', '.join(AVAILABLE)}); "
            "segment and trigger scenarios need the campaign engine"
        )
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(f"{tmp}/loadtest.db")
        gateway.start()
        config = FleetConfig(
            url=gateway.url,
            devices=devices,
            workers=workers,
            seed=seed,
            personas=personas,
            quiet_override=quiet_override,
            fault=fault,
        )
        fleet = Fleet(config)
        try:
            connect_s = fleet.start(
                None if progress is None else (lambda n, total: progress("connecting", n, total))
            )
            fleet.settle(timeout)  # measure the fan-out, not the start-up traffic
            cpu0 = gateway.cpu_seconds()
            if scenario == "reconnect-storm":
                gateway.kill()
                gateway.start()
                t0 = time.perf_counter()
                back, _ = fleet.wait_connected(timeout)
                extra["reconnected"] = back
                extra["reconnect_s"] = round(time.perf_counter() - t0, 3)
                cpu0 = gateway.cpu_seconds()
            ids = _broadcast(gateway, devices)
            report = _collect(fleet, ids, timeout)
            cpu = gateway.cpu_seconds() - cpu0
            rss = gateway.rss_mib()
        finally:
            fleet.stop()
            gateway.stop()
    expected = devices * len(ids)
    got = sum(min(devices, report.received.get(mid, 0)) for mid in ids)
    unexpected = sum(n for mid, n in report.received.items() if mid not in ids)
    violations = {}
    if report.displayed_twice:
        violations["displayed_twice"] = report.displayed_twice
    if report.shown_in_quiet_hours:
        violations["shown_in_quiet_hours"] = report.shown_in_quiet_hours
    baseline_lat = None
    if baseline:
        baseline_lat = _run_baseline(devices, workers, frame_size, timeout, progress)
    return LoadReport(
        devices=devices,
        scenario=scenario,
        connect_s=connect_s,
        latencies_ms=report.latencies_ms,
        delivery_ratio=got / expected if expected else 1.0,
        precision=got / (got + unexpected) if got + unexpected else 1.0,
        recall=got / expected if expected else 1.0,
        violations=violations,
        gateway_cpu_s=cpu,
        gateway_rss_mib=rss,
        baseline_latencies_ms=baseline_lat,
        extra={
            **extra,
            "duplicates_dropped_by_devices": report.duplicates_dropped,
            "banner_clicks": report.clicks,
        },
    )


def _run_baseline(
    devices: int, workers: int, frame_size: int, timeout: float, progress: Progress | None
) -> list[float]:
    server = BareServer(frame_size)
    server.start()
    fleet = Fleet(FleetConfig(url=server.url, devices=devices, workers=workers, kind="bare"))
    try:
        fleet.start(None if progress is None else (lambda n, t: progress("baseline", n, t)))
        message_id = server.broadcast(devices)
        return fleet.wait_received(message_id, timeout).latencies_ms
    finally:
        fleet.stop()
        server.stop()
