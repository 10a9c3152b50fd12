"""The Tidings client SDK: embed :class:`TidingsClient` in an app.

Quick use::

    client = TidingsClient(url="ws://127.0.0.1:8765", token=token, device_id="dev-1",
                           quiet_hours=QuietHours("22:00", "08:00", tz="Asia/Shanghai"))
    client.on_banner(show)
    async with client:
        client.track("view_content", {"category": "sports"})
"""

from __future__ import annotations

from tidings.client_sdk.banners import BannerPolicy
from tidings.client_sdk.client import ClientStats, TidingsClient
from tidings.client_sdk.clock import Clock, FakeClock, SystemClock
from tidings.client_sdk.errors import ClientClosed, ClientError, Refused
from tidings.client_sdk.inbox import Inbox, InboxItem
from tidings.client_sdk.quiet_hours import QuietHours
from tidings.client_sdk.render import TerminalRenderer
from tidings.client_sdk.sync import SyncTidingsClient

__all__ = [
    "BannerPolicy",
    "ClientClosed",
    "ClientError",
    "ClientStats",
    "Clock",
    "FakeClock",
    "Inbox",
    "InboxItem",
    "QuietHours",
    "Refused",
    "SyncTidingsClient",
    "SystemClock",
    "TerminalRenderer",
    "TidingsClient",
]
