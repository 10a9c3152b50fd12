"""Several gateway nodes on one PostgreSQL database and one Redis: one cluster.

Two real nodes in this process (each with its own store pool, broker connection and device
server), real devices over WebSockets. Each test has its own PostgreSQL schema and Redis key
prefix. Under ``CI=true`` an unreachable service fails the test; elsewhere it is skipped with
one line saying how to enable it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
from faultproxy import FaultProxy
from helpers import APP_A, timeout
from rawclient import RawClient, open_session
from websockets.exceptions import ConnectionClosedError

from tidings.protocol import codes
from tidings.protocol.frames import Deliver, Event, Revoke, Welcome
from tidings.protocol.tokens import mint_token
from tidings.server.config import GatewayConfig
from tidings.server.node import Node, SendRequest
from tidings.server.targeting.tags import TagRule

PG_DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS") or "redis://127.0.0.1:6379/0"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@contextlib.asynccontextmanager
async def started_cluster(redis_urls: list[str]) -> AsyncIterator[list[Node]]:
    """Started nodes on one fresh PostgreSQL schema and Redis key prefix, node i reaching
    Redis at ``redis_urls[i]``; the schema and the test Redis' keys are removed afterwards."""
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
        for name, url in zip("abc", redis_urls, strict=False):
            config = GatewayConfig(port=0, admin_port=0, db=PG_DSN, apps=(APP_A,), broker=url,
                                   node_id=f"node-{name}", broker_prefix=prefix)  # fmt: skip
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


@pytest_asyncio.fixture
async def cluster(loop_errors: list[dict[str, Any]]) -> AsyncIterator[list[Node]]:
    """Two started nodes of one cluster."""
    async with started_cluster([REDIS_URL, REDIS_URL]) as nodes:
        yield nodes


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
    before = b.broker.fanout_publishes  # type: ignore[attr-defined]
    sent = await b.send(request)
    assert sent.devices == 6
    for phone in [*phones, here]:
        got = await phone.recv_until(Deliver, timeout=timeout(5))
        assert (got.msg.id, got.seq) == (sent.message_id, 1)
    # one publish for node a's five devices, not five; node b's own device needs none
    assert b.broker.fanout_publishes - before == 1  # type: ignore[attr-defined]
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


async def eventually(check: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(seconds)
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the cluster did not converge"
        await asyncio.sleep(0.02)


INBOX = {"kind": "inbox", "title": "t", "body": "b", "category": "transactional"}


def attr(node: Node, user: str, name: str) -> Any:
    p = node.engine.audience.profile(APP_A.id, user)
    return None if p is None else p.attrs.get(name)


def tags(node: Node, user: str) -> frozenset[str]:
    p = node.engine.audience.profile(APP_A.id, user)
    return frozenset() if p is None else frozenset(p.tags)


def knows(node: Node, cid: str) -> bool:
    try:
        node.engine.campaign(APP_A.id, cid)
    except Exception:
        return False
    return True


async def test_a_campaign_started_on_one_node_targets_users_known_on_another(
    cluster: list[Node],
) -> None:
    a, b = cluster
    phones = [await open_session(a.port, token(f"c{i}", f"cu{i}")) for i in range(3)]
    for i in range(3):  # profiles made on node a, after node b started
        await a.ingest.attributes(APP_A.id, f"cu{i}", {"cohort": "far" if i < 2 else "near"})
    await eventually(lambda: attr(b, "cu1", "cohort") == "far")
    spec = {"id": "far", "app": APP_A.id, "name": "Far", "kind": "one_off",
            "segment": 'attr.cohort = "far"', "content": INBOX}  # fmt: skip
    await b.engine.save(spec)
    await b.engine.start_campaign(APP_A.id, "far")
    for phone in phones[:2]:
        assert (await phone.recv_until(Deliver, timeout=timeout(5))).msg.campaign == "far"
    assert await phones[2].nothing_for()
    await eventually(lambda: knows(a, "far") and str(a.engine.campaign(APP_A.id, "far")[0].status)
                     == "completed")  # fmt: skip
    for phone in phones:
        await phone.close()


async def test_events_on_one_node_trigger_a_campaign_made_on_another(
    cluster: list[Node],
) -> None:
    a, b = cluster
    phone = await open_session(a.port, token("t0", "tu0"))
    spec = {"id": "welcome-back", "app": APP_A.id, "name": "W", "kind": "triggered",
            "trigger": {"event": "came_back"}, "content": INBOX}  # fmt: skip
    await b.engine.save(spec)
    await b.engine.start_campaign(APP_A.id, "welcome-back")
    await eventually(lambda: knows(a, "welcome-back") and str(
        a.engine.campaign(APP_A.id, "welcome-back")[0].status) == "running")  # fmt: skip
    event = Event(id=uuid.uuid4().hex, name="came_back", ts=int(a.clock() * 1000), props={})
    await a.ingest.events(APP_A.id, "t0", "tu0", [event])
    got = await phone.recv_until(Deliver, timeout=timeout(5))
    assert got.msg.campaign == "welcome-back"
    sent = [d for d in await b.engine.decisions(APP_A.id, "welcome-back") if d.reason == "sent"]
    assert len(sent) == 1  # decided once, by the node that took the event
    await phone.close()


async def test_a_tag_rule_put_on_one_node_tags_users_on_another(cluster: list[Node]) -> None:
    a, b = cluster
    rule = TagRule.from_json({"name": "fan", "event": "cheer", "threshold": {"count": 1},
                              "window_s": 86_400})  # fmt: skip
    await a.engine.audience.put_tag_rule(APP_A.id, rule)
    await eventually(lambda: [r.name for r in b.engine.audience.tag_rules(APP_A.id)] == ["fan"])
    event = Event(id=uuid.uuid4().hex, name="cheer", ts=int(a.clock() * 1000), props={})
    await a.ingest.events(APP_A.id, None, "fan-1", [event])
    await eventually(lambda: "fan" in tags(b, "fan-1"))


async def test_a_node_cut_off_from_redis_serves_its_own_devices_and_catches_up(
    cluster: list[Node],
) -> None:
    from tidings.server.redis_broker import HEARTBEAT_S, RedisBroker

    a, b = cluster
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = await FaultProxy(host, int(port)).start()
    # Node b's broker now reaches Redis only through the proxy.
    assert isinstance(b.broker, RedisBroker)
    old = b.broker
    prefix, node_id = old.prefix, old.node_id
    await old.stop()
    b.broker = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", b.hub, node_id, prefix=prefix,
                           on_reconnect=b._rejoin)  # fmt: skip
    await b.broker.start()
    local = await open_session(b.port, token("cut-local", "cl"))
    remote = await open_session(a.port, token("cut-remote", "cr"))
    await proxy.stop()
    await eventually(lambda: not b.broker.healthy, seconds=HEARTBEAT_S * 4)
    both = SendRequest(app=APP_A.id, users=("cl", "cr"), kind="inbox", title="t",
                       body="during the cut", category="transactional")  # fmt: skip
    sent = await b.send(both)  # stored; node b's own device gets it at once
    assert (await local.recv_until(Deliver, timeout=timeout(5))).msg.id == sent.message_id
    await proxy.start()  # Redis is back: node b rejoins
    await eventually(lambda: b.broker.healthy, seconds=HEARTBEAT_S * 4)
    # What node b could not publish meanwhile reached node a's device through the store.
    got = await remote.recv_until(Deliver, timeout=timeout(10))
    assert got.msg.id == sent.message_id
    await local.close()
    await remote.close()
    await proxy.stop()


