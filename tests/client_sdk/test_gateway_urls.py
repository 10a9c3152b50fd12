"""Several gateway URLs: checked when the client is made, tried in rotation on reconnect (the next
one at once, the backoff only between full rotations), starting from the one that worked last."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from helpers import timeout
from websockets.asyncio.server import ServerConnection, serve

from tidings.client_sdk import TidingsClient
from tidings.protocol import SUBPROTOCOL
from tidings.protocol.codec import encode
from tidings.protocol.errors import ConfigError
from tidings.protocol.frames import Welcome

Attempts = list[tuple[str, float]]
Behaviour = Callable[[ServerConnection, int], Any]


@pytest.mark.parametrize(
    "url",
    [
        [],
        (),
        "http://127.0.0.1:8765",
        ["ws://127.0.0.1:8765", "https://127.0.0.1:8766"],
        ["ws://127.0.0.1:8765", ""],
        [None],
        "127.0.0.1:8765",
    ],
)
def test_gateway_urls_must_be_one_or_more_websocket_urls(url: Any) -> None:
    with pytest.raises(ConfigError):
        TidingsClient(url=url, token="t", device_id="d1")


@pytest.mark.parametrize(
    ("url", "urls"),
    [
        ("ws://a:1", ("ws://a:1",)),
        (["ws://a:1", "wss://b:2"], ("ws://a:1", "wss://b:2")),
        (("wss://b:2",), ("wss://b:2",)),
    ],
)
def test_one_url_or_several_are_kept_in_order(url: str | Sequence[str], urls: tuple[str]) -> None:
    client = TidingsClient(url=url, token="t", device_id="d1")
    assert client.urls == urls
    assert client.url == urls[0]


async def _fail(ws: ServerConnection, n: int) -> None:
    await ws.recv()  # hello
    await ws.close(1011, "down")


async def _welcome(ws: ServerConnection) -> None:
    await ws.recv()  # hello
    await ws.send(encode(Welcome(session="s", device="d1", user=None, server_time=0,
                                 heartbeat_ms=25_000)))  # fmt: skip


@asynccontextmanager
async def _gateways(attempts: Attempts, **behaviours: Behaviour) -> AsyncIterator[list[str]]:
    """One WebSocket server per name; every connection is recorded as (name, time)."""
    async with AsyncExitStack() as stack:
        urls = []
        for name, behaviour in behaviours.items():

            async def handler(
                ws: ServerConnection, name: str = name, b: Behaviour = behaviour
            ) -> None:
                attempts.append((name, time.monotonic()))
                await b(ws, sum(1 for n, _ in attempts if n == name))

            server = await stack.enter_async_context(
                serve(handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
            )
            urls.append(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        yield urls


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_every_gateway_is_tried_once_before_the_client_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.99)  # every jitter at the top of its window
    attempts: Attempts = []
    async with _gateways(attempts, a=_fail, b=_fail) as urls:
        client = TidingsClient(url=urls, token="t", device_id="d1",
                               backoff_base=2.0, backoff_cap=2.0)  # fmt: skip
        await client.start()
        try:
            await _until(lambda: len(attempts) >= 4)
        finally:
            await client.close()
    assert [n for n, _ in attempts[:4]] == ["a", "b", "a", "b"]
    gaps = [t2 - t1 for (_, t1), (_, t2) in itertools.pairwise(attempts[:4])]
    assert gaps[0] < 1.0 and gaps[2] < 1.0, gaps  # the next gateway at once
    assert gaps[1] >= 1.9, gaps  # a backoff (0.99 x 2 s) after the full rotation


async def test_the_rotation_starts_from_the_gateway_that_worked_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.99)

    async def welcome_then_drop_once(ws: ServerConnection, n: int) -> None:
        await _welcome(ws)
        if n == 1:
            await ws.close(1011, "restarting")
        else:
            await ws.wait_closed()

    attempts: Attempts = []
    async with _gateways(attempts, a=_fail, b=welcome_then_drop_once, c=_fail) as urls:
        client = TidingsClient(url=urls, token="t", device_id="d1",
                               backoff_base=0.2, backoff_cap=0.2)  # fmt: skip
        await client.start()
        try:
            await _until(lambda: len(attempts) >= 3 and client.connected)
            await asyncio.sleep(0.3)  # no further attempt while the session stays open
            assert client.url == urls[1]
        finally:
            await client.close()
    assert [n for n, _ in attempts] == ["a", "b", "b"]
