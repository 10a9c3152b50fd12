"""The Tidings client SDK: embed :class:`TidingsClient` in an app.

Quick use::

    client = TidingsClient(url="ws://127.0.0.1:8765", token=token, device_id="dev-1",
                           quiet_hours=QuietHours("22:00", "08:00", tz="Asia/Shanghai"))
    client.on_banner(show)
    client.on_error(report)  # a request refused for good (dropped), or the device refused
    async with client:
        client.track("view_content", {"category": "sports"})
"""

from __future__ import annotations

from tidings.client_sdk.banners import BannerPolicy
from tidings.client_sdk.client import ClientStats, TidingsClient
from tidings.client_sdk.clock import Clock, ClockState, FakeClock, SimClock, SystemClock
from tidings.client_sdk.errors import (
    PERMANENT_CODES,
    ClientClosed,
    ClientError,
    QueuedRequest,
    Refused,
    RequestRefused,
    is_temporary,
)
from tidings.client_sdk.inbox import Inbox, InboxItem
from tidings.client_sdk.quiet_hours import QuietHours
from tidings.client_sdk.render import TerminalRenderer
from tidings.client_sdk.sync import SyncTidingsClient

__all__ = [
    "PERMANENT_CODES",
    "BannerPolicy",
    "ClientClosed",
    "ClientError",
    "ClientStats",
    "Clock",
    "ClockState",
    "FakeClock",
    "Inbox",
    "InboxItem",
    "QueuedRequest",
    "QuietHours",
    "Refused",
    "RequestRefused",
    "SimClock",
    "SyncTidingsClient",
    "SystemClock",
    "TerminalRenderer",
    "TidingsClient",
    "is_temporary",
]
