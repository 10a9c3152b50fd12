"""Widgets of the simulator TUI: metric tiles, the device list and campaign funnels (the device
inbox is the SDK's own ``tidings.client_sdk.ui.InboxList``)."""

from __future__ import annotations

from tidings.simulator.widgets.device_list import DeviceList
from tidings.simulator.widgets.funnel import FunnelView, funnel_text
from tidings.simulator.widgets.tiles import MetricTile

__all__ = ["DeviceList", "FunnelView", "MetricTile", "funnel_text"]
