"""Campaigns end to end: real SDK devices, the real gateway and its engine, real SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import APP_A, Device, gateway_config, timeout

from tidings.client_sdk import TidingsClient
from tidings.protocol.tokens import mint_token
from tidings.server.app import serve
from tidings.server.node import Node


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _campaign(cid: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": cid,
        "app": "demo",
        "name": cid,
        "kind": "one_off",
        "content": {"kind": "both", "title": "Hello", "body": "news"},
    }
    return spec | fields


async def _reasons(gateway: Node, cid: str, user: str) -> list[str]:
    return [d.reason for d in await gateway.engine.decisions("demo", cid, user)]


async def test_a_segment_campaign_reaches_exactly_the_matching_users_personalised(
    gateway: Node, devices: Any
) -> None:
    people = {"u1": ("EAST", 30, "Li"), "u2": ("EAST", 20, "Bo"), "u3": ("WEST", 40, "Al")}
    phones: dict[str, Device] = {}
    for user, (region, age, name) in people.items():
        phones[user] = d = await devices(f"dev-{user}", user=user)
        await d.client.identify(user, {"region": region, "age": age, "first_name": name})
    engine = gateway.engine
    await _until(lambda: all(
        (p := engine.audience.profile("demo", u)) is not None and "age" in p.attrs for u in people
    ))  # fmt: skip
    await engine.save(_campaign(
        "east-adults", segment='attr.region = "EAST" and attr.age >= 25',
        content={"kind": "both", "title": "Hi {{ user.first_name | default('there') }}",
                 "body": "Spring sale in {{ user.region | default('town') }}"},
    ))  # fmt: skip
    await engine.start_campaign("demo", "east-adults")
    await phones["u1"].until(lambda: len(phones["u1"].banners) == 1)
    banner = phones["u1"].banners[0]
    assert (banner.title, banner.body) == ("Hi Li", "Spring sale in EAST")
    await asyncio.sleep(0.3)
    assert phones["u2"].banners == [] and phones["u3"].banners == []
    assert await _reasons(gateway, "east-adults", "u1") == ["sent"]
    assert await _reasons(gateway, "east-adults", "u2") == ["not_in_segment"]
    campaign, sent = engine.campaign("demo", "east-adults")
    assert (str(campaign.status), sent) == ("completed", 1)


async def test_abandoned_cart_sends_a_message_naming_the_item_unless_the_user_bought(
    gateway: Node, devices: Any
) -> None:
    engine = gateway.engine
    await engine.save(_campaign(
        "cart", kind="triggered",
        trigger={"event": "add_to_cart", "unless": {"event": "purchase", "within_s": 1}},
        content={"kind": "both", "title": "Forgot something?",
                 "body": "Your {{ event.item | default('cart') }} is waiting"},
    ))  # fmt: skip
    await engine.start_campaign("demo", "cart")
    browser = await devices("dev-browser", user="browser")
    buyer = await devices("dev-buyer", user="buyer")
    browser.client.track("add_to_cart", {"item": "red shoes"})
    buyer.client.track("add_to_cart", {"item": "blue hat"})
    buyer.client.track("purchase", {"amount": 20})
    await browser.until(lambda: len(browser.banners) == 1, seconds=8)
    assert browser.banners[0].body == "Your red shoes is waiting"
    await asyncio.sleep(1.5)  # the buyer's message was due as well
    assert buyer.banners == []
    assert (await _reasons(gateway, "cart", "buyer"))[0] == "unless_matched"
    assert (await _reasons(gateway, "cart", "browser"))[:2] == ["sent", "scheduled"]


async def test_unless_counts_only_the_users_own_event_inside_its_window(
    gateway: Node, devices: Any
) -> None:
    engine = gateway.engine
    await engine.save(_campaign(
        "late-buy", kind="triggered",
        trigger={"event": "add_to_cart", "delay_s": 3,
                 "unless": {"event": "purchase", "within_s": 1}},
    ))  # fmt: skip
    await engine.start_campaign("demo", "late-buy")
    people = {u: await devices(f"dev-{u}", user=u, flush_delay=0.05)
              for u in ("quick", "late", "plain")}  # fmt: skip
    for d in people.values():
        d.client.track("add_to_cart", {"item": "kettle"})
    people["quick"].client.track("purchase", {"amount": 5})  # inside the window: no message
    await asyncio.sleep(1.6)
    people["late"].client.track("purchase", {"amount": 5})  # after it: the message still goes
    for user in ("late", "plain"):  # all three fall due in the same scheduler round
        await people[user].until(lambda user=user: len(people[user].banners) == 1, seconds=8)
    await asyncio.sleep(0.5)
    assert people["quick"].banners == []
    assert (await _reasons(gateway, "late-buy", "quick"))[0] == "unless_matched"
    assert (await _reasons(gateway, "late-buy", "late"))[0] == "sent"


async def test_the_budget_stops_a_triggered_campaign_at_its_inventory(
    gateway: Node, devices: Any
) -> None:
    engine = gateway.engine
    await engine.save(_campaign(
        "first-two", kind="triggered", trigger={"event": "open_app"},
        frequency={"total_budget": 2},
    ))  # fmt: skip
    await engine.start_campaign("demo", "first-two")
    phones = [await devices(f"dev-b{i}", user=f"b{i}") for i in range(3)]
    for phone in phones:
        phone.client.track("open_app")
        await asyncio.sleep(0.3)  # one after the other, so the order is known
    await phones[1].until(lambda: len(phones[1].banners) == 1)
    await asyncio.sleep(0.3)
    assert [len(p.banners) for p in phones] == [1, 1, 0]
    assert await _reasons(gateway, "first-two", "b2") == ["budget_exhausted"]
    campaign, sent = engine.campaign("demo", "first-two")
    assert (str(campaign.status), sent) == ("completed", 2)


async def test_marketing_caps_hold_across_campaigns_and_transactional_passes(
    gateway: Node, devices: Any
) -> None:
    phone = await devices("dev-cap", user="capped")
    engine = gateway.engine
    await _until(lambda: engine.audience.profile("demo", "capped") is not None)
    for i in range(3):  # a new, basic user: at most 2 marketing messages a week
        await engine.save(_campaign(f"promo-{i}", segment="everyone"))
        await engine.start_campaign("demo", f"promo-{i}")
    await engine.save(_campaign(
        "receipt", segment="everyone",
        content={"kind": "inbox", "title": "Order shipped", "body": "On its way",
                 "category": "transactional"},
    ))  # fmt: skip
    await engine.start_campaign("demo", "receipt")
    await phone.until(lambda: len(phone.client.inbox.items()) == 3)
    assert await _reasons(gateway, "promo-2", "capped") == ["capped_tier"]
    decision = (await engine.decisions("demo", "promo-2", "capped"))[0]
    assert "2 per 7 days" in decision.detail
    assert sorted(i.title for i in phone.client.inbox.items()) == [
        "Hello", "Hello", "Order shipped"
    ]  # fmt: skip


async def test_an_ab_campaigns_stats_add_up(gateway: Node, devices: Any) -> None:
    engine = gateway.engine
    phones = [await devices(f"dev-ab{i}", user=f"ab{i}") for i in range(12)]
    await _until(lambda: all(
        engine.audience.profile("demo", f"ab{i}") is not None for i in range(12)
    ))  # fmt: skip
    await engine.save(_campaign(
        "ab", segment="everyone", control_share=0.2,
        variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 1,
                                                "content": {"title": "Hey"}}],
    ))  # fmt: skip
    await engine.start_campaign("demo", "ab")
    _, sent = engine.campaign("demo", "ab")
    await _until(lambda: sum(len(p.banners) for p in phones) == sent)
    first = next(p for p in phones if p.banners)
    await first.client.click(first.banners[0].id, action=None)
    await asyncio.sleep(0.3)  # receipts are batched

    async def settled() -> dict[str, Any]:
        for _ in range(50):
            stats = await engine.stats("demo", "ab")
            if stats["total"]["displayed"] == sent and stats["total"]["clicked"] == 1:
                return stats
            await asyncio.sleep(0.1)
        raise AssertionError(f"stats did not settle: {stats}")

    stats = await settled()
    v = stats["variants"]
    held_out = v["control"]["targeted"]
    assert v["a"]["sent"] + v["b"]["sent"] == stats["total"]["sent"] == sent == 12 - held_out
    assert v["a"]["targeted"] + v["b"]["targeted"] + held_out == 12
    assert v["control"]["sent"] == 0
    assert stats["total"]["delivered"] == sent
    titles = {b.title for p in phones for b in p.banners}
    assert titles <= {"Hello", "Hey"}
    for i, p in enumerate(phones):  # the message matches the variant the log names
        log = await engine.decisions("demo", "ab", f"ab{i}")
        if p.banners:
            assert p.banners[0].title == ("Hey" if log[0].variant == "b" else "Hello")
        else:
            assert log[0].reason == "holdout"


async def test_a_delayed_trigger_survives_a_gateway_restart(tmp_path: Path) -> None:
    db = tmp_path / "tidings.db"
    node = Node(gateway_config(db))
    await node.start()
    token = mint_token(secret=APP_A.secret, app="demo", device="dev-late", user="late")
    await node.engine.save(_campaign(
        "later", kind="triggered", trigger={"event": "signup", "delay_s": 2},
        content={"kind": "inbox", "title": "Welcome", "body": "Glad you are here"},
    ))  # fmt: skip
    await node.engine.start_campaign("demo", "later")
    client = TidingsClient(url=f"ws://127.0.0.1:{node.port}", token=token, device_id="dev-late")
    await client.start()
    await client.wait_connected(timeout=timeout(5))
    client.track("signup")
    await _until(lambda: client.pending_requests == 0)
    await asyncio.sleep(0.2)
    await client.close()
    await node.stop()  # long before the message is due

    restarted = Node(gateway_config(db))
    await restarted.start()
    try:
        client = TidingsClient(
            url=f"ws://127.0.0.1:{restarted.port}", token=token, device_id="dev-late"
        )
        phone = Device(client)
        await client.start()
        await phone.until(lambda: len(client.inbox.items()) == 1, seconds=8)
        assert client.inbox.items()[0].title == "Welcome"
        await asyncio.sleep(1.2)  # a second scheduler round must not send it again
        assert len(client.inbox.items()) == 1
        assert await restarted.engine.decisions("demo", "later", "late") != []
        await client.close()
    finally:
        await restarted.stop()


async def test_erase_leaves_no_trace_of_a_user(gateway: Node, devices: Any) -> None:
    engine, store = gateway.engine, gateway.store
    phone = await devices("dev-gone", user="gone")
    await phone.client.identify("gone", {"first_name": "Gone"})
    phone.client.track("view_content", {"category": "sports"})
    await _until(lambda: (p := engine.audience.profile("demo", "gone")) is not None
                    and p.last_seen > 0 and "first_name" in p.attrs)  # fmt: skip
    await engine.save(_campaign("bye", segment="everyone"))
    await engine.start_campaign("demo", "bye")
    await phone.until(lambda: len(phone.banners) == 1)
    await phone.client.close()
    assert await engine.erase("demo", "gone")
    assert engine.audience.profile("demo", "gone") is None
    assert await store.user("demo", "gone") is None
    export = await store.export_user("demo", "gone")
    assert export == {
        "user": None, "devices": [], "events": [], "messages": [], "decisions": [], "inbox": []
    }  # fmt: skip
    assert await store.devices_of_keys("demo", ["gone"]) == []
    assert await store.pending("demo", "dev-gone", 0, gateway.clock()) == []
    assert (await engine.decisions("demo", "bye", "gone"))[0].detail.startswith("no such user")


async def test_a_campaign_paused_elsewhere_sends_nothing_though_this_node_never_heard(
    gateway: Node, devices: Any
) -> None:
    # Another gateway process pauses the campaign in the shared store, and its news is lost:
    # this node still holds it as running. The commit reads the stored status: nothing is
    # sent, and the node takes the stored campaign.
    engine = gateway.engine
    await engine.save(_campaign(
        "views", kind="triggered", trigger={"event": "view_item"},
        content={"kind": "banner", "title": "Seen it?", "body": "still there"},
    ))  # fmt: skip
    await engine.start_campaign("demo", "views")
    phone = await devices("dev-v", user="viewer")
    phone.client.track("view_item", {})
    await phone.until(lambda: len(phone.banners) == 1)
    assert await gateway.store.set_campaign_status("demo", "views", "paused", time.time(),
                                                   expect=["running"])  # fmt: skip
    assert str(engine.campaign("demo", "views")[0].status) == "running"  # the stale view
    phone.client.track("view_item", {})
    await _until(lambda: str(engine.campaign("demo", "views")[0].status) == "paused")
    await asyncio.sleep(0.3)
    assert len(phone.banners) == 1
    assert engine.campaign("demo", "views")[1] == 1
    assert await _reasons(gateway, "views", "viewer") == ["sent"]


async def test_campaign_messages_live_as_long_as_the_apps_settings_say_for_their_kind(
    tmp_path: Path, mint: Any
) -> None:
    app = dataclasses.replace(APP_A, banner_ttl_s=600, inbox_ttl_s=2 * 86_400)
    async with serve(dataclasses.replace(gateway_config(tmp_path / "t.db"), apps=(app,)),
                     admin=False) as running:  # fmt: skip
        node = running.node
        phone = Device(TidingsClient(url=f"ws://127.0.0.1:{node.port}", device_id="p",
                                     token=mint("p", user="u1")))  # fmt: skip
        await phone.client.start()
        try:
            await phone.client.wait_connected(timeout=timeout(5))
            await phone.client.identify("u1", {"age": 30})
            await _until(lambda: node.engine.audience.profile("demo", "u1") is not None)
            for kind in ("banner", "inbox"):
                await node.engine.save(_campaign(kind, content={"kind": kind, "title": kind,
                                                                "body": "b"}))  # fmt: skip
                await node.engine.start_campaign("demo", kind)
            await phone.until(lambda: len(phone.messages) == 2)
        finally:
            await phone.client.close()
    lives = {m.kind: (m.expires_at - m.created_at) // 1000 for m in phone.messages}
    assert lives == {"banner": 600, "inbox": 2 * 86_400}
    assert {m.kind: m.ttl_default for m in phone.messages} == {"banner": True, "inbox": False}
