"""Sessions of the gateway over real sockets: what a client author reads in PROTOCOL.md is what
the gateway does — request ids on errors, frames of the wrong side, hello checks, the session
gauge, and a failing store (PROTOCOL.md §2, §4, §5, §9, §11)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from helpers import APP_A, gateway_config, timeout
from rawclient import RawClient, open_session

from tidings.protocol import codes
from tidings.protocol.frames import (
    DeviceInfo,
    Error,
    Event,
    Events,
    Hello,
    Welcome,
)
from tidings.server.errors import StoreError
from tidings.server.node import Node
from tidings.server.storage import SqliteStore

Mint = Callable[..., str]


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- request ids and frame types -----------------------------------------------------------------


async def test_an_invalid_request_is_answered_with_its_rid(gateway: Node, mint: Mint) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    bad = {"t": "events", "rid": 7, "events": [{"id": "e1", "name": "view", "ts": -1}]}
    await client.ws.send(msgpack.packb(bad))
    err = await client.recv_until(Error)
    assert (err.code, err.rid) == ("invalid_field", 7)
    assert err.message.startswith("events.events[0].ts")
    assert await client.close_code() == codes.CLOSE_BAD_FRAME


async def test_a_request_before_hello_is_answered_with_its_rid(gateway: Node) -> None:
    client = await RawClient.connect(gateway.port)
    await client.send(Events(rid=3, events=(Event(id="e", name="n", ts=1),)))
    err = await client.recv()
    assert isinstance(err, Error)
    assert (err.code, err.rid) == ("unexpected_frame", 3)
    assert await client.close_code() == codes.CLOSE_BAD_FRAME


@pytest.mark.parametrize("t", ["deliver", "welcome", "ok"])
async def test_a_client_sending_a_server_frame_gets_unexpected_frame(
    gateway: Node, mint: Mint, t: str
) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    await client.ws.send(msgpack.packb({"t": t, "seq": 1, "rid": 1}))
    err = await client.recv_until(Error)
    assert err.code == "unexpected_frame"
    assert await client.close_code() == codes.CLOSE_BAD_FRAME


async def test_an_unknown_frame_type_is_still_unknown_frame(gateway: Node, mint: Mint) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    await client.ws.send(msgpack.packb({"t": "teleport"}))
    assert (await client.recv_until(Error)).code == "unknown_frame"


# --- hello ---------------------------------------------------------------------------------------


async def test_hello_with_an_unknown_time_zone_is_refused_naming_the_field(
    gateway: Node, mint: Mint
) -> None:
    for tz in ("Mars/Olympus_Mons", "../../etc/passwd", "Europe/Paris "):
        client = await RawClient.connect(gateway.port)
        await client.send(Hello(token=mint("d1", user="u1"), device=DeviceInfo(tz=tz)))
        err = await client.recv()
        assert isinstance(err, Error)
        assert err.code == "invalid_field" and err.message.startswith("hello.device.tz")
        assert await client.close_code() == codes.CLOSE_BAD_FRAME
    assert gateway.connected_devices() == 0
    client = await RawClient.connect(gateway.port)
    await client.send(Hello(token=mint("d1", user="u1"), device=DeviceInfo(tz="Asia/Shanghai")))
    assert isinstance(await client.recv(), Welcome)


def _signed(payload: dict[str, Any], secret: str = APP_A.secret) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


@pytest.mark.parametrize(
    "payload",
    [
        {"app": "demo", "dev": "d1", "usr": "u\x001", "exp": 2**40, "iat": 0},
        {"app": "demo", "dev": "d\x001", "exp": 2**40, "iat": 0},
        {"app": "demo", "dev": "d1", "usr": "u1", "exp": 10**30, "iat": 0},
    ],
    ids=["nul-in-user", "nul-in-device", "exp-1e30"],
)
async def test_a_signed_token_with_a_bad_id_or_an_endless_expiry_is_refused(
    gateway: Node, payload: dict[str, Any]
) -> None:
    if payload["exp"] == 2**40:
        payload["exp"] = int(time.time()) + 3600
    client = await RawClient.connect(gateway.port)
    err = await client.hello(_signed(payload))
    assert isinstance(err, Error) and err.code == "unauthorized"
    assert await client.close_code() == codes.CLOSE_UNAUTHORIZED
    assert gateway.connected_devices() == 0


# --- the connected-devices gauge -----------------------------------------------------------------


async def test_the_connections_gauge_counts_a_replaced_session_once(
    gateway: Node, mint: Mint
) -> None:
    first = await open_session(gateway.port, mint("d1", user="u1"))
    second = await open_session(gateway.port, mint("d1", user="u1"))
    assert await first.close_code() == codes.CLOSE_REPLACED
    assert gateway.metrics.connections["demo"] == 1
    await second.close()
    await _until(lambda: gateway.connected_devices() == 0)
    await asyncio.sleep(0.05)
    assert gateway.metrics.connections["demo"] == 0
    assert 'tidings_connections{app="demo"} 0' in gateway.metrics_text()


# --- a failing store -----------------------------------------------------------------------------


class FailingStore(SqliteStore):
    """A store whose named operations fail like a full disk."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.failing: set[str] = set()

    def _fail(self, name: str) -> None:
        if name in self.failing:
            raise StoreError("db: database or disk is full", temporary=True)

    async def upsert_device(self, row: Any) -> Any:
        self._fail("upsert_device")
        return await super().upsert_device(row)

    async def resume_state(self, *args: Any) -> Any:
        self._fail("resume_state")  # what a hello reads after its device row: its queue
        return await super().resume_state(*args)


