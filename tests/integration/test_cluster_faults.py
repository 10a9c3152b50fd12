"""A cluster under faults: what the store holds decides, whatever a node heard or missed.

Real nodes on one PostgreSQL schema and one Redis (per test), real WebSocket sessions; the
faults are real too: a TCP proxy (``faultproxy.py``) between a node and Redis that stalls or
silently drops its traffic, a Redis server of the test's own restarted empty, deliveries
stored by a node that died before it could publish them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from faultproxy import FaultProxy
from helpers import APP_A, timeout
from rawclient import open_session
from test_cluster import PG_DSN, REDIS_URL, _unavailable, started_cluster, token

from tidings.protocol import codes
from tidings.protocol.codec import encode_message
from tidings.protocol.frames import Deliver, Event, Events, Message, Ok
from tidings.server.gateway.sessions import CHECK_S
from tidings.server.node import Node, SendRequest
from tidings.server.redis_broker import SILENT_S
from tidings.server.storage import Outcome, OutMessage


async def until(predicate: Callable[[], bool], seconds: float) -> float:
    """Wait for ``predicate``; how long it took."""
    start = time.monotonic()
    deadline = start + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def proxied_redis() -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the test Redis."""
    host, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = await FaultProxy(host, int(port)).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


class OwnRedis:
    """A Redis server of the test's own (nothing kept on disk), to restart empty."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextlib.asynccontextmanager
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed: the Redis restart tests need it")
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def status(node: Node, cid: str) -> str | None:
    """A campaign's status as ``node`` sees it (None: it does not know the campaign)."""
    for campaign, _ in node.engine.campaigns(APP_A.id):
        if campaign.id == cid:
            return str(campaign.status)
    return None


def inbox(users: tuple[str, ...], body: str) -> SendRequest:
    return SendRequest(app=APP_A.id, users=users, kind="inbox", title="t", body=body,
                       category="transactional")  # fmt: skip


async def store_without_publishing(node: Node, devices: list[tuple[str, str]]) -> str:
    """What a node that dies between its commit and its publish leaves: deliveries in the
    store that no other node was told about."""
    mid, now = uuid.uuid4().hex, node.clock()
    wire = encode_message(Message(id=mid, kind="inbox", title="t", body="orphan",
                                  category="transactional", created_at=int(now * 1000),
                                  expires_at=int((now + 600) * 1000)))  # fmt: skip
    message = OutMessage(
        message_id=mid,
        fields={"kind": "inbox", "category": "transactional", "priority": "normal",
                "campaign": None, "variant": None, "created_at": now, "expires_at": now + 600},
        wire=wire,
        targets=tuple(devices),
    )  # fmt: skip
    committed = await node.store.commit(APP_A.id, Outcome(), [message])
    assert len(committed.deliveries[mid]) == len(devices)
    return mid


async def test_deliveries_whose_publish_never_came_reach_idle_devices_from_the_store() -> None:
    async with started_cluster([REDIS_URL, REDIS_URL]) as (a, b):
        phones = [await open_session(b.port, token(f"p{i}", f"u{i}")) for i in range(9)]
        mid = await store_without_publishing(a, [(f"p{i}", f"u{i}") for i in range(9)])
        start = time.monotonic()
        for phone in phones:
            got = await phone.recv_until(Deliver, timeout=timeout(2 * CHECK_S + 2))
            assert got.msg.id == mid
        # At the second check that finds it missing (the first may race the publish).
        assert time.monotonic() - start <= 2 * CHECK_S + 1.5
        assert b.metrics.store_replays >= 9
        for phone in phones:
            assert await phone.nothing_for(0.3)  # once
            await phone.close()


async def test_a_device_moving_nodes_during_a_partition_keeps_one_session_and_its_route() -> None:
    async with (
        proxied_redis() as proxy,
        started_cluster([f"redis://127.0.0.1:{proxy.port}/0", REDIS_URL]) as (a, b),
    ):
        first = await open_session(a.port, token("mover", "u1"))
        proxy.set("stall")  # a hears nothing from Redis and says nothing to it
        second = await open_session(b.port, token("mover", "u1"))
        # The kick to a is held by the partition; a finds the newer session in the store.
        took = await until(lambda: first.ws.close_code is not None, 2 * CHECK_S + 1)
        assert first.ws.close_code == codes.CLOSE_REPLACED
        assert took <= CHECK_S + 1
        proxy.set("pass")  # heal: what a held is delivered late, and a rejoins
        await until(lambda: a.broker.healthy, SILENT_S + 3)
        await asyncio.sleep(0.5)
        routes = await b.broker.redis.hgetall(b.broker._routes(APP_A.id))  # type: ignore[attr-defined]
        assert routes[b"mover"].split(b"|")[0] == b"node-b"
        sent = await a.send(inbox(("u1",), "after the move"))
        got = await second.recv_until(Deliver, timeout=timeout(5))
        assert got.msg.id == sent.message_id
        assert await second.nothing_for(0.3)
        await second.close()


