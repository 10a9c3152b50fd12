"""What a marketer measures, end to end: real SDK devices, the admin API over HTTP, the CLI.

The node runs on a clock the test can move forward (days pass in a second); the devices' SDK
clocks follow it, so events, receipts and sends share one timeline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from helpers import APP_A, Device, gateway_config, timeout

from tidings.cli import main
from tidings.client_sdk import TidingsClient
from tidings.client_sdk.clock import SystemClock
from tidings.protocol.tokens import mint_token
from tidings.server.admin import AdminServer
from tidings.server.campaigns.model import CONTROL, Content, Variant
from tidings.server.campaigns.stats import diff_interval
from tidings.server.campaigns.variants import assign, in_test_group
from tidings.server.node import Node

DAY = 86_400.0


class Shift:
    """Real time plus an offset the test moves; the node and every device read it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class DeviceClock(SystemClock):
    """The SDK's clock on the shifted timeline (sleeps stay real)."""

    def __init__(self, shift: Shift) -> None:
        self.shift = shift

    def now(self) -> float:
        return self.shift()


@dataclass
class World:
    """A node on a movable clock, its admin API, and a factory of SDK devices."""

    node: Node
    shift: Shift
    http: httpx.AsyncClient
    admin_url: str
    devices: dict[str, Device] = field(default_factory=dict)

    async def device(self, user: str) -> Device:
        token = mint_token(secret=APP_A.secret, app=APP_A.id, device=f"dev-{user}", user=user,
                           ttl=90 * 86_400, now=self.shift())  # fmt: skip
        client = TidingsClient(url=f"ws://127.0.0.1:{self.node.port}", token=token,
                               device_id=f"dev-{user}", clock=DeviceClock(self.shift),
                               flush_delay=0.01)  # fmt: skip
        d = Device(client)
        await client.start()
        await client.wait_connected(timeout=timeout(5))
        self.devices[user] = d
        return d

    async def api(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {APP_A.admin_key}"}
        r = await self.http.request(method, path, headers=headers, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    async def cohort(self, users: list[str], cohort: str) -> None:
        for user in users:
            await self.api(
                "PATCH", f"/v1/users/{user}", json={"app": "demo", "attrs": {"cohort": cohort}}
            )

    async def create_and_start(self, spec: dict[str, Any]) -> None:
        await self.api("POST", "/v1/campaigns", json=spec)
        await self.api("POST", f"/v1/campaigns/{spec['id']}/start", params={"app": "demo"})

    async def stats(self, cid: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.api("GET", f"/v1/campaigns/{cid}/stats",
                                               params={"app": "demo"})  # fmt: skip
        return found

    async def event(self, user: str, name: str, **props: Any) -> None:
        body = {"app": "demo", "user": user, "events": [{"name": name, "props": props}]}
        await self.api("POST", "/v1/events", json=body)

    async def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> str:
        capsys.readouterr()
        argv = ["campaign", *args, "--admin-url", self.admin_url, "--admin-key",
                APP_A.admin_key, "--app", "demo"]  # fmt: skip
        assert await asyncio.to_thread(main, argv) == 0, capsys.readouterr().err
        return capsys.readouterr().out


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    shift = Shift()
    node = Node(gateway_config(tmp_path / "t.db"), clock=shift)
    await node.start()
    server = AdminServer(node, "127.0.0.1", 0)
    await server.start()
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=10) as http:
        w = World(node=node, shift=shift, http=http, admin_url=server.url)
        try:
            yield w
        finally:
            for d in w.devices.values():
                await d.client.close()
            await server.stop()
            await node.stop()


def users_where(cid: str, want: Callable[[str], bool], n: int, prefix: str) -> list[str]:
    """The first ``n`` user ids ``prefix0, prefix1, ...`` for which ``want`` holds."""
    out = []
    i = 0
    while len(out) < n:
        user = f"{prefix}{i}"
        if want(user):
            out.append(user)
        i += 1
    return out


async def settled(w: World, cid: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Stats once receipts and events (written in batches) have arrived."""
    for _ in range(100):
        stats = await w.stats(cid)
        if check(stats):
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"stats did not settle: {json.dumps(stats, indent=1)}")


# --- inbox campaigns, the control group, lift and retention ------------------------------------


async def test_an_inbox_campaign_is_measured_read_clicked_converted_against_its_holdout(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w, cid = world, "inbox-sale"
    recipients = users_where(cid, lambda u: assign(cid, u, (), 0.4) is None, 10, "r")
    held = users_where(cid, lambda u: assign(cid, u, (), 0.4) == CONTROL, 15, "h")
    phones = {u: await w.device(u) for u in recipients}
    await w.cohort(recipients + held, "sale")
    await w.create_and_start({
        "id": cid, "app": "demo", "name": "Inbox sale", "kind": "one_off",
        "segment": 'attr.cohort = "sale"', "control_share": 0.4,
        "content": {"kind": "inbox", "title": "Sale", "body": "20% off",
                    "actions": [{"id": "shop", "label": "Shop", "url": "shop://sale"}]},
        "conversion": {"event": "order_paid", "where": {"sku": "x"}},
    })  # fmt: skip
    for u in recipients:
        await phones[u].until(lambda u=u: len(phones[u].client.inbox.items()) == 1)
    for u in recipients[:6]:  # read, click, buy what the campaign sells
        item = phones[u].client.inbox.items()[0]
        await phones[u].client.click(item.id, action="shop")
        phones[u].client.track("order_paid", {"sku": "x"})
    phones[recipients[6]].client.track("order_paid", {"sku": "x"})  # bought, never read
    phones[recipients[7]].client.track("order_paid", {"sku": "y"})  # another product
    for u in held[:5]:
        await w.event(u, "order_paid", sku="x")
    await w.event(held[5], "order_paid", sku="y")

    # Receipts (the clicks) and events are stored in separate batches: wait for both.
    stats = await settled(w, cid, lambda s: s["total"]["converted"] == 6
                          and s["total"]["clicked"] == 6
                          and s["lift"] and s["lift"][0]["converted"] == 7)  # fmt: skip
    inbox = stats["total"]["channels"]["inbox"]
    assert inbox == {"delivered": 10, "read": 6, "clicked": 6}
    total = stats["total"]
    assert (total["sent"], total["displayed"], total["clicked"], total["converted"]) == (
        10, 6, 6, 6)  # fmt: skip
    assert (total["ctr"], total["conversion_rate"]) == (1.0, 1.0)
    assert stats["control"] == {"users": 15, "converted": 5, "conversion_rate": 5 / 15}
    assert stats["variants"]["control"]["conversion_rate"] == 5 / 15
    (lift,) = stats["lift"]
    low, high = diff_interval(7, 10, 5, 15)
    assert (lift["variant"], lift["users"], lift["converted"]) == ("default", 10, 7)
    assert lift["difference"] == pytest.approx(0.7 - 1 / 3)
    assert lift["relative"] == pytest.approx((0.7 - 1 / 3) / (1 / 3))
    assert (lift["low"], lift["high"], lift["method"]) == (low, high, "newcombe")
    assert stats["retention"]["1d"]["default"]["waiting"] == 10  # no day has passed yet
    # Everything happened today (the node's clock; or across a midnight that fell meanwhile):
    # the days' rows, read from the store, add up to the funnel.
    days = stats["by_day"]
    assert days[-1]["day"] == time.strftime("%Y-%m-%d", time.gmtime(w.shift())) and len(days) <= 2
    stages = ("sent", "delivered", "displayed", "clicked", "converted")
    assert [sum(d[k] for d in days) for k in stages] == [10, 10, 6, 6, 6]

    w.shift.offset += DAY + 60  # a day later: who came back?
    await w.event(held[6], "order_paid", sku="x")  # outside the 3-day window? no: inside
    w.shift.offset += 3 * DAY  # four days after the decision
    await w.event(held[7], "order_paid", sku="x")  # too late to count
    phones[recipients[8]].client.track("open_app")  # back within the week
    await settled(w, cid, lambda s: s["control"]["converted"] == 6)
    w.shift.offset += 3 * DAY + 60
    stats = await settled(w, cid, lambda s: s["retention"]["7d"]["default"]["returned"] == 9)
    r1, r7 = stats["retention"]["1d"], stats["retention"]["7d"]
    assert (r1["default"]["users"], r1["default"]["returned"]) == (10, 8)
    assert (r1["control"]["users"], r1["control"]["returned"]) == (15, 6)
    assert (r7["default"]["returned"], r7["control"]["returned"]) == (9, 8)
    assert stats["control"]["converted"] == 6  # the late order is not attributed

    text = await w.cli(capsys, "stats", cid)
    assert "inbox: delivered 10 -> read 6 -> clicked 6" in text
    assert "control (held out): 15 users, 6 converted (40.0%)" in text
    assert "lift over control" in text and "+30.0 pts" in text
    assert "retention" in text and "80.0% (8/10)" in text
    as_json = json.loads(await w.cli(capsys, "stats", cid, "--json"))
    assert as_json == await w.stats(cid)


# --- A/B verdicts -------------------------------------------------------------------------------


AB = (Variant("a", 1.0, {}, Content()), Variant("b", 1.0, {}, Content()))
"""The two variants of the tests below, as the assignment sees them (names and weights)."""


async def test_the_ab_verdict_says_why_there_is_no_winner_and_then_names_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w, cid = world, "ab-verdict"
    a_users = users_where(cid, lambda u: assign(cid, u, AB) == "a", 6, "a")
    b_users = users_where(cid, lambda u: assign(cid, u, AB) == "b", 6, "b")
    phones = {u: await w.device(u) for u in a_users + b_users}
    await w.cohort(a_users + b_users, "ab")
    await w.create_and_start({
        "id": cid, "app": "demo", "name": "AB", "kind": "one_off", "segment": 'attr.cohort = "ab"',
        "content": {"kind": "banner", "title": "Plain", "body": "news"},
        "variants": [{"name": "a"}, {"name": "b", "content": {"title": "Bold"}}],
        "min_sample_per_variant": 6,
    })  # fmt: skip
    for u in a_users + b_users:  # displayed as they arrive
        await phones[u].until(lambda u=u: len(phones[u].banners) == 1)
    for u in b_users[:2]:  # 2 of 6 against 0 of 6: p = 0.12
        await phones[u].client.click(phones[u].banners[0].id)
    stats = await settled(w, cid, lambda s: s["total"]["displayed"] == 12
                          and s["total"]["clicked"] == 2)  # fmt: skip
    v = stats["verdict"]
    assert (v["winner"], v["metric"], v["min_sample_per_variant"]) == (None, "ctr", 6)
    assert v["reason"].startswith("not significant, p = 0.12") and v["p_value"] > 0.05
    text = await w.cli(capsys, "stats", cid)
    assert "winner: none yet - not significant, p = 0.12" in text

    for u in b_users[2:]:
        await phones[u].client.click(phones[u].banners[0].id)
    stats = await settled(w, cid, lambda s: s["total"]["clicked"] == 6)
    v = stats["verdict"]
    assert (v["winner"], v["metric"]) == ("b", "ctr") and stats["winner"] == "b"
    assert v["reason"].startswith("b wins on click-through: 100.0% vs 0.0% (a), p = ")
    assert "winner: b by ctr - b wins on click-through" in await w.cli(capsys, "stats", cid)


async def test_without_a_goal_the_holdout_is_measured_against_the_apps_value_event(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w, cid = world, "no-goal"
    recipients = users_where(cid, lambda u: assign(cid, u, (), 0.5) is None, 4, "g")
    held = users_where(cid, lambda u: assign(cid, u, (), 0.5) == CONTROL, 4, "k")
    phones = {u: await w.device(u) for u in recipients}
    await w.cohort(recipients + held, "nogoal")
    await w.create_and_start({
        "id": cid, "app": "demo", "name": "No goal", "kind": "one_off",
        "segment": 'attr.cohort = "nogoal"', "control_share": 0.5,
        "content": {"kind": "banner", "title": "Hi", "body": "news"},
    })  # fmt: skip
    for u in recipients:
        await phones[u].until(lambda u=u: len(phones[u].banners) == 1)
    phones[recipients[0]].client.track("purchase", {"amount": 20})  # the app's value event
    await w.event(held[0], "purchase", amount=5)
    await w.event(held[1], "purchase", amount=5)
    stats = await settled(w, cid, lambda s: s["control"]["converted"] == 2
                          and s["lift"] and s["lift"][0]["converted"] == 1)  # fmt: skip
    assert stats["conversion"] == {"event": "purchase", "window_s": 3 * 86_400, "where": [],
                                   "default": True}  # fmt: skip
    assert stats["metric"] == "ctr"  # variants are still compared as the campaign says
    assert stats["control"]["conversion_rate"] == 2 / 4
    assert "the app's value event" in await w.cli(capsys, "stats", cid)

    # "conversion": null turns measuring off: nothing is counted as a conversion.
    await w.api("POST", "/v1/campaigns", json={
        "id": "off", "app": "demo", "name": "Off", "kind": "one_off", "control_share": 0.5,
        "segment": 'attr.cohort = "nogoal"', "conversion": None,
        "content": {"kind": "banner", "title": "Hi", "body": "news"},
    })  # fmt: skip
    assert (await w.api("GET", "/v1/campaigns/off"))["conversion"] is None
    off = await w.stats("off")
    assert off["conversion"] is None and off["lift"] == []


async def test_a_verdict_waits_for_the_minimum_sample_per_variant(world: World) -> None:
    w, cid = world, "ab-small"
    users = users_where(cid, lambda u: True, 4, "s")
    phones = {u: await w.device(u) for u in users}
    await w.cohort(users, "small")
    await w.create_and_start({
        "id": cid, "app": "demo", "name": "AB", "kind": "one_off",
        "segment": 'attr.cohort = "small"',
        "content": {"kind": "banner", "title": "T", "body": "b"},
        "variants": [{"name": "a"}, {"name": "b"}], "conversion": {"event": "paid"},
    })  # fmt: skip
    for u in users:
        await phones[u].until(lambda u=u: len(phones[u].banners) == 1)
    stats = await settled(w, cid, lambda s: s["total"]["displayed"] == 4)
    counts = [stats["variants"][k]["displayed"] for k in ("a", "b")]
    v = stats["verdict"]
    assert v["metric"] == "conversion" and v["winner"] is None
    assert v["needs"] == 1000 - min(counts)
    assert (
        v["reason"] == f"needs {1000 - min(counts)} more displays per variant (at least 1000 each)"
    )


# --- roll-out -----------------------------------------------------------------------------------


async def test_a_rollout_tests_on_a_share_then_sends_the_winner_to_the_rest(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w, cid = world, "roll"

    def group(u: str) -> str:
        return f"{'test' if in_test_group(cid, u, 0.5) else 'rest'}-{assign(cid, u, AB)}"

    test_a = users_where(cid, lambda u: group(u) == "test-a", 4, "t")
    test_b = users_where(cid, lambda u: group(u) == "test-b", 4, "t")
    rest = users_where(cid, lambda u: group(u).startswith("rest"), 4, "t")
    phones = {u: await w.device(u) for u in test_a + test_b + rest}
    await w.cohort(list(phones), "roll")
    await w.create_and_start({
        "id": cid, "app": "demo", "name": "Roll", "kind": "one_off",
        "segment": 'attr.cohort = "roll"', "content": {"kind": "banner", "title": "A", "body": "b"},
        "variants": [{"name": "a"}, {"name": "b", "content": {"title": "B"}}],
        "min_sample_per_variant": 4,
        "rollout": {"test_share": 0.5, "decide_after_s": 3600, "check_every_s": 60},
    })  # fmt: skip
    for u in test_a + test_b:
        await phones[u].until(lambda u=u: len(phones[u].banners) == 1)
    stats = await w.stats(cid)
    assert stats["rollout"]["phase"] == "testing"
    assert stats["rollout"]["deadline"] == pytest.approx(stats["rollout"]["started_at"] + 3600)
    assert all(phones[u].banners == [] for u in rest)
    assert "roll-out: testing on 50% of the audience" in await w.cli(capsys, "stats", cid)
    for u in test_b:
        await phones[u].client.click(phones[u].banners[0].id)
    await settled(w, cid, lambda s: s["verdict"]["winner"] == "b")

    w.shift.offset += 61  # the next check finds the winner and sends it to the rest
    await w.node.engine.tick()
    for u in rest:
        await phones[u].until(lambda u=u: len(phones[u].banners) == 1)
        assert phones[u].banners[0].title == "B"
    stats = await w.stats(cid)
    r = stats["rollout"]
    assert (r["phase"], r["variant"], r["decided_by"]) == ("rolled_out", "b", "winner")
    assert stats["status"] == "completed"
    assert stats["variants"]["b"]["sent"] == 8 and stats["variants"]["a"]["sent"] == 4
    assert "roll-out: rolled out b" in await w.cli(capsys, "stats", cid)
