"""The ``modal`` kind end to end: admin API and campaigns, the real gateway, real SDK clients
(one modal at a time, quiet hours, urgent bypass), receipts, stats and the Textual widget."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from helpers import APP_A, Device, timeout
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from tidings.client_sdk import FakeClock, QuietHours
from tidings.client_sdk.ui import MessageModal, ModalHost
from tidings.protocol.frames import Action
from tidings.server.admin import AdminServer
from tidings.server.node import Node, SendRequest

KEY = {"Authorization": f"Bearer {APP_A.admin_key}"}


async def _modal(gateway: Node, title: str, user: str = "u1", **kwargs: Any) -> str:
    sent = await gateway.send(
        SendRequest(app="demo", users=(user,), kind="modal", title=title, body="b", **kwargs)
    )
    return sent.message_id


def _receipts(db: Path, device: str) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT message_id, kind FROM receipts WHERE device_id = ? AND kind != 'read'"
            " ORDER BY ts, kind != 'displayed'",
            (device,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def test_modals_show_one_at_a_time_the_next_after_the_answer_to_the_first(
    gateway: Node, devices: Callable[..., Any], tmp_path: Path
) -> None:
    phone: Device = await devices("phone", user="u1", flush_delay=0.01)
    first = await _modal(gateway, "Rate us")
    await phone.until(lambda: len(phone.modals) == 1)
    second = await _modal(gateway, "New terms")
    await phone.until(lambda: phone.client.inbox.get(second) is not None)
    await asyncio.sleep(0.2)
    assert [m.id for m in phone.modals] == [first]  # the second waits
    assert phone.client.modal is not None and phone.client.modal.id == first
    assert phone.banners == [] and phone.client.inbox.items() == []  # not a banner, not inbox

    await phone.client.dismiss(first)
    await phone.until(lambda: len(phone.modals) == 2)
    assert phone.modals[1].id == second and phone.client.modal.id == second  # type: ignore[union-attr]
    await phone.client.click(second, action=None)
    assert phone.client.modal is None
    db = tmp_path / "tidings.db"
    await phone.until(lambda: len(_receipts(db, "phone")) == 4)
    assert sorted(_receipts(db, "phone")) == sorted([
        (first, "displayed"), (first, "dismissed"), (second, "displayed"), (second, "clicked"),
    ])  # fmt: skip


async def test_a_modal_waits_out_quiet_hours_unless_urgent_transactional(
    gateway: Node, devices: Callable[..., Any]
) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    night = dt.datetime(2026, 11, 22, 23, 0, tzinfo=shanghai)
    clock = FakeClock(night.timestamp())
    phone: Device = await devices(
        "phone", user="u1", clock=clock, device_tz="Asia/Shanghai",
        quiet_hours=QuietHours("22:00", "08:00", tz="Asia/Shanghai"),
    )  # fmt: skip
    held = await _modal(gateway, "Spring sale", ttl=3 * 86400)
    await phone.until(lambda: phone.client.inbox.get(held) is not None)
    await asyncio.sleep(0.1)
    assert phone.modals == []  # 23:00 in Shanghai: held

    urgent = await _modal(gateway, "Card blocked", category="transactional", priority="urgent")
    await phone.until(lambda: len(phone.modals) == 1)
    assert phone.modals[0].id == urgent
    await phone.client.dismiss(urgent)
    await asyncio.sleep(0.1)
    assert len(phone.modals) == 1  # closing it does not end the quiet hours

    clock.advance(9 * 3600 + 60)  # 08:01
    await phone.until(lambda: len(phone.modals) == 2)
    assert phone.modals[1].id == held


async def test_a_modal_to_a_user_without_a_device_is_skipped_not_kept(gateway: Node) -> None:
    sent = await gateway.send(
        SendRequest(app="demo", users=("nobody",), kind="modal", title="t", body="b")
    )
    assert (sent.devices, sent.no_device, sent.skipped) == (0, 0, {"no_device": 1})


@pytest_asyncio.fixture
async def admin(gateway: Node) -> AsyncIterator[httpx.AsyncClient]:
    server = AdminServer(gateway, host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=KEY) as client:
            yield client
    finally:
        await server.stop()


@pytest.mark.parametrize("where", ["message", "campaign"])
async def test_a_modal_with_three_buttons_is_refused_and_names_the_field(
    admin: httpx.AsyncClient, where: str
) -> None:
    actions = [{"id": f"a{i}", "label": f"A{i}", "url": ""} for i in range(3)]
    if where == "message":
        body = {"app": "demo", "to": {"users": ["u1"]}, "kind": "modal", "title": "t",
                "body": "b", "actions": actions}  # fmt: skip
        r = await admin.post("/v1/messages", json=body)
    else:
        content = {"kind": "modal", "title": "t", "body": "b", "actions": actions}
        body = {"app": "demo", "id": "m", "name": "m", "kind": "one_off", "content": content}
        r = await admin.post("/v1/campaigns", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "actions" in error["field"] and "at most 2" in error["message"]


async def test_a_modal_campaign_reaches_devices_and_its_funnel_counts_the_answers(
    gateway: Node, admin: httpx.AsyncClient, devices: Callable[..., Any]
) -> None:
    phones: list[Device] = [await devices(f"p{i}", user=f"u{i}", flush_delay=0.01)
                            for i in range(3)]  # fmt: skip
    content = {"kind": "modal", "title": "Two minutes?", "body": "Tell us how we did",
               "actions": [{"id": "yes", "label": "Sure", "url": "shop://survey"}]}  # fmt: skip
    r = await admin.post("/v1/campaigns", json={
        "app": "demo", "id": "survey", "name": "survey", "kind": "one_off", "content": content,
        "segment": "attr.age >= 0 or not attr.age >= 0"})  # fmt: skip
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert (
        await admin.post(f"/v1/campaigns/{cid}/start", params={"app": "demo"})
    ).status_code == 200
    for p in phones:
        await p.until(lambda p=p: len(p.modals) == 1)  # type: ignore[misc]
    assert phones[0].modals[0].actions[0].id == "yes"
    await phones[0].client.click(phones[0].modals[0].id, action="yes")
    await phones[1].client.dismiss(phones[1].modals[0].id)

    deadline = time.monotonic() + timeout(10)
    while True:
        stats = (await admin.get(f"/v1/campaigns/{cid}/stats", params={"app": "demo"})).json()
        modal = stats["total"]["channels"].get("modal", {})
        if modal.get("clicked") == 1 and modal.get("dismissed") == 1:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.05)
    # (a click also marks the message read, as for a banner: the funnel adds that stage)
    assert {k: modal[k] for k in ("delivered", "displayed", "clicked", "dismissed")} == {
        "delivered": 3, "displayed": 3, "clicked": 1, "dismissed": 1}  # fmt: skip


class Host(App[None]):
    def __init__(self, device: Device) -> None:
        super().__init__()
        self.device = device
        self.closed: list[tuple[str, str | None]] = []

    def compose(self) -> ComposeResult:
        yield ModalHost(self.device.client)

    def on_modal_host_closed(self, event: ModalHost.Closed) -> None:
        self.closed.append((event.item.id, event.action))


async def _until(pilot: Pilot[None], predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout(10)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


async def test_the_modal_widget_shows_the_message_centred_and_reports_the_button(
    gateway: Node, devices: Callable[..., Any], tmp_path: Path
) -> None:
    phone: Device = await devices("phone", user="u1", flush_delay=0.01)
    app = Host(phone)
    async with app.run_test(size=(100, 30)) as pilot:
        actions = (Action(id="rate", label="Rate"), Action(id="later", label="Later"))
        first = await _modal(gateway, "Enjoying the shop?", actions=actions,
                             image="https://example.com/stars.png")  # fmt: skip
        await _until(pilot, lambda: isinstance(app.screen, MessageModal))
        screen = app.screen
        assert isinstance(screen, MessageModal) and screen.item.id == first
        labels = [str(b.label) for b in screen.query("Button")]  # type: ignore[attr-defined]
        assert labels == ["Rate", "Later", "Close"]
        second = await _modal(gateway, "Second")
        await pilot.click("#modal-action-0")
        await _until(pilot, lambda: (first, "rate") in app.closed)
        await _until(pilot, lambda: isinstance(app.screen, MessageModal)
                     and app.screen.item.id == second)  # fmt: skip
        await pilot.press("escape")
        await _until(pilot, lambda: (second, None) in app.closed)
        assert not isinstance(app.screen, MessageModal)
    db = tmp_path / "tidings.db"
    await phone.until(lambda: len(_receipts(db, "phone")) == 4)
    assert sorted(_receipts(db, "phone")) == sorted([
        (first, "displayed"), (first, "clicked"), (second, "displayed"), (second, "dismissed"),
    ])  # fmt: skip