async def test_after_redis_restarts_empty_a_second_connection_still_replaces_the_first() -> None:
    async with own_redis() as redis_server, started_cluster([redis_server.url] * 2) as (a, b):
        first = await open_session(a.port, token("dev", "u1"))
        idle = await open_session(a.port, token("idle", "u2"))
        redis_server.kill()
        redis_server.start()  # empty: no routes, no heartbeats
        # Sent at once, before a has registered its routes again: the store check brings it.
        sent = await b.send(inbox(("u2",), "during the restart"))
        got = await idle.recv_until(Deliver, timeout=timeout(2 * CHECK_S + 3))
        assert got.msg.id == sent.message_id
        second = await open_session(b.port, token("dev", "u1"))
        await until(lambda: first.ws.close_code is not None, 2 * CHECK_S + 2)
        assert first.ws.close_code == codes.CLOSE_REPLACED
        await until(lambda: a.broker.healthy and b.broker.healthy, SILENT_S + 5)
        again = await a.send(inbox(("u1",), "after the restart"))
        got = await second.recv_until(Deliver, timeout=timeout(5))
        assert got.msg.id == again.message_id
        for client in (second, idle):
            await client.close()


async def test_a_silent_broker_is_noticed_and_the_node_comes_back_when_it_heals() -> None:
    async with (
        proxied_redis() as proxy,
        started_cluster([f"redis://127.0.0.1:{proxy.port}/0", REDIS_URL]) as (a, b),
    ):
        phone = await open_session(a.port, token("p", "u1"))
        proxy.set("drop")  # no reset: packets just stop
        took = await until(lambda: not a.broker.healthy, SILENT_S + 4)
        assert took <= SILENT_S + 3
        sent = await b.send(inbox(("u1",), "while a is deaf"))
        got = await phone.recv_until(Deliver, timeout=timeout(2 * CHECK_S + 3))
        assert got.msg.id == sent.message_id
        proxy.set("pass")
        proxy.cut()  # what was dropped left the old connections unusable
        await until(lambda: a.broker.healthy, SILENT_S + 5)
        again = await b.send(inbox(("u1",), "healed"))
        got = await phone.recv_until(Deliver, timeout=timeout(3))
        assert got.msg.id == again.message_id
        await phone.close()


async def test_a_change_whose_transaction_commits_late_is_read_not_skipped() -> None:
    # Ids are taken at insert, rows become visible at commit: a change with a lower id can
    # appear after one with a higher id was read. The feed's cursor is a snapshot, not an id.
    async with started_cluster([REDIS_URL]) as (a,):
        import asyncpg

        cursor, _ = await a.store.read_changes(None)
        schema = a.store.schema  # type: ignore[attr-defined]
        slow = await asyncpg.connect(PG_DSN, server_settings={"search_path": schema})
        try:
            tx = slow.transaction()
            await tx.start()
            await slow.execute("INSERT INTO changes (origin, body) VALUES ('slow', 'first id')")
            await a.store.append_changes("fast", [b"second id"])
            cursor, rows = await a.store.read_changes(cursor)
            assert rows == [("fast", b"second id")]
            await tx.commit()
            _, rows = await a.store.read_changes(cursor)
            assert rows == [("slow", b"first id")]
        finally:
            await slow.close()


async def test_a_node_deaf_to_redis_still_sees_a_pause_and_profiles_within_the_feed_bound() -> None:
    from tidings.server.feed import POLL_S

    async with (
        proxied_redis() as proxy,
        started_cluster([REDIS_URL, f"redis://127.0.0.1:{proxy.port}/0"]) as (a, b),
    ):
        spec = {"id": "promo", "app": APP_A.id, "name": "promo", "kind": "triggered",
                "trigger": {"event": "view"},
                "content": {"kind": "banner", "title": "t", "body": "b"}}  # fmt: skip
        await a.engine.save(spec)
        await a.engine.start_campaign(APP_A.id, "promo")
        await until(lambda: status(b, "promo") == "running", 3)
        proxy.set("drop")  # b hears nothing from Redis, and does not know it yet
        await a.engine.pause(APP_A.id, "promo")
        await a.ingest.attributes(APP_A.id, "u9", {"plan": "pro"})
        took = await until(
            lambda: (
                status(b, "promo") == "paused"
                and (p := b.engine.audience.profile(APP_A.id, "u9")) is not None
                and p.attrs.get("plan") == "pro"
            ),
            3,
        )
        assert took <= 4 * POLL_S + 0.5
        # And b, still deaf, sends nothing for the paused campaign: its commit checks.
        phone = await open_session(b.port, token("p9", "u9"))
        now_ms = int(time.time() * 1000)
        await phone.send(Events(rid=1, events=(Event(id="e1", name="view", ts=now_ms),)))
        await phone.recv_until(Ok)  # the event is stored (and its trigger decided)
        with pytest.raises(TimeoutError):
            await phone.recv_until(Deliver, timeout=0.5)
        assert b.engine.campaign(APP_A.id, "promo")[1] == 0
        await phone.close()