async def test_a_stale_hello_on_one_node_never_replaces_a_later_session_on_another(
    cluster: list[Node],
) -> None:
    from rawclient import RawClient

    from tidings.protocol.frames import DeviceInfo, Hello

    a, b = cluster
    real, gate, calls = a.store.upsert_device, asyncio.Event(), [0]

    async def slow(row: Any) -> Any:
        calls[0] += 1
        await gate.wait()
        return await real(row)

    a.store.upsert_device = slow  # type: ignore[method-assign]
    stale = await RawClient.connect(a.port)
    await stale.send(Hello(token=token("hop", "hu"), device=DeviceInfo(platform="test")))
    await eventually(lambda: calls[0] == 1)
    await stale.close()  # the device gave up waiting for its welcome…
    later = await open_session(b.port, token("hop", "hu"))  # …and came back on another node
    gate.set()  # the stale hello finally gets its answer: it must not take the route back
    await asyncio.sleep(0.5)
    sent = await a.send(SendRequest(app=APP_A.id, users=("hu",), kind="inbox", title="t",
                                    body="still here", category="transactional"))  # fmt: skip
    assert (await later.recv_until(Deliver, timeout=timeout(5))).msg.id == sent.message_id
    await later.close()


async def test_with_postgresql_out_of_reach_admin_answers_503_and_devices_stay(
    loop_errors: list[dict[str, Any]],
) -> None:
    """The store behind a proxy that the test cuts: sends are refused as unavailable, the
    connected device stays, and what it reports is kept by its SDK until the store is back."""
    try:
        import asyncpg

        from tidings.client_sdk import TidingsClient
        from tidings.server.admin import AdminServer
        from tidings.server.storage import PostgresStore
    except ImportError:
        _unavailable("cluster tests need the cluster extra: pip install -e '.[cluster]'")
    import httpx

    try:
        admin = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL not reachable ({exc}): start it, or set TIDINGS_TEST_PG")
    schema = f"t_{uuid.uuid4().hex}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    host, rest = PG_DSN.split("@", 1)[1].split(":", 1)
    proxy = await FaultProxy(host, int(rest.split("/")[0])).start()
    via_proxy = PG_DSN.replace(f"@{host}:{rest.split('/')[0]}", f"@127.0.0.1:{proxy.port}")
    config = GatewayConfig(port=0, admin_port=0, db=via_proxy, apps=(APP_A,))
    node = Node(config, store=PostgresStore(via_proxy, schema=schema, pool_size=2,
                                            connect_timeout=1))  # fmt: skip
    await node.start()
    server = AdminServer(node, "127.0.0.1", 0)
    await server.start()
    client = TidingsClient(url=f"ws://127.0.0.1:{node.port}", token=token("pg-d", "pg-u"),
                           device_id="pg-d", flush_delay=0.05, backoff_base=0.1,
                           backoff_cap=0.5)  # fmt: skip
    try:
        await client.start()
        await client.wait_connected(timeout(5))
        await asyncio.sleep(0.5)  # the session has opened: its queue and inbox were read
        await proxy.stop()
        async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
            body = {"app": APP_A.id, "to": {"users": ["pg-u"]}, "kind": "inbox", "title": "t",
                    "body": "b", "category": "transactional"}  # fmt: skip
            r = await http.post("/v1/messages", json=body,
                                headers={"Authorization": f"Bearer {APP_A.admin_key}"})  # fmt: skip
            assert r.status_code == 503, r.text
            assert (await http.get("/healthz")).status_code == 503
        for i in range(5):
            client.track("while_down", {"i": i})
        await asyncio.sleep(1.0)
        assert client.connected and client.stats.reconnects == 0  # the device stays
        await proxy.start()

        async def stored() -> int:
            return int(await admin.fetchval(
                f"SELECT COUNT(*) FROM {schema}.events WHERE name='while_down'"))  # fmt: skip

        deadline = asyncio.get_running_loop().time() + timeout(15)
        while await stored() < 5:
            assert asyncio.get_running_loop().time() < deadline, "reports were lost"
            await asyncio.sleep(0.1)
    finally:
        await client.close()
        await server.stop()
        await node.stop()
        await proxy.stop()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


