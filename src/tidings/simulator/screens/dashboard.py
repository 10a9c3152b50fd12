"""The live dashboard: devices connected, events/s, deliveries/s, latency percentiles, and how
the users spread over lifecycle stages and value tiers, day by simulated day."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Sparkline, Static

from tidings.simulator.engine.report import starved_of_cpu
from tidings.simulator.engine.sim import LIFECYCLE_STAGES, TIERS, Endpoints, Snapshot
from tidings.simulator.screens.base import SimScreen
from tidings.simulator.widgets import ClockBar, DistributionChart, MetricTile

__all__ = ["DashboardScreen", "endpoints_text", "fleet_note"]


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def endpoints_text(where: Endpoints) -> Text:
    """Where the simulation's gateway is reached from another terminal, with the commands."""
    out = Text()
    out.append("devices ", style="dim")
    out.append(where.url)
    out.append("   admin API ", style="dim")
    out.append(where.admin_url)
    out.append("   key ", style="dim")
    out.append(where.admin_key)
    out.append(f"\ne.g. tidings why CAMPAIGN u0 --admin-url {where.admin_url} --admin-key"
               f" {where.admin_key}", style="dim")  # fmt: skip
    return out


def fleet_note(snap: Snapshot) -> Text:
    """One plain line when the simulated devices, not the gateway, set the latencies."""
    if not snap.saturated:
        return Text()
    worst = max(snap.loads, key=lambda w: w["loop_lag_ms"]["p99"])
    which = ", ".join(str(n) for n in snap.saturated)
    if starved_of_cpu(snap.loads):
        return Text(
            f"This machine's cores are the bottleneck (worker {which} waited for a core"
            f" {worst.get('waited_for_cpu_pct', 0.0):.0f} % of the time, loop lag p99"
            f" {worst['loop_lag_ms']['p99']:.0f} ms): the latencies include that wait; more"
            " --workers here would not help, run the devices on other machines.",
            style="bold",
        )
    return Text(
        f"The device fleet is the bottleneck (worker {which}: CPU {worst['cpu_pct']:.0f} %,"
        f" loop lag p99 {worst['loop_lag_ms']['p99']:.0f} ms): the latencies are its own"
        " queueing as much as the gateway's; start with more --workers.",
        style="bold",
    )


class DashboardScreen(SimScreen):
    """Counters of the running simulation, refreshed on every sample."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield ClockBar(id="clock")
        yield Static("", id="endpoints")
        yield Static("", id="fleet-note")
        with Horizontal(id="tiles"):
            yield MetricTile("devices connected", id="connected")
            yield MetricTile("events / s", id="events")
            yield MetricTile("deliveries / s", id="deliveries")
            yield MetricTile("latency ms p50 · p95 · p99", id="latency")
        plot = Sparkline([], id="latency-plot", summary_function=max)
        plot.border_title = "p99 fan-out latency (ms), server send → device receive"
        yield plot
        rate = Sparkline([], id="delivery-plot", summary_function=max)
        rate.border_title = "deliveries / s"
        yield rate
        with Horizontal(id="distribution"):
            stages = DistributionChart(LIFECYCLE_STAGES, id="lifecycle-chart")
            stages.border_title = "Users by lifecycle stage, per simulated day"
            yield stages
            tiers = DistributionChart(TIERS, id="tier-chart")
            tiers.border_title = "Users by value tier, per simulated day"
            yield tiers
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._status)
        self.watch(self.app, "snapshot", self._sampled)

    def _status(self, status: str) -> None:
        if not self.sim.running:
            self.query_one("#connected", MetricTile).show(status, "-idle")
            return
        self.query_one("#endpoints", Static).update(endpoints_text(self.sim.engine.endpoints()))

    def _sampled(self, snap: Snapshot) -> None:
        sim = self.sim
        if not sim.running:
            return
        total = sim.engine.devices
        self.query_one("#connected", MetricTile).show(
            f"{snap.connected:,} / {total:,}", "-ok" if snap.connected == total else "-warn"
        )
        if sim.events_per_s is None:
            self.query_one("#events", MetricTile).show("n/a", "-idle")
        else:
            self.query_one("#events", MetricTile).show(f"{sim.events_per_s:,.0f}")
        self.query_one("#deliveries", MetricTile).show(
            f"{sim.deliveries_per_s:,.0f}  (total {snap.received:,})"
        )
        lat = snap.latency_ms
        if lat:
            self.query_one("#latency", MetricTile).show(
                f"{_ms(lat['p50'])} · {_ms(lat['p95'])} · {_ms(lat['p99'])}"
            )
        self.query_one("#fleet-note", Static).update(fleet_note(snap))
        self.query_one("#latency-plot", Sparkline).data = list(sim.latency_history)
        self.query_one("#delivery-plot", Sparkline).data = list(sim.delivery_history)
        days = sim.distribution_days
        self.query_one("#lifecycle-chart", DistributionChart).show(
            [(day, d.get("lifecycle", {})) for day, d in days]
        )
        self.query_one("#tier-chart", DistributionChart).show(
            [(day, d.get("tier", {})) for day, d in days]
        )