async def test_an_audience_decided_right_after_another_node_stored_profiles_includes_them() -> None:
    # Node b stores ten users' attributes and events; node a starts a segment campaign at
    # once, before its follower's next read. a reads the feed up to now before it resolves.
    async with started_cluster([REDIS_URL, REDIS_URL]) as (a, b):
        users = [f"fan{i}" for i in range(10)]
        for user in users:
            await b.ingest.attributes(APP_A.id, user, {"team": "reds"})
        spec = {"id": "reds", "app": APP_A.id, "name": "reds", "kind": "one_off",
                "segment": 'attr.team = "reds"',
                "content": {"kind": "inbox", "title": "t", "body": "b"}}  # fmt: skip
        await a.engine.save(spec)
        await a.engine.start_campaign(APP_A.id, "reds")
        decided = await a.engine.decisions(APP_A.id, "reds", limit=100)
        assert sorted(d.user_key for d in decided) == users


@pytest.mark.parametrize("dies", ["before claiming its run", "while running it"])
async def test_a_campaign_whose_node_dies_during_start_is_finished_by_another(
    dies: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.server.campaigns import engine as engine_module

    monkeypatch.setattr(engine_module, "CLAIM_LEASE_S", 1.5)  # a dead node's claim ends soon
    async with started_cluster([REDIS_URL, REDIS_URL]) as (a, b):
        phones = [await open_session(b.port, token(f"s{i}", f"su{i}")) for i in range(5)]
        known = a.engine.audience.profile
        await until(lambda: all(known(APP_A.id, f"su{i}") is not None for i in range(5)), 3)

        async def death(*args: object, **kwargs: object) -> None:
            raise RuntimeError("SIGKILL")

        if dies == "before claiming its run":
            monkeypatch.setattr(a.engine, "tick", death)
        else:
            monkeypatch.setattr(a.engine, "_run_audience", death)
        spec = {"id": "once", "app": APP_A.id, "name": "once", "kind": "one_off",
                "content": {"kind": "inbox", "title": "t", "body": "for everyone"}}  # fmt: skip
        await a.engine.save(spec)
        with pytest.raises(RuntimeError):
            await a.engine.start_campaign(APP_A.id, "once")
        await a.stop()  # the node is gone; its start stored the status and the run together
        for phone in phones:
            got = await phone.recv_until(Deliver, timeout=timeout(6))
            assert got.msg.campaign == "once"
        await until(lambda: status(b, "once") == "completed", 5)
        assert b.engine.campaign(APP_A.id, "once")[1] == 5
        for phone in phones:
            with pytest.raises(TimeoutError):
                await phone.recv_until(Deliver, timeout=0.3)
            await phone.close()


async def test_a_silent_postgresql_partition_gets_a_prompt_503_not_a_hang() -> None:
    import httpx

    from tidings.server.admin import create_admin_app
    from tidings.server.storage import PostgresStore
    from tidings.server.storewatch import ANSWER_S, WATCH_S

    host, port = PG_DSN.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = await FaultProxy(host, int(port)).start()
    try:
        async with started_cluster([REDIS_URL]) as (a,):
            # The node's store reaches PostgreSQL only through the proxy.
            schema = a.store.schema  # type: ignore[attr-defined]
            via = PG_DSN.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
            assert a.store_watch is not None
            await a.store_watch.stop()
            a.store = a.store_watch.store = PostgresStore(via, schema=schema, pool_size=4)
            await a.store.open()
            a.store_watch.start()
            transport = httpx.ASGITransport(app=create_admin_app(a))
            headers = {"Authorization": f"Bearer {APP_A.admin_key}"}
            body = {"app": APP_A.id, "to": {"users": ["u1"]}, "kind": "inbox", "title": "t",
                    "body": "b", "category": "transactional"}  # fmt: skip
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as admin:
                r = await admin.post("/v1/messages", json=body, headers=headers)
                assert r.status_code == 202, r.text
                proxy.set("drop")
                start = time.monotonic()
                # A request already waiting on the store, and the ones after it.
                waiting = await admin.post("/v1/messages", json=body, headers=headers)
                assert waiting.status_code == 503
                assert time.monotonic() - start <= WATCH_S + ANSWER_S + 0.7
                assert "Idempotency-Key" in waiting.json()["error"]["message"]
                start = time.monotonic()
                later = await admin.post("/v1/messages", json=body, headers=headers)
                assert later.status_code == 503 and time.monotonic() - start < 0.5
                health = await admin.get("/healthz")
                assert (health.status_code, health.json()["store"]) == (503, "unreachable")
                proxy.set("pass")
                proxy.cut()
                await until(lambda: a.store_watch is not None and a.store_watch.ok, 5)
                r = await admin.post("/v1/messages", json=body, headers=headers)
                assert r.status_code == 202, r.text
            await a.store.close()
    finally:
        await proxy.stop()
