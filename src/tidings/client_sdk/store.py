"""Local persistence of the SDK: cursor, seen ids, inbox, outbox.

:class:`MemoryStore` keeps everything in plain Python structures (the simulator runs thousands
of clients per process); :class:`SqliteStore` persists the same on aiosqlite when the app gives
``store_path``.

The outbox on disk is exactly the client's outbox: an entry is added in the same commit that
deletes what the bound evicted for it, and deleted once answered or refused, so a restart brings
back neither an evicted nor an answered request.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import aiosqlite
import msgpack

__all__ = ["DEFAULT_SEEN_LIMIT", "LocalStore", "MemoryStore", "SqliteStore", "open_store"]

DEFAULT_SEEN_LIMIT = 10_000
"""Message ids remembered for de-duplication (the newest are kept)."""


class LocalStore(Protocol):
    """What the client persists between runs."""

    persistent: bool

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def get(self, key: str, default: int = 0) -> int: ...
    async def put(self, key: str, value: int) -> None: ...
    def seen(self, message_id: str) -> bool: ...
    async def add_seen(self, message_id: str) -> None: ...
    async def save_item(self, item_id: str, item: dict[str, Any]) -> None: ...
    async def delete_item(self, item_id: str) -> None: ...
    async def load_items(self) -> list[dict[str, Any]]: ...
    async def outbox_add(
        self, entry_id: int, entry: dict[str, Any], *, evict: Sequence[int] = ()
    ) -> None: ...
    async def outbox_remove(self, entry_ids: list[int]) -> None: ...
    async def outbox_load(self) -> list[tuple[int, dict[str, Any]]]: ...


class MemoryStore:
    """Everything in memory; nothing survives the process."""

    persistent = False

    def __init__(self, seen_limit: int = DEFAULT_SEEN_LIMIT) -> None:
        self._kv: dict[str, int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_limit = seen_limit

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str, default: int = 0) -> int:
        return self._kv.get(key, default)

    async def put(self, key: str, value: int) -> None:
        self._kv[key] = value

    def seen(self, message_id: str) -> bool:
        return message_id in self._seen

    async def add_seen(self, message_id: str) -> None:
        self._seen[message_id] = None
        if len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)

    # The inbox and the outbox live in the client's own structures when in memory.
    async def save_item(self, item_id: str, item: dict[str, Any]) -> None:
        return None

    async def delete_item(self, item_id: str) -> None:
        return None

    async def load_items(self) -> list[dict[str, Any]]:
        return []

    async def outbox_add(
        self, entry_id: int, entry: dict[str, Any], *, evict: Sequence[int] = ()
    ) -> None:
        return None

    async def outbox_remove(self, entry_ids: list[int]) -> None:
        return None

    async def outbox_load(self) -> list[tuple[int, dict[str, Any]]]:
        return []


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (id TEXT PRIMARY KEY, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, entry BLOB NOT NULL);
"""


class SqliteStore(MemoryStore):
    """The same, persisted in one SQLite file through aiosqlite."""

    persistent = True

    def __init__(self, path: str, seen_limit: int = DEFAULT_SEEN_LIMIT) -> None:
        super().__init__(seen_limit)
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._n = 0

    async def open(self) -> None:
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(_SCHEMA)
        async with self._db.execute("SELECT key, value FROM kv") as cur:
            self._kv = {k: int(v) for k, v in await cur.fetchall()}
        async with self._db.execute("SELECT id, n FROM seen ORDER BY n") as cur:
            rows = list(await cur.fetchall())
        self._seen = OrderedDict((r[0], None) for r in rows)
        self._n = int(rows[-1][1]) if rows else 0
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.commit()
            await self._db.close()
            self._db = None

    @property
    def _conn(self) -> aiosqlite.Connection:
        assert self._db is not None, "store not open"
        return self._db

    async def put(self, key: str, value: int) -> None:
        self._kv[key] = value
        await self._conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
        await self._conn.commit()

    async def add_seen(self, message_id: str) -> None:
        await super().add_seen(message_id)
        self._n += 1
        await self._conn.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (message_id, self._n))
        await self._conn.execute("DELETE FROM seen WHERE n <= ?", (self._n - self._seen_limit,))
        await self._conn.commit()

    async def save_item(self, item_id: str, item: dict[str, Any]) -> None:
        await self._conn.execute(
            "INSERT OR REPLACE INTO inbox VALUES (?, ?)", (item_id, json.dumps(item))
        )
        await self._conn.commit()

    async def delete_item(self, item_id: str) -> None:
        await self._conn.execute("DELETE FROM inbox WHERE id = ?", (item_id,))
        await self._conn.commit()

    async def load_items(self) -> list[dict[str, Any]]:
        async with self._conn.execute("SELECT item FROM inbox") as cur:
            return [json.loads(r[0]) for r in await cur.fetchall()]

    async def outbox_add(
        self, entry_id: int, entry: dict[str, Any], *, evict: Sequence[int] = ()
    ) -> None:
        """Queue ``entry`` and, in the same commit, delete the entries the bound evicted.

        ``evict`` may name ``entry_id`` itself (the bound had no older entry to drop): then
        nothing of it is left on disk either.
        """
        await self._conn.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?)", (entry_id, msgpack.packb(entry))
        )
        if evict:
            await self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in evict])
        await self._conn.commit()

    async def outbox_remove(self, entry_ids: list[int]) -> None:
        """Delete answered, refused or evicted entries."""
        await self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in entry_ids])
        await self._conn.commit()

    async def outbox_load(self) -> list[tuple[int, dict[str, Any]]]:
        async with self._conn.execute("SELECT id, entry FROM outbox ORDER BY id") as cur:
            return [(int(r[0]), msgpack.unpackb(r[1])) for r in await cur.fetchall()]


def open_store(path: str | None) -> MemoryStore:
    """A store for ``path`` (None: in memory)."""
    return MemoryStore() if path is None else SqliteStore(path)
