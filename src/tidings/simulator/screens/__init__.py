"""Screens of the simulator TUI: dashboard, device browser, device view, campaigns, composer."""

from __future__ import annotations

from tidings.simulator.screens.base import SimScreen
from tidings.simulator.screens.campaigns import CampaignsScreen
from tidings.simulator.screens.composer import ComposerScreen
from tidings.simulator.screens.dashboard import DashboardScreen
from tidings.simulator.screens.device import DeviceScreen
from tidings.simulator.screens.devices import DevicesScreen

__all__ = [
    "CampaignsScreen",
    "ComposerScreen",
    "DashboardScreen",
    "DeviceScreen",
    "DevicesScreen",
    "SimScreen",
]
