"""Store contract: the change feed between the gateway processes of one store."""

from __future__ import annotations

import asyncio

from tidings.server.storage import Store


async def test_a_reader_gets_each_change_once_in_order_from_its_cursor(store: Store) -> None:
    start, nothing = await store.read_changes(None)
    assert nothing == []
    await store.append_changes("node-a", [b"1", b"2"])
    await store.append_changes("node-b", [b"3"])
    cursor, rows = await store.read_changes(start)
    assert rows == [("node-a", b"1"), ("node-a", b"2"), ("node-b", b"3")]
    again, none = await store.read_changes(cursor)
    assert none == []
    await store.append_changes("node-a", [b"4"])
    _, rows = await store.read_changes(again)
    assert rows == [("node-a", b"4")]
    # Another reader's cursor is its own: it reads the same changes.
    _, all_of_them = await store.read_changes(start)
    assert [b for _, b in all_of_them] == [b"1", b"2", b"3", b"4"]


async def test_a_reader_starting_now_sees_only_later_changes(store: Store) -> None:
    await store.append_changes("node-a", [b"old"])
    now, _ = await store.read_changes(None)
    await store.append_changes("node-a", [b"new"])
    _, rows = await store.read_changes(now)
    assert rows == [("node-a", b"new")]


async def test_concurrent_writers_lose_no_change_for_a_reader_polling_meanwhile(
    store: Store,
) -> None:
    cursor, _ = await store.read_changes(None)
    seen: list[bytes] = []
    done = asyncio.Event()

    async def read() -> None:
        nonlocal cursor
        while True:
            finished = done.is_set()
            cursor, rows = await store.read_changes(cursor)
            seen.extend(b for _, b in rows)
            if finished:
                return
            await asyncio.sleep(0)

    async def write(w: int) -> None:
        for i in range(20):
            await store.append_changes(f"n{w}", [f"{w}:{i}".encode()])

    reader = asyncio.ensure_future(read())
    await asyncio.gather(*(write(w) for w in range(4)))
    done.set()
    await reader
    assert sorted(seen) == sorted(f"{w}:{i}".encode() for w in range(4) for i in range(20))
    assert len(seen) == len(set(seen))
    for w in range(4):  # each writer's changes in its order
        mine = [b for b in seen if b.startswith(f"{w}:".encode())]
        assert mine == [f"{w}:{i}".encode() for i in range(20)]


async def test_trimming_forgets_only_old_changes(store: Store) -> None:
    start, _ = await store.read_changes(None)
    await store.append_changes("node-a", [b"x"])
    assert await store.trim_changes(3600) == 0
    _, rows = await store.read_changes(start)
    assert rows == [("node-a", b"x")]
    await asyncio.sleep(0.05)
    assert await store.trim_changes(0.01) == 1
