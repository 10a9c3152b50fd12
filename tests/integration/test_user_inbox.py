"""The inbox belongs to the user; erasure ends what a connected device could bring back.

Real SDK devices over real WebSockets against the real gateway, and its admin API over HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from helpers import APP_A, timeout
from rawclient import open_session

from tidings.client_sdk import FakeClock, QuietHours
from tidings.client_sdk.errors import Refused
from tidings.protocol import codes
from tidings.protocol.frames import Event, Events
from tidings.server.admin import AdminServer
from tidings.server.node import Node

AUTH = {"Authorization": f"Bearer {APP_A.admin_key}"}


@pytest_asyncio.fixture
async def http(gateway: Node) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the gateway's admin API, holding the demo app's key."""
    server = AdminServer(gateway, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False, headers=AUTH,
                                     timeout=timeout(10)) as client:  # fmt: skip
            yield client
    finally:
        await server.stop()


async def send(http: httpx.AsyncClient, users: list[str], **body: Any) -> dict[str, Any]:
    answer = await http.post("/v1/messages", json={"app": "demo", "to": {"users": users},
                                                   "title": "t", "body": "b", **body})  # fmt: skip
    assert answer.status_code == 202, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_a_brand_new_device_gets_the_users_inbox_with_its_read_state_and_no_banner(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    phone = await devices("phone", user="u1")
    news = await send(http, users=["u1"], kind="inbox", body="news")
    sale = await send(http, users=["u1"], kind="both", body="sale")
    banner = await send(http, users=["u1"], kind="banner", body="only now")
    await phone.until(lambda: len(phone.client.inbox.items()) == 2)
    await phone.client.inbox.mark_read(news["message_id"])
    await phone.until(lambda: not phone.client.pending_requests)

    tablet = await devices("tablet", user="u1")  # a new device: resume 0, inbox_ver 0
    await tablet.until(lambda: len(tablet.client.inbox.items()) == 2)
    await tablet.until(lambda: tablet.client.inbox.unread_count == 1)
    items = {i.id: i for i in tablet.client.inbox.items()}
    assert set(items) == {news["message_id"], sale["message_id"]}
    assert items[news["message_id"]].read and not items[sale["message_id"]].read
    await asyncio.sleep(0.2)
    assert tablet.banners == [], "an older message comes into the inbox, never as a banner"
    assert banner["message_id"] not in {m.id for m in tablet.messages}

    # Deleting on the tablet reaches the phone live; a third device never sees it.
    await tablet.client.inbox.delete(sale["message_id"])
    await phone.until(lambda: [i.id for i in phone.client.inbox.items()] == [news["message_id"]])
    laptop = await devices("laptop", user="u1")
    await laptop.until(lambda: len(laptop.client.inbox.items()) == 1)
    assert laptop.client.inbox.items()[0].read


async def test_a_reinstalled_device_gets_its_inbox_back_once(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    phone = await devices("phone", user="u1", flush_delay=0.01)
    sent = await send(http, users=["u1"], kind="both", body="kept")
    await phone.until(lambda: len(phone.banners) == 1)
    await phone.until(lambda: phone.client.stats.acks_sent >= 1)
    await asyncio.sleep(0.1)  # the gateway stores acks in a short batch window
    await phone.client.close()

    again = await devices("phone", user="u1")  # same device id, local data gone
    await again.until(lambda: len(again.client.inbox.items()) == 1)
    assert again.client.inbox.items()[0].id == sent["message_id"]
    await again.client.close()
    once_more = await devices("phone", user="u1")  # nothing lost this time: nothing new
    await once_more.until(lambda: len(once_more.client.inbox.items()) == 1)
    assert once_more.banners == []


async def test_an_inbox_message_to_a_user_without_a_device_waits_for_their_first_device(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    welcome = await send(http, users=["newbie"], kind="inbox", body="welcome")
    assert welcome["no_device"] == 1 and welcome["devices"] == 0
    flash = await send(http, users=["newbie"], kind="banner", body="now or never")
    assert flash["no_device"] == 0 and flash["skipped"] == {"no_device": 1}
    short = await send(http, users=["newbie"], kind="inbox", body="brief", ttl=1)
    await asyncio.sleep(1.1)

    first = await devices("first-phone", user="newbie")
    await first.until(lambda: len(first.client.inbox.items()) == 1)
    await asyncio.sleep(0.2)
    assert [i.id for i in first.client.inbox.items()] == [welcome["message_id"]]
    assert {m.id for m in first.messages} == {welcome["message_id"]}, (
        "the banner-only and the expired message never arrive"
    )
    assert short["message_id"] not in {m.id for m in first.messages}
    assert first.banners == []


async def test_erasing_a_user_disconnects_their_devices_and_nothing_comes_back_from_them(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    phone = await devices("phone", user="u1", flush_delay=0.01)
    errors: list[Exception] = []
    phone.client.on_error(errors.append)
    phone.client.track("opened")
    await phone.client.identify("u1", {"plan": "pro"})
    await phone.until(lambda: not phone.client.pending_requests)
    assert (await http.delete("/v1/users/u1", params={"app": "demo"})).status_code == 204
    await phone.until(lambda: bool(errors))
    assert isinstance(errors[-1], Refused) and errors[-1].close_code == codes.CLOSE_ERASED
    assert not phone.client.connected
    with pytest.raises(Exception):  # noqa: B017 - the client is done for good
        await phone.client.wait_connected(timeout=timeout(1))
    await asyncio.sleep(0.3)
    assert await gateway.store.user("demo", "u1") is None
    assert (await http.get("/v1/users/u1", params={"app": "demo"})).status_code == 404


async def test_an_erased_users_device_drops_what_it_had_queued_for_good(
    gateway: Node, devices: Any, http: httpx.AsyncClient, tmp_path: Any
) -> None:
    path = str(tmp_path / "tab.db")
    tab = await devices("tab", user="u2", store_path=path, flush_delay=60)
    sent = await send(http, users=["u2"], kind="inbox", body="yours")
    await tab.until(lambda: len(tab.client.inbox.items()) == 1)
    tab.client.track("late")  # queued: reports wait a minute here
    assert tab.client.pending_requests == 1
    assert (await http.delete("/v1/users/u2", params={"app": "demo"})).status_code == 204
    await tab.until(lambda: tab.client.last_error is not None)
    assert tab.client.pending_requests == 0 and tab.client.inbox.items() == []
    await tab.client.close()
    reopened = await devices("tab", user="u2", store_path=path, connect=False)
    assert reopened.client.pending_requests == 0
    assert reopened.client.inbox.get(sent["message_id"]) is None
    await asyncio.sleep(0.3)
    assert await gateway.store.count_events("demo") == 0


async def test_a_write_from_a_session_open_during_erasure_is_refused_and_ends_it(
    gateway: Node, mint: Any
) -> None:
    raw = await open_session(gateway.port, mint("tab", user="u9"))
    assert await gateway.erase_user("demo", "u9") is True
    # Another node would close the session only when the broker tells it; the store refuses
    # the write meanwhile: the device is no longer registered.
    await raw.send(Events(rid=1, events=(Event(id="e1", name="opened", ts=1),)))
    await asyncio.wait_for(raw.ws.wait_closed(), timeout(5))
    assert raw.ws.close_code == codes.CLOSE_ERASED
    assert await gateway.store.user("demo", "u9") is None
    assert await gateway.store.count_events("demo") == 0


async def test_a_default_lifetime_banner_held_overnight_is_shown_when_quiet_hours_end(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    now = dt.datetime.now(shanghai)
    night = now.replace(hour=23, minute=0, second=0, microsecond=0)
    if night < now:
        night += dt.timedelta(days=1)
    clock = FakeClock(night.timestamp())
    phone = await devices(
        "phone", user="u1", clock=clock, device_tz="Asia/Shanghai", flush_delay=0.01,
        quiet_hours=QuietHours("22:00", "08:00", tz="Asia/Shanghai"),
    )  # fmt: skip
    gateway.clock = lambda: night.timestamp()  # the server's 1-hour default counts from 23:00
    default = await send(http, users=["u1"], kind="banner", body="good night")
    flash = await send(http, users=["u1"], kind="banner", body="ends at midnight", ttl=3600)
    await phone.until(lambda: {m.id for m in phone.messages} == {default["message_id"],
                                                                 flash["message_id"]})  # fmt: skip
    await asyncio.sleep(0.1)
    assert phone.banners == []
    clock.advance(9 * 3600 + 60)  # 08:01 in Shanghai
    await phone.until(lambda: len(phone.banners) == 1)
    assert phone.banners[0].id == default["message_id"]
    # The flash sale expired unseen at midnight: the device says so, and the log shows it.
    await phone.until(lambda: not phone.client.pending_requests)
    fates = await gateway.store.fates("demo", "u1", [flash["message_id"]])
    expired = [f for f in fates if f.what == "expired"]
    assert len(expired) == 1 and expired[0].at == pytest.approx(night.timestamp() + 3600)
    assert [f.what for f in await gateway.store.fates("demo", "u1", [default["message_id"]])
            if f.what != "delivered"] == ["displayed"]  # fmt: skip


async def test_a_campaign_start_counts_users_without_a_device_whose_first_device_gets_it(
    gateway: Node, devices: Any, http: httpx.AsyncClient
) -> None:
    for user in ("pre-1", "pre-2"):
        patched = await http.patch(
            f"/v1/users/{user}", json={"app": "demo", "attrs": {"cohort": "pre"}}
        )
        assert patched.status_code == 200, patched.text
    for cid, kind in (("pre-news", "both"), ("pre-flash", "banner")):
        made = await http.post("/v1/campaigns", json={
            "app": "demo", "id": cid, "name": cid, "kind": "one_off",
            "segment": 'attr.cohort = "pre"',
            "content": {"kind": kind, "title": "Hello", "body": "before you arrived"},
        })  # fmt: skip
        assert made.status_code == 201, made.text
    news = await http.post("/v1/campaigns/pre-news/start", params={"app": "demo"})
    assert news.status_code == 200, news.text
    assert (news.json()["no_device"], news.json()["skipped"]) == (2, {})
    flash = await http.post("/v1/campaigns/pre-flash/start", params={"app": "demo"})
    assert (flash.json()["no_device"], flash.json()["skipped"]) == (0, {"no_device": 2})

    phone = await devices("pre-phone", user="pre-1")
    await phone.until(lambda: len(phone.client.inbox.items()) == 1)
    await asyncio.sleep(0.2)
    assert phone.client.inbox.items()[0].campaign == "pre-news"
    assert phone.banners == [] and len(phone.messages) == 1