@pytest_asyncio.fixture
async def failing(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[tuple[Node, FailingStore]]:
    config = gateway_config(tmp_path / "failing.db")
    store = FailingStore(config.db)
    node = Node(config, store=store)
    await node.start()
    try:
        yield node, store
    finally:
        await node.stop()


async def test_a_device_arriving_while_the_disk_is_full_gets_internal_then_4104(
    failing: tuple[Node, FailingStore], mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    node, store = failing
    store.failing = {"upsert_device"}
    with caplog.at_level(logging.WARNING):
        client = await RawClient.connect(node.port)
        err = await client.hello(mint("d1", user="u1"))
        assert isinstance(err, Error) and err.code == "internal"
        code = await client.close_code()
    assert code == codes.CLOSE_INTERNAL and codes.should_reconnect(code)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert node.metrics.store_failures == 1
    # Once the store recovers, the device gets in.
    store.failing = set()
    await open_session(node.port, mint("d1", user="u1"))


async def test_a_store_failure_while_opening_leaves_no_session_registered(
    failing: tuple[Node, FailingStore], mint: Mint
) -> None:
    node, store = failing
    store.failing = {"resume_state"}
    client = await RawClient.connect(node.port)
    assert isinstance(await client.hello(mint("d1", user="u1")), Welcome)
    err = await client.recv_until(Error)
    assert err.code == "internal"
    assert await client.close_code() == codes.CLOSE_INTERNAL
    assert node.hub.get("demo", "d1") is None
    assert node.connected_devices() == 0
    assert node.metrics.connections["demo"] == 0


async def test_a_hello_that_waited_on_the_store_never_replaces_a_later_one(
    gateway: Node, mint: Mint
) -> None:
    # A device gave up on a connection whose hello waited on a slow store and came back on a
    # new one: when the old hello finally gets its answer, the new session must stay.
    real, gate = gateway.store.upsert_device, asyncio.Event()
    calls = 0

    async def slow_first(row: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return await real(row)

    gateway.store.upsert_device = slow_first  # type: ignore[method-assign]
    old = await RawClient.connect(gateway.port)
    await old.send(Hello(token=mint("d1", user="u1"), device=DeviceInfo(platform="test")))
    while calls == 0:
        await asyncio.sleep(0.01)
    new = await open_session(gateway.port, mint("d1", user="u1"))
    gate.set()
    await asyncio.wait_for(old.ws.wait_closed(), timeout(5))
    assert old.ws.close_code == codes.CLOSE_REPLACED
    assert await new.nothing_for(0.3)  # still open, not replaced
    assert gateway.hub.get("demo", "d1") is not None
    await new.close()
