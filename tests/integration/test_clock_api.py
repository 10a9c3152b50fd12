"""A gateway on the simulated clock: the admin API moves time and the scheduler follows.

Real gateway, real admin API over HTTP, a real SDK device on a clock that follows the
gateway's: a campaign scheduled a simulated day ahead arrives within a second of real time once
the clock runs fast, and not before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from helpers import APP_A, APP_B, Device, gateway_config, timeout

from tidings.client_sdk import ClockState, SimClock, TidingsClient
from tidings.protocol.errors import ConfigError
from tidings.protocol.tokens import mint_token
from tidings.server.admin import AdminServer
from tidings.server.config import GatewayConfig
from tidings.server.node import Node

DEV_A, DEV_B = replace(APP_A, dev=True), replace(APP_B, dev=True)


@pytest_asyncio.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    """A gateway on the simulated clock (two development apps) and its admin API client."""
    node = Node(GatewayConfig(port=0, admin_port=0, db=str(tmp_path / "t.db"),
                              clock="simulated", apps=(DEV_A, DEV_B)))  # fmt: skip
    await node.start()
    server = AdminServer(node, "127.0.0.1", 0)
    await server.start()
    headers = {"Authorization": f"Bearer {APP_A.admin_key}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, trust_env=False,
                                     timeout=timeout(10)) as client:  # fmt: skip
            yield node, client
    finally:
        await server.stop()
        await node.stop()


def _state(body: dict[str, Any]) -> ClockState:
    return ClockState(body["now"], body["speed"], body["paused"], body["real_time"])


async def test_the_admin_api_pauses_speeds_up_and_moves_the_gateways_clock(
    sim: tuple[Node, httpx.AsyncClient],
) -> None:
    node, client = sim
    r = await client.put("/v1/clock", json={"paused": True})
    assert r.status_code == 200 and r.json()["paused"] and r.json()["simulated"]
    frozen = node.clock()
    await asyncio.sleep(0.05)
    assert node.clock() == frozen
    later = frozen + 30 * 86_400
    r = await client.put("/v1/clock", json={"now": later, "speed": 3600, "paused": False})
    assert r.status_code == 200 and r.json()["speed"] == 3600
    await asyncio.sleep(0.1)
    assert later + 300 < node.clock() < later + 3600  # ~360 s of simulated time in 0.1 s
    got = (await client.get("/v1/clock")).json()
    assert got["now"] > later and got["speed"] == 3600 and not got["paused"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"now": 1.0}, "now"), ({"speed": 0}, "speed"), ({"speed": 1e9}, "speed"),
     ({"speed": "fast"}, "speed"), ({"paused": "yes"}, "paused"), ({"tempo": 2}, "tempo")],
)  # fmt: skip
async def test_a_bad_clock_change_is_refused_naming_the_field(
    sim: tuple[Node, httpx.AsyncClient], body: dict[str, Any], field: str
) -> None:
    _, client = sim
    before = (await client.get("/v1/clock")).json()
    r = await client.put("/v1/clock", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field
    after = (await client.get("/v1/clock")).json()
    assert after["now"] >= before["now"] and after["speed"] == before["speed"]


async def test_the_clock_needs_an_admin_key(sim: tuple[Node, httpx.AsyncClient]) -> None:
    _, client = sim
    r = await client.put("/v1/clock", json={"paused": True}, headers={"Authorization": ""})
    assert r.status_code == 401


async def test_a_campaign_scheduled_a_day_ahead_arrives_when_the_clock_runs_fast(
    sim: tuple[Node, httpx.AsyncClient],
) -> None:
    node, client = sim
    await client.put("/v1/clock", json={"speed": 1.0})
    device_clock = SimClock()
    device_clock.follow(_state((await client.get("/v1/clock")).json()))
    token = mint_token(secret=APP_A.secret, app="demo", device="d1", user="u1",
                       now=device_clock.now())  # fmt: skip
    phone = Device(TidingsClient(url=f"ws://127.0.0.1:{node.port}", token=token,
                                 device_id="d1", clock=device_clock))  # fmt: skip
    await phone.client.start()
    try:
        await phone.client.wait_connected(timeout=timeout(5))
        at = node.clock() + 86_400
        r = await client.post("/v1/campaigns", json={
            "id": "tomorrow", "app": "demo", "name": "Tomorrow", "kind": "scheduled",
            "schedule": {"at": at}, "segment": "attr.age >= 0 or not attr.age >= 0",
            "content": {"kind": "banner", "title": "Good morning", "body": "A day later",
                        "category": "transactional"},
        })  # fmt: skip
        assert r.status_code == 201, r.text
        assert (await client.post("/v1/campaigns/tomorrow/start?app=demo")).status_code == 200
        await asyncio.sleep(1.2)  # a real scheduler round: a day is far away at speed 1
        assert phone.banners == []
        t0 = time.monotonic()
        r = await client.put("/v1/clock", json={"speed": 200_000})  # a day in 0.43 s
        device_clock.follow(_state(r.json()))
        await phone.until(lambda: len(phone.banners) == 1, seconds=5)
        assert time.monotonic() - t0 < timeout(3)
        assert phone.banners[0].title == "Good morning"
        assert device_clock.now() >= at
    finally:
        await phone.client.close()


async def test_a_gateway_on_the_system_clock_refuses_to_move_it(tmp_path: Path) -> None:
    node = Node(gateway_config(tmp_path / "t.db"))
    await node.start()
    server = AdminServer(node, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False,
                                     headers={"Authorization": f"Bearer {APP_A.admin_key}"},
                                     timeout=timeout(10)) as client:  # fmt: skip
            got = (await client.get("/v1/clock")).json()
            assert not got["simulated"] and got["speed"] == 1.0
            assert abs(got["now"] - time.time()) < 5
            r = await client.put("/v1/clock", json={"speed": 10})
            assert r.status_code == 409
            assert "--clock simulated" in r.json()["error"]["message"]
    finally:
        await server.stop()
        await node.stop()


def test_a_production_app_cannot_run_on_the_simulated_clock(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"clock: .*'other' .*dev = true"):
        GatewayConfig(db=str(tmp_path / "t.db"), clock="simulated", apps=(DEV_A, APP_B))


def test_an_unknown_clock_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clock: must be 'system' or 'simulated'"):
        GatewayConfig(db=str(tmp_path / "t.db"), clock="fast")


def test_a_cluster_node_cannot_run_on_the_simulated_clock(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clock: the simulated clock is one gateway's own"):
        GatewayConfig(db="postgresql://u@127.0.0.1/db", broker="redis://127.0.0.1:6379/0",
                      clock="simulated", apps=(DEV_A,))  # fmt: skip
