"""Event quotas per device and per app: past them a batch is refused whole, as rate_limited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from helpers import APP_A
from rawclient import open_session

from tidings.protocol.frames import Error, Event, Events, Ok
from tidings.protocol.tokens import mint_token
from tidings.server.admin import AdminServer
from tidings.server.config import GatewayConfig
from tidings.server.ingest import EventQuota
from tidings.server.node import Node

APP = replace(APP_A, device_events_per_min=60, app_events_per_min=100)


def batch(n: int) -> tuple[Event, ...]:
    return tuple(Event(id=uuid.uuid4().hex, name="view", ts=1_700_000_000_000, props={})
                 for _ in range(n))  # fmt: skip


@pytest_asyncio.fixture
async def node(tmp_path: Path, loop_errors: list[dict[str, Any]]) -> AsyncIterator[Node]:
    started = Node(GatewayConfig(port=0, admin_port=0, db=str(tmp_path / "t.db"), apps=(APP,)))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_a_device_past_its_quota_is_refused_and_keeps_nothing_of_that_batch(
    node: Node,
) -> None:
    token = mint_token(secret=APP.secret, app=APP.id, device="d1", user="u1")
    client = await open_session(node.port, token)
    await client.send(Events(rid=1, events=batch(50)))
    assert isinstance(await client.recv_until(Ok), Ok)
    await client.send(Events(rid=2, events=batch(20)))
    refused = await client.recv_until(Error)
    assert (refused.code, refused.rid) == ("rate_limited", 2)
    assert "device's quota of 60 events a minute" in refused.message
    await client.send(Events(rid=3, events=batch(10)))  # what is left of the minute
    assert (await client.recv_until(Ok)).rid == 3
    assert await node.store.count_events(APP.id) == 60
    await client.close()


async def test_the_backend_and_devices_share_the_apps_quota(node: Node) -> None:
    server = AdminServer(node, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            auth = {"Authorization": f"Bearer {APP.admin_key}"}
            answers = []
            for user in ("a", "b", "c"):
                body = {"app": APP.id, "user": user,
                        "events": [{"name": "view", "props": {}}] * 40}  # fmt: skip
                answers.append(await http.post("/v1/events", json=body, headers=auth))
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].headers["Retry-After"] == "1"
        assert "app's quota of 100 events a minute" in answers[2].json()["error"]["message"]
    finally:
        await server.stop()


def test_a_quota_refills_over_the_minute_and_forgets_idle_devices() -> None:
    now = [0.0]
    quota = EventQuota([replace(APP, app_events_per_min=10**9)], clock=lambda: now[0])
    quota.take(APP.id, "d1", 60)
    now[0] = 30.0  # half a minute: half the quota is back
    quota.take(APP.id, "d1", 30)
    for i in range(25_000):  # devices that report once and go quiet
        quota.take(APP.id, f"idle-{i}", 1)
        now[0] += 0.01
    assert quota.tracked <= 10_001
