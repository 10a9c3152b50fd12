"""The offline queue on disk: what is queued survives a restart, what the bound evicted does not."""

from __future__ import annotations

import socket
from pathlib import Path

from tidings.client_sdk import TidingsClient


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _offline(store: Path, **kwargs: object) -> TidingsClient:
    return TidingsClient(url=f"ws://127.0.0.1:{_closed_port()}", token="t", device_id="d1",
                         store_path=str(store), backoff_base=5.0, **kwargs)  # type: ignore[arg-type]  # fmt: skip


async def _pending_after_restart(store: Path, **kwargs: object) -> int:
    again = _offline(store, **kwargs)
    await again.start()
    try:
        return again.pending_requests
    finally:
        await again.close()


async def test_requests_over_the_bound_stay_evicted_after_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "app.db"
    client = _offline(store, max_outbox=3)
    await client.start()
    await client.identify(None, {"plan": "pro"})
    for i in range(5):
        client.track("view_content", {"i": i})
    assert client.pending_requests == 3 and client.stats.events_dropped == 3
    await client.close()
    assert await _pending_after_restart(store, max_outbox=3) == 3
    # With a larger bound nothing evicted comes back either.
    assert await _pending_after_restart(store, max_outbox=100) == 3


async def test_a_smaller_bound_at_start_evicts_on_disk_too(tmp_path: Path) -> None:
    store = tmp_path / "app.db"
    client = _offline(store)
    await client.start()
    for i in range(5):
        client.track("view_content", {"i": i})
    await client.close()
    assert await _pending_after_restart(store, max_outbox=2) == 2
    assert await _pending_after_restart(store) == 2


async def test_requests_queued_just_before_close_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "app.db"
    client = _offline(store)
    await client.start()
    for i in range(10):
        client.track("view_content", {"i": i})
    await client.close()  # at once: the queue's writes must not be cancelled
    assert await _pending_after_restart(store) == 10


async def test_requests_queued_before_start_join_those_from_disk(tmp_path: Path) -> None:
    store = tmp_path / "app.db"
    first = _offline(store)
    await first.start()
    first.track("from_the_last_run")
    await first.close()
    second = _offline(store)
    second.track("before_start")
    await second.start()
    assert second.pending_requests == 2
    await second.close()
    assert await _pending_after_restart(store) == 2