async def test_a_connect_storm_with_devices_moving_between_nodes_leaves_one_session_each(
    cluster: list[Node],
) -> None:
    """Hellos arriving together share their route claims (one Redis pipeline per batch): the
    rule still holds for each device — its later hello wins, the earlier session is closed —
    and every device gets a message sent after the storm exactly once, on its live session.
    Racers say hello to both nodes at the same moment: one session of each survives."""
    a, b = cluster
    stay = [f"st{i}" for i in range(120)]
    movers = [f"mv{i}" for i in range(40)]
    racers = [f"rc{i}" for i in range(40)]
    first, raced_a, raced_b = await asyncio.gather(
        asyncio.gather(*(open_session(a.port, token(d, f"u-{d}")) for d in stay + movers)),
        asyncio.gather(*(_racing(a.port, token(d, f"u-{d}")) for d in racers)),
        asyncio.gather(*(_racing(b.port, token(d, f"u-{d}")) for d in racers)),
    )
    second = await asyncio.gather(*(open_session(b.port, token(d, f"u-{d}")) for d in movers))
    for old in first[len(stay) :]:  # each mover's first session was replaced
        await asyncio.wait_for(old.ws.wait_closed(), timeout(10))
        assert old.ws.close_code == codes.CLOSE_REPLACED
    live = dict(zip(stay, first[: len(stay)], strict=True)) | dict(zip(movers, second, strict=True))
    for device, on_a, on_b in zip(racers, raced_a, raced_b, strict=True):
        if on_a is None or on_b is None:  # one was refused (4006) before its welcome
            assert (on_a, on_b) != (None, None), device
            live[device] = on_a or on_b
            continue
        closed = await _closed_within([on_a, on_b], 10)
        assert closed is not None and closed.ws.close_code == codes.CLOSE_REPLACED, device
        live[device] = on_b if closed is on_a else on_a
    sent = await a.send(SendRequest(app=APP_A.id, users=tuple(f"u-{d}" for d in live),
                                    kind="inbox", title="t", body="after the storm",
                                    category="transactional"))  # fmt: skip
    assert sent.devices == len(live)
    got = await asyncio.gather(*(_deliveries_for(c, 3) for c in live.values()))
    assert [[d.msg.id for d in g] for g in got] == [[sent.message_id]] * len(live)
    assert all(c.ws.close_code is None for c in live.values())
    assert a.connected_devices() + b.connected_devices() == len(live)
    for client in live.values():
        await client.close()


async def _racing(port: int, device_token: str) -> RawClient | None:
    """A racer's connection: welcomed, or None when it was refused with 4006 before its
    welcome (the same device's hello on the other node took the route while it waited)."""
    client = await RawClient.connect(port)
    try:
        first = await client.hello(device_token)
    except ConnectionClosedError as exc:
        assert exc.rcvd is not None and exc.rcvd.code == codes.CLOSE_REPLACED, exc
        return None
    assert isinstance(first, Welcome), first
    return client


async def _closed_within(clients: list[Any], seconds: float) -> Any:
    """The first of ``clients`` the server closes within ``seconds`` (None if none)."""
    waits = {asyncio.ensure_future(c.ws.wait_closed()): c for c in clients}
    done, pending = await asyncio.wait(waits, timeout=timeout(seconds),
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    for task in pending:
        task.cancel()
    return waits[next(iter(done))] if done else None


async def _deliveries_for(client: Any, seconds: float) -> list[Deliver]:
    """The deliveries ``client`` receives within ``seconds``."""
    got: list[Deliver] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = await client.recv(timeout=seconds)
                if isinstance(frame, Deliver):
                    got.append(frame)
    return got
