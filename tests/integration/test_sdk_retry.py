"""The SDK's outbox against the real gateway: temporary errors are retried, permanent ones are
dropped and reported, and the bound evicts for good."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import timeout

from tidings.client_sdk import QueuedRequest, RequestRefused, TidingsClient
from tidings.protocol.frames import Event
from tidings.server.errors import StoreError
from tidings.server.node import Node

Mint = Callable[..., str]


class _FullDisk:
    """Stands in for the gateway store's ``insert_events`` while the database disk is full."""

    def __init__(self, node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[float] = []
        self._monkeypatch = monkeypatch
        self._real = node.store.insert_events
        monkeypatch.setattr(node.store, "insert_events", self._fail)

    async def _fail(self, app: str, device: str, user_key: str, events: Sequence[Event],
                    now: float, *, registered: bool = False) -> None:  # fmt: skip
        self.calls.append(time.monotonic())
        raise StoreError("database or disk is full", temporary=True)

    def recover(self, node: Node) -> None:
        self._monkeypatch.setattr(node.store, "insert_events", self._real)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_events_answered_internal_while_the_disk_is_full_are_all_stored_after_it_recovers(
    gateway: Node, devices: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone = await devices("phone", user="u1", flush_delay=0.01, backoff_base=0.05,
                          backoff_cap=0.2)  # fmt: skip
    errors: list[Exception] = []
    phone.client.on_error(errors.append)
    disk = _FullDisk(gateway, monkeypatch)
    for i in range(20):
        phone.client.track("view_content", {"i": i})
    await _until(lambda: len(disk.calls) >= 3)  # refused, retried, refused again...
    assert phone.client.pending_requests == 20, "nothing is dropped while the server says later"
    assert errors == [], "a temporary error is retried, not reported as a loss"
    assert getattr(phone.client.last_error, "code", None) == "internal"
    disk.recover(gateway)
    await _until(lambda: phone.client.pending_requests == 0)
    assert await gateway.store.count_events("demo") == 20


async def test_retries_after_temporary_errors_wait_longer_each_time(
    gateway: Node, devices: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.99)  # every jitter at the top of its window
    phone = await devices("phone", user="u1", flush_delay=0.01, backoff_base=0.05,
                          backoff_cap=30.0)  # fmt: skip
    disk = _FullDisk(gateway, monkeypatch)
    phone.client.track("view_content")
    await _until(lambda: len(disk.calls) >= 5)
    gaps = [b - a for a, b in itertools.pairwise(disk.calls)]
    # Windows of 0.05, 0.1, 0.2, 0.4 s: each wait about twice the one before, never a tight loop.
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[-1] > 3 * gaps[0], gaps
    disk.recover(gateway)
    await _until(lambda: phone.client.pending_requests == 0, seconds=10)
    assert await gateway.store.count_events("demo") == 1


async def test_a_request_refused_for_good_is_dropped_and_reported_naming_it(
    gateway: Node, devices: Any
) -> None:
    phone = await devices("phone", user="u1", flush_delay=0.01)
    errors: list[Exception] = []
    phone.client.on_error(errors.append)
    await phone.client.identify("someone-else", {"first_name": "Mallory"})
    phone.client.track("view_content")
    await _until(lambda: bool(errors) and phone.client.pending_requests == 0)
    [error] = errors
    assert isinstance(error, RequestRefused)
    assert error.code == "forbidden" and error.temporary is False
    assert "identify.user" in error.reason
    assert error.requests == (
        QueuedRequest(kind="identify", fields={"user": "someone-else",
                                               "attrs": {"first_name": "Mallory"}}),
    )  # fmt: skip
    assert phone.client.stats.requests_refused == 1
    assert await gateway.store.count_events("demo") == 1, "the other request went through"


async def test_only_the_newest_events_within_the_bound_reach_the_gateway_after_a_restart(
    gateway: Node, mint: Mint, tmp_path: Path
) -> None:
    store = str(tmp_path / "phone.db")
    offline = TidingsClient(url=f"ws://127.0.0.1:{_closed_port()}", token=mint("phone", user="u1"),
                            device_id="phone", store_path=store, max_outbox=3)  # fmt: skip
    await offline.start()
    for i in range(5):
        offline.track(f"event_{i}")
    assert offline.pending_requests == 3 and offline.stats.events_dropped == 2
    await offline.close()
    online = TidingsClient(url=f"ws://127.0.0.1:{gateway.port}", token=mint("phone", user="u1"),
                           device_id="phone", store_path=store, max_outbox=3,
                           flush_delay=0.01)  # fmt: skip
    await online.start()
    try:
        await online.wait_connected(timeout=timeout(5))
        await _until(lambda: online.pending_requests == 0)
    finally:
        await online.close()
    await gateway.store.flush()
    with sqlite3.connect(gateway.config.db) as db:
        names = sorted(r[0] for r in db.execute("SELECT name FROM events WHERE device_id='phone'"))
    assert names == ["event_2", "event_3", "event_4"]


async def test_a_gateway_fault_that_also_closes_the_connection_loses_no_event(
    gateway: Node, devices: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone = await devices("phone", user="u1", flush_delay=0.01, backoff_base=0.05,
                          backoff_cap=0.2)  # fmt: skip
    calls: list[float] = []
    real = gateway.store.insert_events

    async def crash(*args: Any, **kwargs: Any) -> None:  # a bug, not a TidingsError: close 4104
        calls.append(time.monotonic())
        raise RuntimeError("the store crashed")

    monkeypatch.setattr(gateway.store, "insert_events", crash)
    for i in range(20):
        phone.client.track("view_content", {"i": i})
    await _until(lambda: len(calls) >= 3 and phone.client.stats.reconnects >= 2)
    assert phone.client.pending_requests == 20
    monkeypatch.setattr(gateway.store, "insert_events", real)
    await _until(lambda: phone.client.pending_requests == 0)
    assert await gateway.store.count_events("demo") == 20


async def test_a_device_answered_internal_at_the_handshake_retries_until_it_connects(
    gateway: Node, devices: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = gateway.sessions.open_session
    refused: list[float] = []

    async def disk_full_twice(*args: Any, **kwargs: Any) -> Any:
        if len(refused) < 2:
            refused.append(time.monotonic())
            raise StoreError("database or disk is full", temporary=True)
        return await real(*args, **kwargs)

    monkeypatch.setattr(gateway.sessions, "open_session", disk_full_twice)
    phone = await devices("phone", user="u1", connect=False, backoff_base=0.05, backoff_cap=0.2)
    await phone.client.wait_connected(timeout=timeout(5))
    assert len(refused) == 2
    assert getattr(phone.client.last_error, "code", None) == "internal"
