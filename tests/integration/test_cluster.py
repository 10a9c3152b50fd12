"""Several gateway nodes on one PostgreSQL database and one Redis: one cluster.

Two real nodes in this process (each with its own store pool, broker connection and device
server), real devices over WebSockets. Each test has its own PostgreSQL schema and Redis key
prefix. Under ``CI=true`` an unreachable service fails the test; elsewhere it is skipped with
one line saying how to enable it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
from helpers import APP_A, timeout
from rawclient import open_session
from tidings.protocol import codes
from tidings.protocol.frames import Deliver, Revoke
from tidings.protocol.tokens import mint_token
from tidings.server.config import GatewayConfig
from tidings.server.node import Node, SendRequest

PG_DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS") or "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest_asyncio.fixture
async def cluster(loop_errors: list[dict[str, Any]]) -> AsyncIterator[list[Node]]:
    """Two started nodes of one cluster."""
    try:
        import asyncpg
        import redis.asyncio as aioredis
        from tidings.server.storage import PostgresStore
    except ImportError:
        _unavailable("cluster tests need the cluster extra: pip install -e '.[cluster]'")
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL not reachable ({exc}): start it, or set TIDINGS_TEST_PG")
    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        await r.ping()
    except OSError as exc:
        await admin.close()
        _unavailable(f"Redis not reachable ({exc}): start it, or set TIDINGS_TEST_REDIS")
    schema, prefix = f"t_{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}:"
    await admin.execute(f"CREATE SCHEMA {schema}")
    nodes: list[Node] = []
    try:
        for name in ("a", "b"):
            config = GatewayConfig(port=0, admin_port=0, db=PG_DSN, apps=(APP_A,),
                                   broker=REDIS_URL, node_id=f"node-{name}",
                                   broker_prefix=prefix)  # fmt: skip
            node = Node(config, store=PostgresStore(PG_DSN, schema=schema, pool_size=4))
            await node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            await node.stop()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def token(device: str, user: str) -> str:
    return mint_token(secret=APP_A.secret, app=APP_A.id, device=device, user=user)


async def test_a_message_sent_through_one_node_reaches_devices_on_the_other(
    cluster: list[Node],
) -> None:
    a, b = cluster
    phones = [await open_session(a.port, token(f"p{i}", f"u{i}")) for i in range(5)]
    here = await open_session(b.port, token("p-b", "u-b"))
    users = (*(f"u{i}" for i in range(5)), "u-b")
    request = SendRequest(app=APP_A.id, users=users, kind="inbox", title="t", body="hello",
                          category="transactional")  # fmt: skip
    before = b.broker.published  # type: ignore[attr-defined]
    sent = await b.send(request)
    assert sent.devices == 6
    for phone in [*phones, here]:
        got = await phone.recv_until(Deliver, timeout=timeout(5))
        assert (got.msg.id, got.seq) == (sent.message_id, 1)
    # one publish for node a's five devices, not five; node b's own device needs none
    assert b.broker.published - before == 1  # type: ignore[attr-defined]
    for phone in [*phones, here]:
        await phone.close()


async def test_a_device_connecting_on_another_node_replaces_its_session_there(
    cluster: list[Node],
) -> None:
    a, b = cluster
    first = await open_session(a.port, token("moving", "u1"))
    second = await open_session(b.port, token("moving", "u1"))
    await asyncio.wait_for(first.ws.wait_closed(), timeout(5))
    assert first.ws.close_code == codes.CLOSE_REPLACED
    sent = await a.send(SendRequest(app=APP_A.id, users=("u1",), kind="inbox", title="t",
                                    body="after the move", category="transactional"))  # fmt: skip
    got = await second.recv_until(Deliver, timeout=timeout(5))
    assert got.msg.id == sent.message_id
    await second.close()


async def test_a_revoke_through_one_node_reaches_devices_on_the_other(
    cluster: list[Node],
) -> None:
    a, b = cluster
    phone = await open_session(a.port, token("rv", "u1"))
    sent = await b.send(SendRequest(app=APP_A.id, users=("u1",), kind="inbox", title="t",
                                    body="oops", category="transactional"))  # fmt: skip
    await phone.recv_until(Deliver, timeout=timeout(5))
    assert await b.revoke(APP_A.id, sent.message_id)
    assert (await phone.recv_until(Revoke, timeout=timeout(5))).ids == (sent.message_id,)
    await phone.close()


async def test_every_node_reports_its_store_and_broker(cluster: list[Node]) -> None:
    for node in cluster:
        await node.store.ping()
        assert node.broker.healthy
        assert node.describe().endswith(f"node: {node.node_id}")


def test_a_broker_without_a_postgresql_store_is_refused() -> None:
    from tidings.protocol.errors import ConfigError

    with pytest.raises(ConfigError, match="share one PostgreSQL database"):
        replace(GatewayConfig(), broker=REDIS_URL)
