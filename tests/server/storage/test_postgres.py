"""The PostgreSQL store's own behaviour beyond the contract: migrations shared by processes,
and how the server's errors reach the caller (one line naming the server; temporary or not)."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest

from tidings.server.errors import StoreError

from .conftest import PG_DSN, STORE_FACTORIES

asyncpg = pytest.importorskip("asyncpg")
postgres = pytest.importorskip("tidings.server.storage.postgres")


async def test_an_unreachable_server_is_a_temporary_error_that_names_it() -> None:
    store = postgres.PostgresStore("postgresql://someone:secret@127.0.0.1:1/db")
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert caught.value.temporary
    assert "127.0.0.1:1/db" in str(caught.value) and "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "temporary", "says"),
    [
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), True, "slot"),
        (asyncpg.SerializationError("could not serialize access"), True, "concurrent"),
        (asyncpg.DeadlockDetectedError("deadlock detected"), True, "concurrent"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True, "starting"),
        (asyncpg.DiskFullError("could not extend file"), True, "extend"),
        (asyncpg.InvalidPasswordError("password authentication failed"), False, "password"),
        (asyncpg.InvalidCatalogNameError('database "x" does not exist'), False, "create"),
        (
            asyncpg.PostgresError.new(
                {"C": "23505", "M": "duplicate key value", "D": "Key (id)=(1) already exists."}
            ),
            False,
            "duplicate key value DETAIL: Key (id)=(1)",
        ),
        (ConnectionRefusedError(111, "Connection refused"), True, "start the server"),
        (ConnectionResetError(104, "Connection reset by peer"), True, "connection lost"),
        (TimeoutError(), True, "cannot reach"),
    ],
)
def test_server_errors_become_one_line_store_errors(
    error: BaseException, temporary: bool, says: str
) -> None:
    translated = postgres._store_error("PostgreSQL at db.example:5432/tidings", error)
    assert isinstance(translated, StoreError)
    assert translated.temporary is temporary
    assert "db.example:5432/tidings" in str(translated) and says in str(translated)
    assert "\n" not in str(translated)


async def test_a_missing_database_is_a_lasting_error(tmp_path: Path) -> None:
    async with STORE_FACTORIES["postgres"](tmp_path):  # skips (fails in CI) with no server
        pass
    dsn = PG_DSN.rsplit("/", 1)[0] + "/tidings_no_such_database"
    with pytest.raises(StoreError) as caught:
        await postgres.PostgresStore(dsn).open()
    assert not caught.value.temporary and "tidings_no_such_database" in str(caught.value)


async def test_stores_opening_at_once_migrate_the_schema_once(tmp_path: Path) -> None:
    async with STORE_FACTORIES["postgres"](tmp_path) as make:
        stores = [make() for _ in range(3)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            con = await asyncpg.connect(PG_DSN)
            try:
                schema = stores[0].schema
                versions = await con.fetch(f"SELECT version FROM {schema}.schema_version")
            finally:
                await con.close()
            folder = resources.files("tidings.server.storage") / "migrations" / "postgres"
            scripts = sorted(int(p.name.split("_", 1)[0]) for p in folder.iterdir()
                             if p.name.endswith(".sql"))  # fmt: skip
            assert sorted(r[0] for r in versions) == scripts  # each applied once
        finally:
            await asyncio.gather(*(s.close() for s in stores))


async def test_a_schema_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    async with STORE_FACTORIES["postgres"](tmp_path) as make:
        store = make()
        await store.open()
        await store.close()
        con = await asyncpg.connect(PG_DSN)
        try:
            await con.execute(f"INSERT INTO {store.schema}.schema_version VALUES (99)")
        finally:
            await con.close()
        with pytest.raises(StoreError, match="newer than this version"):
            await make().open()


async def test_a_closed_store_refuses_calls_with_a_temporary_error(tmp_path: Path) -> None:
    async with STORE_FACTORIES["postgres"](tmp_path) as make:
        store = make()
        await store.open()
        await store.close()
        await store.close()  # a second close does nothing
        with pytest.raises(StoreError) as caught:
            await store.count_events("a")
        assert caught.value.temporary


def test_hellos_of_one_batch_go_in_rounds_where_no_device_is_twice() -> None:
    # ON CONFLICT may touch a row once per statement: a device's second hello in a batch
    # waits for the next round (and takes the next epoch); a batch without one is one
    # statement, run as a transaction of its own.
    from tidings.server.storage.rows import DeviceRow

    def row(device: str, app: str = "demo") -> DeviceRow:
        return DeviceRow(app=app, device_id=device, user_id="u", first_seen=1.0, last_seen=1.0)

    rows = [row("a"), row("b"), row("a"), row("a", app="other"), row("a"), row("b")]
    assert postgres._hello_rounds(rows) == [[0, 1, 3], [2, 5], [4]]
    assert postgres._hello_rounds(rows[:2]) == [[0, 1]]
    assert "$14::float8[]" in postgres._HELLOS and "$15" not in postgres._HELLOS
