"""``examples/shop_app.py`` runs as written: headless, against a real gateway."""

from __future__ import annotations

import importlib.util
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from helpers import APP_A, timeout
from textual.pilot import Pilot

from tidings.client_sdk import ClientClosed
from tidings.client_sdk.ui import BannerToast, InboxList
from tidings.protocol.frames import Action
from tidings.server.node import Node, SendRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop_app.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shop_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _until(pilot: Pilot[None], predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql).fetchall())


def test_the_example_defaults_to_a_local_gateway_and_the_development_app() -> None:
    shop = _load()
    app = shop.ShopApp()
    assert app.client.urls == ("ws://127.0.0.1:8765",)
    assert (shop.DEV_APP, shop.DEV_SECRET) == ("demo", "dev-secret")  # server/config.py DEV_*
    assert app.client.device_id == "shop-device-1" and app.user == "shopper-1"


async def test_the_shop_example_tracks_key_presses_and_shows_banners_and_the_inbox(
    gateway: Node, tmp_path: Path
) -> None:
    shop = _load()
    app = shop.ShopApp(url=f"ws://127.0.0.1:{gateway.port}", secret=APP_A.secret)
    db = tmp_path / "tidings.db"
    async with app.run_test(size=(110, 32)) as pilot:
        await _until(pilot, lambda: app.client.connected)
        await pilot.press("v", "a", "b")
        await _until(pilot, lambda: len(_rows(db, "SELECT name FROM events")) == 3)
        names = {r[0] for r in _rows(db, "SELECT name FROM events WHERE device_id='shop-device-1'")}
        assert names == {"view_content", "add_to_cart", "purchase"}

        shipped = SendRequest(app="demo", users=("shopper-1",), kind="inbox",
                              title="Your order shipped", body="arrives Friday")  # fmt: skip
        await gateway.send(shipped)
        inbox = app.query_one("#inbox", InboxList)
        await _until(pilot, lambda: inbox.lines()[0].startswith("● Your order shipped"))

        sale = await gateway.send(SendRequest(
            app="demo", users=("shopper-1",), kind="banner", title="Flash sale",
            body="Shoes -30 %", actions=(Action(id="shop", label="Shop now"),),
        ))  # fmt: skip
        toast = app.query_one("#toast", BannerToast)
        await _until(pilot, lambda: toast.has_class("-shown"))
        assert app.focused is inbox  # a banner never takes the focus from what the user does
        await pilot.press("o")  # opens the banner: a click with its first action
        await _until(pilot, lambda: not toast.has_class("-shown"))
        receipts = f"SELECT kind, action FROM receipts WHERE message_id='{sale.message_id}'"
        await _until(pilot, lambda: ("clicked", "shop") in _rows(db, receipts))
        assert ("displayed", None) in _rows(db, receipts)
    with pytest.raises(ClientClosed):  # the app closed its client on the way out
        app.client.track("after")
