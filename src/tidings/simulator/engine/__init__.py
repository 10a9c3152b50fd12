"""The simulator engine (no Textual): device fleet, bare baseline, load tests and reports."""

from __future__ import annotations

from tidings.simulator.engine.fleet import DeviceReport, Fleet, FleetConfig, raise_nofile
from tidings.simulator.engine.loadtest import SCENARIOS, GatewayProcess, run_loadtest
from tidings.simulator.engine.report import LoadReport, percentiles, write_svg

__all__ = [
    "SCENARIOS",
    "DeviceReport",
    "Fleet",
    "FleetConfig",
    "GatewayProcess",
    "LoadReport",
    "percentiles",
    "raise_nofile",
    "run_loadtest",
    "write_svg",
]
