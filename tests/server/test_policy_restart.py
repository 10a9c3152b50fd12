"""Settings from the configuration file and the admin API, across a restart of the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tidings.server.admin import AdminServer
from tidings.server.config import GatewayConfig, load_config
from tidings.server.node import Node

KEY = {"Authorization": "Bearer shop-admin-key-1"}
FILE = """
port = 0
admin_port = 0

[[apps]]
id = "shop"
secret = "shop-secret-123"
admin_key = "shop-admin-key-1"
categories = ["promotions"]
value_event = {name = "order_paid", amount = "total"}

[apps.caps]
lifecycle = {active = {limit = 3, days = 7}}
"""


def config(tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "tidings.toml"
    path.write_text(f'db = "{tmp_path / "t.db"}"\n' + FILE)
    return load_config(path=path, env={})


@asynccontextmanager
async def gateway(cfg: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    node = Node(cfg)
    await node.start()
    server = AdminServer(node, "127.0.0.1", 0)
    try:
        await server.start()
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as client:
            yield client
    finally:
        await server.stop()
        await node.stop()


async def settings(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/settings", headers=KEY)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def test_the_files_settings_are_the_apps_defaults(tmp_path: Path) -> None:
    async with gateway(config(tmp_path)) as client:
        s = await settings(client)
    assert s["categories"] == ["marketing", "transactional", "promotions"]
    assert s["value_event"] == {"name": "order_paid", "amount": "total"}
    assert s["caps"]["lifecycle"]["active"] == {"limit": 3, "days": 7}
    assert s["caps"]["lifecycle"]["churned"] == {"limit": 1, "days": 30}  # not in the file


async def test_settings_put_through_the_api_survive_a_restart_and_reset_to_the_file(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    async with gateway(cfg) as client:
        paid = {"name": "order_paid", "props": {"total": 40}, "ts": 1_700_000_000_000}
        bought = {"name": "bought", "props": {"price": 1500}, "ts": 1_700_000_000_000}
        both = {"app": "shop", "user": "u1", "events": [paid, bought]}
        r = await client.post("/v1/events", headers=KEY, json=both)
        assert r.status_code == 202, r.text
        body = {"value_event": {"name": "bought", "amount": "price"}, "categories": ["news"]}
        put = await client.put("/v1/settings", json=body, headers=KEY)
        assert put.status_code == 200, put.text
    async with gateway(cfg) as client:
        s = await settings(client)
        assert s["value_event"] == {"name": "bought", "amount": "price"}
        assert s["categories"] == ["marketing", "transactional", "news"]
        assert s["caps"]["lifecycle"]["active"] == {"limit": 3, "days": 7}  # the file's
        user = (await client.get("/v1/users/u1", params={"app": "shop"}, headers=KEY)).json()
        assert (user["purchase_count"], user["purchase_total"]) == (1, 1500.0)  # rebuilt so
        reset = await client.delete("/v1/settings", headers=KEY)
        assert reset.json()["value_event"] == {"name": "order_paid", "amount": "total"}
        user = (await client.get("/v1/users/u1", params={"app": "shop"}, headers=KEY)).json()
        assert (user["purchase_count"], user["purchase_total"]) == (1, 40.0)
    async with gateway(cfg) as client:
        assert (await settings(client))["categories"] == [
            "marketing",
            "transactional",
            "promotions",
        ]
