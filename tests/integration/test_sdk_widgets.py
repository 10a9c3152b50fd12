"""The SDK's Textual widgets (``tidings.client_sdk.ui``) over a real client and gateway."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Device, timeout
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Static

from tidings.client_sdk import TidingsClient
from tidings.client_sdk.ui import BannerToast, InboxList
from tidings.protocol.frames import Action
from tidings.server.node import Node, SendRequest

SIZE = (100, 30)


class Host(App[None]):
    """An app that embeds one SDK client and both widgets."""

    def __init__(self, client: TidingsClient, ttl: float = 30.0) -> None:
        super().__init__()
        self.client = client
        self.ttl = ttl
        self.answers: list[Any] = []

    def compose(self) -> ComposeResult:
        yield BannerToast(self.client, ttl=self.ttl, id="toast")
        yield InboxList(self.client, id="inbox")

    def on_banner_toast_clicked(self, event: BannerToast.Clicked) -> None:
        self.answers.append(("clicked", event.item.id, event.action))

    def on_banner_toast_dismissed(self, event: BannerToast.Dismissed) -> None:
        self.answers.append(("dismissed", event.item.id))

    def on_banner_toast_expired(self, event: BannerToast.Expired) -> None:
        self.answers.append(("expired", event.item.id))

    def on_inbox_list_opened(self, event: InboxList.Opened) -> None:
        self.answers.append(("opened", event.item.id))


async def _until(pilot: Pilot[None], predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def _receipts(db: Path, device: str) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT message_id, kind, action FROM receipts WHERE device_id = ? ORDER BY ts",
            (device,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def _send(gateway: Node, title: str, **kwargs: Any) -> str:
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title=title, **kwargs))
    return sent.message_id


async def test_the_inbox_list_follows_the_client_live_and_reads_deletes_and_opens_through_it(
    gateway: Node, devices: Callable[..., Any], tmp_path: Path
) -> None:
    phone: Device = await devices("phone", user="u1", flush_delay=0.01)
    tablet: Device = await devices("tablet", user="u1", flush_delay=0.01)
    app = Host(phone.client)
    async with app.run_test(size=SIZE) as pilot:
        inbox = app.query_one("#inbox", InboxList)
        assert inbox.lines() == ["(empty)"] and "0 items" in str(inbox.border_title)

        older = await _send(gateway, "Welcome", body="glad you are here", kind="inbox")
        newer = await _send(gateway, "Spring sale", body="20% off shoes", kind="inbox")
        await _until(pilot, lambda: len(inbox.items) == 2)  # no reload: the client pushed it
        assert inbox.lines()[0].startswith("● Spring sale  20% off shoes")
        assert str(inbox.border_title) == "Inbox · 2 items · 2 unread"
        assert inbox.has_class("-unread")
        await tablet.until(lambda: len(tablet.client.inbox.items()) == 2)

        inbox.focus()
        await pilot.press("r")  # the newest is highlighted first
        await _until(pilot, lambda: inbox.unread_count == 1)
        assert inbox.lines()[0].startswith("  Spring sale")
        await tablet.until(lambda: tablet.client.inbox.get(newer).read)  # type: ignore[union-attr]
        await pilot.press("r")
        await tablet.until(lambda: not tablet.client.inbox.get(newer).read)  # type: ignore[union-attr]

        await pilot.press("d")
        await _until(pilot, lambda: [i.id for i in inbox.items] == [older])
        await tablet.until(lambda: tablet.client.inbox.get(newer) is None)

        await pilot.press("enter")  # open: a click receipt, and read everywhere
        await _until(pilot, lambda: inbox.unread_count == 0 and not inbox.has_class("-unread"))
        assert ("opened", older) in app.answers
        await tablet.until(lambda: tablet.client.inbox.get(older).read)  # type: ignore[union-attr]
        await phone.until(lambda: (older, "clicked", None) in _receipts(tmp_path / "tidings.db",
                                                                         "phone"))  # fmt: skip


async def test_the_banner_toast_shows_a_banner_with_its_actions_and_reports_the_click(
    gateway: Node, devices: Callable[..., Any], tmp_path: Path
) -> None:
    phone: Device = await devices("phone", user="u1", flush_delay=0.01)
    app = Host(phone.client)
    async with app.run_test(size=SIZE) as pilot:
        toast = app.query_one("#toast", BannerToast)
        assert not toast.has_class("-shown") and not toast.display

        actions = (Action(id="shop", label="Shop now"), Action(id="later", label="Later"))
        sale = await _send(gateway, "Flash sale", body="ends tonight", kind="banner",
                           actions=actions)  # fmt: skip
        await _until(pilot, lambda: toast.has_class("-shown"))
        assert toast.display and toast.banner is not None and toast.banner.id == sale
        texts = [str(s.content) for s in toast.query(Static)]
        assert "Flash sale" in texts and "ends tonight" in texts

        await pilot.click("#toast-action-0")
        await _until(pilot, lambda: not toast.has_class("-shown"))
        assert app.answers == [("clicked", sale, "shop")]
        db = tmp_path / "tidings.db"
        # (a click also marks the message read, which the gateway records as a "read")
        await phone.until(lambda: [r[1:] for r in _receipts(db, "phone") if r[1] != "read"]
                          == [("displayed", None), ("clicked", "shop")])  # fmt: skip


async def test_the_banner_toast_queues_reports_a_dismiss_and_hides_on_its_ttl(
    gateway: Node, devices: Callable[..., Any], tmp_path: Path
) -> None:
    phone: Device = await devices("phone", user="u1", flush_delay=0.01)
    app = Host(phone.client, ttl=0.5)
    async with app.run_test(size=SIZE) as pilot:
        toast = app.query_one("#toast", BannerToast)
        first = await _send(gateway, "First", kind="banner")
        await _until(pilot, lambda: toast.banner is not None)
        second = await _send(gateway, "Second", kind="banner")
        await _until(pilot, lambda: [i.id for i in toast.waiting] == [second])
        assert toast.banner is not None and toast.banner.id == first  # still up: its turn first

        await pilot.click("#toast-dismiss")
        await _until(pilot, lambda: toast.banner is not None and toast.banner.id == second)
        await _until(pilot, lambda: toast.banner is None, seconds=5)  # left alone: it hides
        assert not toast.display
        # The toast posts its "expired" message as it hides: the host reads it a moment later.
        await _until(pilot, lambda: len(app.answers) == 2)
        assert app.answers == [("dismissed", first), ("expired", second)]
        db = tmp_path / "tidings.db"
        await phone.until(lambda: (first, "dismissed", None) in _receipts(db, "phone"))
        kinds = {(mid, kind) for mid, kind, _ in _receipts(db, "phone")}
        assert (second, "displayed") in kinds and (second, "dismissed") not in kinds


def test_a_banner_toast_refuses_a_ttl_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="ttl must be a positive number"):
        BannerToast(ttl=0)
