"""The SQLite store's durability modes, its refusal of unreadable databases, and its writer's
shutdown and flush (SQLite-specific: these are not part of the store contract)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import timeout

from tidings.protocol.errors import ConfigError
from tidings.server.config import load_config
from tidings.server.errors import StoreError
from tidings.server.storage import SqliteStore

from .conftest import device


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store with the default durability, closed after the test."""
    s = SqliteStore(str(tmp_path / "t.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# --- durability modes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durability", "synchronous"), [(None, "FULL"), ("full", "FULL"), ("relaxed", "NORMAL")]
)
async def test_the_writer_connection_runs_the_synchronous_mode_of_its_durability(
    tmp_path: Path, durability: str | None, synchronous: str
) -> None:
    path = str(tmp_path / "t.db")
    s = SqliteStore(path) if durability is None else SqliteStore(path, durability=durability)
    await s.open()
    try:
        # Read back from the writer connection by the store, not the mode it was asked for.
        assert s.synchronous == synchronous
        assert s.durability == (durability or "full")
    finally:
        await s.close()


def test_an_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore(str(tmp_path / "t.db"), durability="fast")


def test_durability_is_full_unless_configured() -> None:
    assert load_config(env={}).durability == "full"


def test_durability_comes_from_toml_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "tidings.toml"
    toml.write_text('durability = "relaxed"\n')
    assert load_config(path=toml, env={}).durability == "relaxed"
    env = {"TIDINGS_DURABILITY": "full"}
    assert load_config(path=toml, env=env).durability == "full"
    env = {"TIDINGS_DURABILITY": "relaxed"}
    assert load_config(env=env, overrides={"durability": "full"}).durability == "full"


@pytest.mark.parametrize("where", ["toml", "env", "flag"])
def test_a_bad_durability_names_the_setting_and_the_choices(tmp_path: Path, where: str) -> None:
    toml = tmp_path / "tidings.toml"
    toml.write_text('durability = "fast"\n')
    with pytest.raises(ConfigError, match=r"durability.*'full'.*'relaxed'"):
        if where == "toml":
            load_config(path=toml, env={})
        elif where == "env":
            load_config(env={"TIDINGS_DURABILITY": "fast"})
        else:
            load_config(env={}, overrides={"durability": "fast"})


# --- unreadable databases ----------------------------------------------------------------------


async def test_a_database_with_a_newer_schema_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (999)")
    db.commit()
    db.close()
    s = SqliteStore(str(path))
    with pytest.raises(StoreError, match=r"newer.*upgrade") as raised:
        await s.open()
    assert str(path) in raised.value.reason and "999" in raised.value.reason
    assert s.synchronous is None  # nothing stayed open
    await s.close()


async def test_a_read_that_meets_a_corrupt_page_raises_store_error_naming_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    s = SqliteStore(str(path))
    await s.open()
    await s.upsert_device(device("a", "d1", "u1"))
    await s.close()
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='users'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    s = SqliteStore(str(path))
    await s.open()  # the users table is not read at open
    try:
        with pytest.raises(StoreError, match="corrupt") as raised:
            await s.user("a", "u1")
        assert str(path) in raised.value.reason and "\n" not in raised.value.reason
    finally:
        await s.close()


# --- the writer: close and flush ---------------------------------------------------------------


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_writes_chained_during_close_complete_or_fail_and_close_returns(
    tmp_path: Path, yields: int
) -> None:
    """Each writer submits its next write as soon as the previous one is answered, so one
    arrives while close() commits the last queue (the old writer then waited forever)."""
    s = SqliteStore(str(tmp_path / "t.db"))
    await s.open()
    outcomes: list[str] = []

    async def writer(n: int) -> None:
        for i in range(4):
            try:
                await s.upsert_device(device("a", f"d{n}-{i}", f"u{n}"))
            except StoreError:
                outcomes.append("refused")
                return
            outcomes.append("stored")

    tasks = [asyncio.create_task(writer(n)) for n in range(5)]
    for _ in range(yields):
        await asyncio.sleep(0)
    await asyncio.wait_for(s.close(), timeout(5))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout(5))
    assert outcomes.count("refused") <= len(tasks)  # each writer stops at its first refusal
    assert len(outcomes) == outcomes.count("stored") + outcomes.count("refused")
    # What was answered "stored" is in the file.
    db = sqlite3.connect(tmp_path / "t.db")
    (stored,) = db.execute("SELECT COUNT(*) FROM devices").fetchone()
    db.close()
    assert stored == outcomes.count("stored")


async def test_close_waits_for_a_write_already_queued(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "t.db"))
    await s.open()
    write = asyncio.create_task(s.upsert_device(device("a", "d1", "u1")))
    await asyncio.sleep(0)
    await asyncio.wait_for(s.close(), timeout(5))
    assert (await write).device_id == "d1"


async def test_flush_waits_for_a_batch_the_writer_thread_is_committing(
    store: SqliteStore, tmp_path: Path
) -> None:
    # Another connection holds the write lock, so the writer thread takes the batch and then
    # waits in BEGIN IMMEDIATE: the write is in flight, not queued.
    blocker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    write = asyncio.create_task(store.upsert_device(device("a", "d1", "u1")))
    await asyncio.sleep(0.05)  # the writer task hands the batch to its thread at once
    asyncio.get_running_loop().call_later(0.3, blocker.execute, "COMMIT")
    try:
        await asyncio.wait_for(store.flush(), timeout(5))
        assert await store.known_devices("a", ["d1"]) == [("d1", "u1")]
    finally:
        blocker.close()
        await asyncio.wait_for(write, timeout(5))


async def test_flush_with_nothing_written_returns(store: SqliteStore) -> None:
    await asyncio.wait_for(store.flush(), timeout(5))


async def test_close_twice_at_once_closes_once(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "t.db"))
    await s.open()
    await s.upsert_device(device("a", "d1", "u1"))
    await asyncio.wait_for(asyncio.gather(s.close(), s.close()), timeout(5))
    with pytest.raises(StoreError, match="closed"):
        await s.upsert_device(device("a", "d2", "u2"))


def test_the_configuration_offers_exactly_the_store_durability_modes() -> None:
    from tidings.server.config import DURABILITY_CHOICES
    from tidings.server.storage.store import DURABILITY_MODES

    assert set(DURABILITY_CHOICES) == set(DURABILITY_MODES)


async def test_processes_opening_a_new_database_together_each_migrate_it_once(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "new.db")
    stores = [SqliteStore(path) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # none fails with "already exists"
    try:
        await stores[0].save_campaign("a", "c1", {"id": "c1"}, "draft", 0.0)
        assert [c.id for c in await stores[3].campaigns("a")] == ["c1"]
    finally:
        for s in stores:
            await s.close()
