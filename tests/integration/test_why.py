"""``tidings why``: the decision, what happened to the message after, and why not, in words.

A real gateway with its admin API, real SDK devices over WebSockets, and the CLI's ``main``
(run in a thread: it makes blocking HTTP calls to the admin server on this loop).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from helpers import APP_A, timeout

from tidings.cli import main
from tidings.server.admin import AdminServer
from tidings.server.node import Node

AUTH = {"Authorization": f"Bearer {APP_A.admin_key}"}
ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


@pytest_asyncio.fixture
async def admin_url(gateway: Node) -> AsyncIterator[str]:
    server = AdminServer(gateway, "127.0.0.1", 0)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


async def why(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["why", *args, "--admin-url", url, "--admin-key", APP_A.admin_key]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return out


async def create_and_start(url: str, spec: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, trust_env=False) as http:
        made = await http.post("/v1/campaigns", json={"app": "demo", "name": spec["id"], **spec})
        assert made.status_code == 201, made.text
        started = await http.post(f"/v1/campaigns/{spec['id']}/start", params={"app": "demo"})
        assert started.status_code == 200, started.text


async def test_why_shows_what_happened_to_the_message_after_it_was_sent_in_local_time(
    gateway: Node, devices: Any, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = await devices("phone", user="w1", flush_delay=0.01)
    await phone.client.identify("w1", {"cohort": "why"})
    await phone.until(lambda: not phone.client.pending_requests)
    await create_and_start(admin_url, {
        "id": "why-sale", "kind": "one_off", "segment": 'attr.cohort = "why"',
        "content": {"kind": "both", "title": "Sale", "body": "20% off"},
    })  # fmt: skip
    await phone.until(lambda: len(phone.banners) == 1)
    item = phone.banners[0]
    await phone.client.click(item.id, None)
    await phone.until(lambda: not phone.client.pending_requests)
    await asyncio.sleep(0.2)  # acks are stored in a short batch window

    out = await why(admin_url, capsys, "why-sale", "w1", "--tz", "Asia/Shanghai")
    lines = out.splitlines()
    assert lines[0].startswith("w1 and campaign why-sale:") and "Asia/Shanghai (--tz)" in lines[0]
    assert re.match(ISO_MS + rf"  sent: message {item.id} \(1 device\(s\)\)", lines[1])
    assert "+08:00" in lines[1]
    after = [re.sub(ISO_MS, "T", line).strip() for line in lines[2:]]
    assert "T  delivered to phone" in after
    assert after.index("T  displayed on phone") < after.index("T  clicked on phone")
    assert "T  read in the inbox" in after
    in_users_zone = await why(admin_url, capsys, "why-sale", "w1", "--tz", "user")
    assert "times in UTC (the user's zone)" in in_users_zone.splitlines()[0]


async def test_why_names_the_failed_condition_and_says_plainly_when_nothing_triggered_yet(
    gateway: Node, devices: Any, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = await devices("phone", user="w2", flush_delay=0.01)
    await phone.client.identify("w2", {"plan": "free"})
    await phone.until(lambda: not phone.client.pending_requests)
    await create_and_start(admin_url, {
        "id": "big-carts", "kind": "triggered", "segment": 'attr.plan = "free"',
        "trigger": {"event": "add_to_cart", "where": [{"prop": "price", "op": "ge",
                                                        "value": 50}]},
        "content": {"kind": "banner", "title": "Still thinking?", "body": "Free shipping"},
    })  # fmt: skip
    nothing = await why(admin_url, capsys, "big-carts", "w2")
    assert "not_triggered: not triggered yet — in the segment, but no add_to_cart event" in (
        nothing
    )
    assert "(your local zone; --tz to change)" in nothing.splitlines()[0]

    phone.client.track("add_to_cart", {"price": 20})
    await phone.until(lambda: not phone.client.pending_requests)
    await asyncio.sleep(0.1)
    phone.client.track("add_to_cart", {"price": 30})
    await phone.until(lambda: not phone.client.pending_requests)
    out = await why(admin_url, capsys, "big-carts", "w2", "--limit", "2")
    lines = out.splitlines()[1:]
    assert len(lines) == 2
    for line, price in zip(lines, (30, 20), strict=True):  # newest first
        assert "trigger_filter: the trigger event did not pass the trigger's filter" in line
        assert f"price >= 50 did not hold (price was {price})" in line


async def test_why_orders_decisions_logged_in_the_same_second_by_the_log_order(
    gateway: Node, devices: Any, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    moment = 1_790_000_000.25
    gateway.clock = lambda: moment  # every decision below is logged at the same instant
    phone = await devices("phone", user="w3", flush_delay=0.01)
    await create_and_start(admin_url, {
        "id": "same-second", "kind": "triggered",
        "trigger": {"event": "tap", "where": [{"prop": "n", "op": "eq", "value": 0}]},
        "content": {"kind": "banner", "title": "t", "body": "b"},
    })  # fmt: skip
    for n in (1, 2, 3):
        phone.client.track("tap", {"n": n})
        await phone.until(lambda: not phone.client.pending_requests)
    out = await why(admin_url, capsys, "same-second", "w3", "--tz", "UTC")
    lines = out.splitlines()[1:]
    assert [line.split("(n was ")[1][0] for line in lines] == ["3", "2", "1"]
    assert all(line.startswith("2026-09-21T14:13:20.250+00:00") for line in lines)
    await asyncio.sleep(timeout(0))
