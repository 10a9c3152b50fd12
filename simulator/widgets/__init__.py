"""Widgets of the simulator TUI: metric tiles, the device list, the device inbox view and
campaign funnels."""

from __future__ import annotations

from tidings.simulator.widgets.device_list import DeviceList
from tidings.simulator.widgets.funnel import FunnelView, funnel_text
from tidings.simulator.widgets.inbox import InboxView, inbox_text
from tidings.simulator.widgets.tiles import MetricTile

__all__ = ["DeviceList", "FunnelView", "InboxView", "MetricTile", "funnel_text", "inbox_text"]
