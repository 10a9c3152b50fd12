"""Widgets of the simulator TUI: metric tiles, the device list, campaign funnels, the simulated
clock bar and the lifecycle/tier distribution chart (the device inbox is the SDK's own
``tidings.client_sdk.ui.InboxList``)."""

from __future__ import annotations

from tidings.simulator.widgets.clock import ClockBar, clock_text
from tidings.simulator.widgets.device_list import DeviceList
from tidings.simulator.widgets.distribution import DistributionChart, distribution_text
from tidings.simulator.widgets.funnel import FunnelView, funnel_days_text, funnel_text, quiet_note
from tidings.simulator.widgets.tiles import MetricTile

__all__ = [
    "ClockBar",
    "DeviceList",
    "DistributionChart",
    "FunnelView",
    "MetricTile",
    "clock_text",
    "distribution_text",
    "funnel_days_text",
    "funnel_text",
    "quiet_note",
]
