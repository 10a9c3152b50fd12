"""The SQLite store, the embedded default implementation of :class:`Store`.

Writes are *group-committed*: callers queue a write (a plain function of a ``sqlite3``
connection) and await its future; the writer task hands every write queued so far to the writer
thread, which runs them in one transaction and commits once. A burst of thousands of frames
costs one WAL commit and one thread hop instead of thousands of each (running every statement
through aiosqlite cost ~1.6 ms per write under load). Reads go to a second connection through
aiosqlite; in WAL mode they never wait for the writer and see every committed write.

Durability: a write's future resolves only after its commit, and callers answer clients then
("202 = durably stored"). With ``durability="full"`` (the default) SQLite runs
``synchronous=FULL``, so every commit is fsynced before it returns and survives a power loss;
the group commit makes that one fsync per batch. ``durability="relaxed"`` runs
``synchronous=NORMAL``: a commit survives the gateway crashing but the last commits before a
power loss or kernel crash may be lost, for a little more throughput (see BENCHMARKS.md).

Every ``sqlite3`` error becomes a :class:`StoreError` here, with one line that names the file
and says what to do (:func:`_store_error`); a database written by a newer version is refused at
:meth:`SqliteStore.open`.

All SQL of the server lives under ``server/storage``. Every query is parameterised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosqlite

from tidings.protocol.frames import Event, InboxChange
from tidings.server.errors import ClaimLost, DeviceErased, FeedBehind, StoreError
from tidings.server.storage.admission import (
    Counts,
    admit,
    campaign_users,
    consent_checks,
    forget_erased,
    inbox_users,
    kept_messages,
    logged_decisions,
    merged_attrs,
    require_progress,
    require_running,
    require_settings,
)
from tidings.server.storage.rows import (
    INBOX_SQL,
    REQUEST_KEEP_S,
    Committed,
    DeviceRow,
    FateRow,
    Limit,
    Outcome,
    OutMessage,
    PendingSend,
    ProfileRow,
    Refusal,
    RequestRow,
    SendRow,
    SessionCheck,
    anonymous_key,
    export_document,
    profiles_from,
)
from tidings.server.storage.sql import (
    MISSING_INBOX,
    PAUSED,
    TOUCH_USER,
    UPSERT_DEVICE,
    SqlStore,
    device_params,
    migrations,
    stored_device,
)

__all__ = ["DURABILITY_MODES", "SqliteStore"]

log = logging.getLogger(__name__)

_Write = Callable[[sqlite3.Connection], Any]
_PRAGMAS = (
    "PRAGMA busy_timeout=5000",  # first: the pragmas below wait for a process migrating the file
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
)
DURABILITY_MODES: dict[str, tuple[str, ...]] = {
    # fullfsync: on macOS a plain fsync leaves the data in the drive's cache (no-op elsewhere).
    "full": ("PRAGMA synchronous=FULL", "PRAGMA fullfsync=ON", "PRAGMA checkpoint_fullfsync=ON"),
    "relaxed": ("PRAGMA synchronous=NORMAL",),
}
"""``durability`` -> the pragmas it adds: ``full`` fsyncs every commit before a write's future
resolves (a 202 survives a power loss); ``relaxed`` fsyncs only at checkpoints (a commit
survives a crash of the gateway, not of the machine)."""
_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _store_error(path: str, exc: sqlite3.Error) -> StoreError:
    """Translate a ``sqlite3`` error into one line that names the file and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)  # absent on errors raised by Python's module
    primary = code & 0xFF if isinstance(code, int) else None  # extended code -> primary code
    db = repr(path)
    if primary == sqlite3.SQLITE_NOTADB:
        return StoreError(
            f"database {db} is not an SQLite database file ({exc}): point --db at the gateway's "
            "database, or move this file away to start a new one"
        )
    if primary == sqlite3.SQLITE_CORRUPT:
        return StoreError(
            f"database {db} is corrupt ({exc}): stop the gateway and restore the file from a "
            f"backup, or salvage what is readable with: sqlite3 {path} .recover"
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"database {db} is locked by another process ({exc}): stop the process that holds "
            "it (a backup, an sqlite3 shell, a gateway in exclusive mode) or use another --db",
            temporary=True,
        )
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return StoreError(
            f"cannot write database {db} ({exc}): its directory must exist and this user must "
            "be able to write the file and the directory (SQLite keeps -wal and -shm files "
            "beside it)"
        )
    if primary == sqlite3.SQLITE_FULL:
        return StoreError(
            f"database {db}: the disk is full ({exc}): free some space", temporary=True
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StoreError(
            f"database {db}: input/output error ({exc}): check the disk and the file system",
            temporary=True,
        )
    return StoreError(f"database {db}: {exc}")


class _Reads:
    """The read connection; a ``sqlite3`` error during a read becomes a :class:`StoreError`.
    Every read is one trip to the connection's thread (``execute_fetchall``)."""

    __slots__ = ("_db", "_path")

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self._path = path

    async def fetchall(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Every row of a query, in one trip to the connection's thread (``execute`` and a
        cursor take three: it matters on the hello path, several reads per connection)."""
        bound = params if isinstance(params, Mapping) else tuple(params)
        try:
            return list(await self._db.execute_fetchall(sql, bound))
        except sqlite3.Error as exc:
            raise _store_error(self._path, exc) from exc

    async def fetchone(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> Any:
        """The first row of a query, or None, in one trip (see :meth:`fetchall`)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


STATE_PENDING, STATE_ACKED, STATE_DROPPED = 0, 1, 2
_CHUNK = 500  # ids per IN (...) list: well under SQLite's variable limit


def _no_write(db: sqlite3.Connection) -> None:
    """A write that writes nothing: :meth:`SqliteStore.flush` waits for its commit."""


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SqliteStore(SqlStore):
    """The SQLite store: WAL, numbered migrations, reads on an aiosqlite connection and group
    commits on a connection of their own in the writer thread.

    Args:
        path: The database file (created with its directory's -wal and -shm files if missing).
        durability: ``"full"`` (default): every commit is fsynced before the writes in it are
            answered. ``"relaxed"``: fsync only at checkpoints; see :data:`DURABILITY_MODES`.

    Raises:
        ValueError: an unknown ``durability``.
    """

    ROW_ID = "rowid"
    DELIVERIES = "deliveries d INDEXED BY deliveries_by_message"
    """Without ``ANALYZE`` statistics SQLite otherwise walks every delivery of the app for
    each send (its primary key on ``app`` alone): 2 s instead of 7 ms for a campaign of 7,000
    sends (``benchmarks/campaign_stats.py``)."""
    DAY_OF = "CAST({} / 86400 AS INTEGER)"

    def __init__(self, path: str, *, durability: str = "full") -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability: must be one of {sorted(DURABILITY_MODES)}")
        self.path = path
        self.durability = durability
        self._pragmas = _PRAGMAS + DURABILITY_MODES[durability]
        self._db: aiosqlite.Connection | None = None
        self._reads: _Reads | None = None
        self._wdb: sqlite3.Connection | None = None  # used only in the writer thread
        self._synchronous: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._queue: list[tuple[_Write, asyncio.Future[Any]]] = []
        self._in_flight = False  # the writer thread is committing a batch
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # number of group commits, for metrics and tests

    @property
    def synchronous(self) -> str | None:
        """``PRAGMA synchronous`` of the writer connection as SQLite reported it at open
        (``"FULL"`` or ``"NORMAL"``); None while the store is not open."""
        return self._synchronous

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the database, apply pending migrations, start the writer.

        Raises:
            StoreError: one line naming the file and what to do, when it cannot be opened,
                is not a database, is corrupt, locked, or written by a newer version.
        """
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidings-store-writer")
        loop = asyncio.get_running_loop()
        try:
            try:
                # The writer first: a file that cannot be opened fails here, before aiosqlite
                # starts its thread (after a failed connect that thread can outlive the loop
                # and print a traceback).
                await loop.run_in_executor(pool, self._open_writer)
                self._db = await aiosqlite.connect(self.path, isolation_level=None)
                for pragma in self._pragmas:
                    await self._db.execute(pragma)
                await self._migrate(self._db)
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc
        except StoreError:
            await loop.run_in_executor(pool, self._close_writer)
            pool.shutdown()
            if self._db is not None:
                await self._db.close()
                self._db = None
            raise
        self._reads = _Reads(self._db, self.path)
        self._pool = pool
        self._writer = asyncio.create_task(self._write_loop(), name="tidings-store-writer")

    def _open_writer(self) -> None:
        if os.path.isdir(self.path):
            raise StoreError(f"database {self.path!r} is a directory: give --db a file path")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            _retry_locked(lambda: [db.execute(pragma) for pragma in self._pragmas])
            (level,) = db.execute("PRAGMA synchronous").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        self._synchronous = _SYNCHRONOUS.get(level, str(level))
        self._wdb = db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        scripts = migrations("migrations")
        latest = scripts[-1][0] if scripts else 0
        if current > latest:
            # Running old code on a newer schema would misread or damage what it wrote.
            raise StoreError(
                f"database {self.path!r} has schema version {current}, newer than this version "
                f"of tidings knows (up to {latest}): upgrade tidings to the version that wrote "
                "it, or point --db at another file"
            )
        for version, script in scripts:
            if version <= current:
                continue
            sql = script.read_text(encoding="utf-8")
            try:
                await db.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_version VALUES ({version});\n"
                    "COMMIT;"
                )
            except sqlite3.OperationalError:
                # Another process opening the same new file may have applied it first.
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as c:
                    row = await c.fetchone()
                current = int(row[0]) if row else 0
                if current < version:
                    raise
                continue
            log.info("store: applied migration %s", script.name)

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers a trivial read."""
        await self._conn.fetchone("SELECT 1")

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed, the batch the writer thread
        is committing included."""
        if self._queue or self._in_flight:
            # Batches commit in order: once this no-op's batch is done, so is every earlier one.
            await self._submit(_no_write)

    async def close(self) -> None:
        """Commit every write submitted so far, stop the writer and close the database.

        A write submitted once ``close`` has begun fails with :class:`StoreError` (temporary);
        a second ``close`` while the first runs returns at once.
        """
        if self._db is None or self._closing:
            return
        # From here _submit refuses, and the writer drains the queue and stops once it is empty.
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(pool, self._close_writer)
            pool.shutdown()
        db, self._db, self._reads = self._db, None, None
        await db.close()

    def _close_writer(self) -> None:
        self._synchronous = None
        if self._wdb is not None:
            self._wdb.close()
            self._wdb = None

    @property
    def _conn(self) -> _Reads:
        if self._reads is None:
            raise StoreError("store is not open")
        return self._reads

    # --- group commit -------------------------------------------------------------------------

    def _submit(self, write: _Write) -> asyncio.Future[Any]:
        if self._closing or self._db is None:
            raise StoreError("store is closed", temporary=True)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((write, fut))
        self._wake.set()
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                # Checked after every batch, not only on wake-ups: a write that arrived while
                # the last batch committed must not leave close() waiting for another wake-up.
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._queue = self._queue, []
            self._in_flight = True
            try:
                # One hop to the writer thread per batch, not one per statement.
                writes = [w for w, _ in batch]
                results = await loop.run_in_executor(self._pool, self._commit, writes)
            except Exception as exc:  # the thread is gone: answer, do not strand the callers
                err = StoreError(f"database {self.path!r}: writer failed: {exc}", temporary=True)
                results = [(None, err)] * len(batch)
            finally:
                self._in_flight = False
            for (_, fut), (value, error) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(value)
                else:
                    fut.set_exception(error)

    def _commit(self, writes: list[_Write]) -> list[tuple[Any, BaseException | None]]:
        """Run ``writes`` in one transaction (writer thread); one result or error per write."""
        db = self._wdb
        assert db is not None
        results: list[tuple[Any, BaseException | None]] = []
        try:
            # IMMEDIATE: the write lock is taken first, so what a write reads (counts against
            # caps, sequence numbers, claims) cannot change before it commits, even when another
            # process writes to the same file.
            db.execute("BEGIN IMMEDIATE")
            for write in writes:
                db.execute("SAVEPOINT w")
                try:
                    results.append((write(db), None))
                except Exception as exc:
                    # One bad write must not sink the batch: roll back just its part.
                    db.execute("ROLLBACK TO w")
                    error = StoreError(f"db: {exc}") if isinstance(exc, sqlite3.Error) else exc
                    results.append((None, error))
                db.execute("RELEASE w")
            db.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            log.exception("store: group commit failed")
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            err = StoreError(f"db: commit failed: {exc}", temporary=True)
            return [(None, err)] * len(writes)
        self.commits += 1
        return results

    async def _execute(self, *statements: Any) -> None:
        """Run ``sql, params`` pairs as one group-committed write."""

        def write(db: sqlite3.Connection) -> None:
            for i in range(0, len(statements), 2):
                db.execute(statements[i], statements[i + 1])

        await self._submit(write)

    # --- devices and users --------------------------------------------------------------------

    async def upsert_device(self, row: DeviceRow) -> DeviceRow:
        """Record a device at hello; return it with its stored sequence state."""

        device, user = device_params(row)

        def write(db: sqlite3.Connection) -> DeviceRow:
            stored = db.execute(UPSERT_DEVICE, device).fetchone()
            db.execute(TOUCH_USER, user)
            return stored_device(row, stored)

        result: DeviceRow = await self._submit(write)
        return result

    async def check_sessions(
        self, app: str, sessions: Sequence[tuple[str, int, int]]
    ) -> list[SessionCheck]:
        """Of live sessions given as (device, highest seq sent, session epoch), those the store
        says are behind: a delivery numbered past what was sent, or a newer session since."""
        sent = {d: (s, e) for d, s, e in sessions}
        rows = await self._rows_in(
            "SELECT device_id, last_seq, session_epoch FROM devices WHERE app=?"
            " AND device_id IN ({marks})",
            app,
            list(sent),
        )
        return [
            SessionCheck(device=r[0], last_seq=int(r[1]), epoch=int(r[2]))
            for r in rows
            if r[1] > sent[r[0]][0] or r[2] > sent[r[0]][1]
        ]

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        return await self._conn.fetchall(sql, params)

    async def _row(self, sql: str, *params: Any) -> Any:
        return await self._conn.fetchone(sql, params)

    async def _rows_in(
        self, sql: str, app: str, values: Sequence[str], *after: object
    ) -> list[Any]:
        """Run ``sql`` (with ``{marks}`` for the IN list, then ``after``'s parameters) over
        ``values`` in chunks."""
        rows: list[Any] = []
        for chunk in _chunks(list(dict.fromkeys(values))):
            marks = ",".join("?" * len(chunk))
            rows += await self._conn.fetchall(sql.format(marks=marks), (app, *chunk, *after))
        return rows

    async def opted_out(
        self, app: str, user_keys: Sequence[str], category: str = "marketing"
    ) -> set[str]:
        """The users among ``user_keys`` who opted out of ``category``."""
        refuses, after = _refuses(category)
        return {r[0] for r in await self._rows_in(_USERS_IN + refuses, app, user_keys, *after)}

    async def profile_rows(
        self, app: str, *, value_event: str = "purchase", amount_prop: str = "amount"
    ) -> list[ProfileRow]:
        """Every profile of an app with its latest device facts and purchase totals.

        Purchases are the ``value_event`` events, their money value the ``amount_prop``
        property; a purchase's time is its event time, but never after it arrived.
        """
        db = self._conn
        users = await db.fetchall(
            "SELECT user_key, attrs, consent, first_seen, last_seen FROM users WHERE app=?", (app,)
        )
        facts = await db.fetchall(
            "SELECT COALESCE(user_id, '~' || device_id), platform, app_version, locale, tz"
            " FROM devices WHERE app=? ORDER BY last_seen",
            (app,),
        )
        buys = await db.fetchall(
            "SELECT user_key, COUNT(*), COALESCE(SUM(json_extract(props, ?)), 0),"
            " MAX(MIN(ts, received_at)) FROM events WHERE app=? AND name=? GROUP BY user_key",
            (_json_key(amount_prop), app, value_event),
        )
        return profiles_from(users, facts, buys)

    async def merge_attrs(
        self,
        app: str,
        user_key: str,
        attrs: dict[str, Any],
        now: float,
        *,
        device: str | None = None,
    ) -> None:
        """Merge attributes into a profile (a ``None`` value removes the attribute).

        ``device``: the device that said so; refused with :class:`DeviceErased` if it is no
        longer registered (its user was erased while it was connected).
        """

        def write(db: sqlite3.Connection) -> None:
            if device is not None:
                _check_device(db, app, device)
            r = db.execute(
                "SELECT attrs FROM users WHERE app=? AND user_key=?", (app, user_key)
            ).fetchone()
            merged = merged_attrs(r[0] if r else None, attrs)
            db.execute(
                "INSERT INTO users (app, user_key, attrs, first_seen, last_seen) VALUES (?,?,?,?,?)"
                " ON CONFLICT (app, user_key) DO UPDATE SET attrs=excluded.attrs,"
                " last_seen=excluded.last_seen",
                (app, user_key, json.dumps(merged), now, now),
            )

        await self._submit(write)

    async def set_consent(
        self,
        app: str,
        user_key: str,
        categories: dict[str, bool],
        now: float,
        *,
        device: str | None = None,
    ) -> None:
        """Record per-category consent (``{"marketing": False}`` opts out); ``device`` as in
        :meth:`merge_attrs`."""

        def write(db: sqlite3.Connection) -> None:
            if device is not None:
                _check_device(db, app, device)
            r = db.execute(
                "SELECT consent FROM users WHERE app=? AND user_key=?", (app, user_key)
            ).fetchone()
            consent = {**(json.loads(r[0]) if r else {}), **categories}
            opt_out = 1 if consent.get("marketing") is False else 0
            db.execute(
                "INSERT INTO users (app, user_key, consent, marketing_opt_out, first_seen,"
                " last_seen) VALUES (?,?,?,?,?,?) ON CONFLICT (app, user_key) DO UPDATE SET"
                " consent=excluded.consent, marketing_opt_out=excluded.marketing_opt_out",
                (app, user_key, json.dumps(consent), opt_out, now, now),
            )

        await self._submit(write)

    # --- messages and deliveries --------------------------------------------------------------

    async def commit(
        self, app: str, outcome: Outcome, messages: Sequence[OutMessage] = ()
    ) -> Committed:
        """Store the outcome of one send in one group-committed write, all or nothing.

        Inside the transaction, in order: finish the claimed pending work (fenced: refused with
        :class:`ClaimLost` if the claim passed to another scheduler); check each send against
        its :class:`Limit` s and the campaign's budget, counting what is already stored and
        what this write accepted before it, and refuse the sends that no longer fit; give every
        delivery of the accepted sends its device's next sequence number; then insert the
        messages, deliveries, send records, decision log entries and new pending work, and add
        the accepted sends to the campaign's total. With a collapse key, older pending
        deliveries with the same key to those devices are dropped first (PROTOCOL.md §3).
        """

        def write(db: sqlite3.Connection) -> Committed:
            return _commit_outcome(db, app, outcome, messages)

        result: Committed = await self._submit(write)
        return result

    async def fill_inbox(
        self, app: str, device: str, user_key: str, resume: int, now: float
    ) -> int:
        """Queue for ``device`` every message of the user's inbox it does not hold; return how
        many were queued.

        A device holds a message when a delivery of it is still queued for the device or was
        acknowledged at or below ``resume`` (what the device says it kept). The user's inbox is
        every unexpired, unrevoked inbox message sent to the user (with or without a device
        then) that the user did not delete, the newest of each collapse key. The deliveries are
        numbered inside this write, after every earlier one (PROTOCOL.md §3), and go out with
        kind ``inbox`` (:attr:`PendingDelivery.inbox_only`).
        """

        # Most hellos find nothing missing: look on the read connection first, and write
        # (where the look is repeated under the write lock) only when something is.
        missing = await self._conn.fetchone(
            MISSING_INBOX + " LIMIT 1", (app, user_key, now, device, resume)
        )
        if missing is None:
            return 0

        def write(db: sqlite3.Connection) -> int:
            return _fill_inbox(db, app, device, user_key, resume, now)

        result: int = await self._submit(write)
        return result

    async def ack_many(
        self, acks: Sequence[tuple[str, str, int]], now: float | None = None
    ) -> None:
        """Apply many (app, device, seq) acknowledgements in one write; ``now`` is recorded as
        when they were delivered."""

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE deliveries SET state=1, acked_at=? WHERE app=? AND device_id=?"
                " AND seq<=? AND state=0",
                [(now, a, d, seq) for a, d, seq in acks],
            )
            db.executemany(
                "UPDATE devices SET acked_seq=MIN(?, last_seq) WHERE app=? AND device_id=?"
                " AND acked_seq<?",
                [(seq, app, device, seq) for app, device, seq in acks],
            )

        await self._submit(write)

    async def revoke(self, app: str, message_id: str) -> list[tuple[str, str]] | None:
        """Revoke a message; return its (device, user key) recipients, or None if unknown."""

        def write(db: sqlite3.Connection) -> list[tuple[str, str]] | None:
            cur = db.execute(
                "UPDATE messages SET revoked=1 WHERE app=? AND id=?", (app, message_id)
            )
            if cur.rowcount == 0:
                return None
            db.execute(
                "UPDATE deliveries SET state=2 WHERE app=? AND message_id=? AND state=0",
                (app, message_id),
            )
            rows = db.execute(
                "SELECT DISTINCT d.device_id, v.user_id FROM deliveries d LEFT JOIN devices v"
                " ON v.app=d.app AND v.device_id=d.device_id WHERE d.app=? AND d.message_id=?",
                (app, message_id),
            ).fetchall()
            recipients = [(r[0], r[1] or anonymous_key(r[0])) for r in rows]
            for user_key in sorted({u for _, u in recipients}):
                _inbox_apply(db, app, user_key, [InboxChange(id=message_id, state="deleted")])
            return recipients

        result: list[tuple[str, str]] | None = await self._submit(write)
        return result

    async def add_receipts(
        self, receipts: Sequence[tuple[str, str, str, str, str | None, float]]
    ) -> list[bool]:
        """Record (app, device, message, kind, action, ts) receipts in one write.

        Returns, for each, whether it was accepted: a receipt for a message that was never
        delivered to that device is refused (and not stored).
        """

        def write(db: sqlite3.Connection) -> list[bool]:
            delivered: set[tuple[str, str, str]] = set()
            for i in range(0, len(receipts), _CHUNK // 3):
                chunk = receipts[i : i + _CHUNK // 3]
                marks = ",".join("(?,?,?)" for _ in chunk)
                params = [v for app, device, mid, *_ in chunk for v in (app, device, mid)]
                delivered.update(
                    (r[0], r[1], r[2])
                    for r in db.execute(
                        "SELECT DISTINCT app, device_id, message_id FROM deliveries"
                        f" WHERE (app, device_id, message_id) IN (VALUES {marks})",
                        params,
                    ).fetchall()
                )
            ok = [(app, device, mid) in delivered for app, device, mid, *_ in receipts]
            keep = [r for r, accepted in zip(receipts, ok, strict=True) if accepted]
            db.executemany(
                "INSERT OR IGNORE INTO receipts (app, device_id, message_id, kind, action, ts)"
                " VALUES (?,?,?,?,?,?)",
                keep,
            )
            # A receipt proves the delivery by its time, even when it overtook the device's
            # ack (or the ack, stamped when the gateway stored it, came later).
            db.executemany(
                "UPDATE deliveries SET state=1, acked_at=MIN(COALESCE(acked_at, ?1), ?1)"
                " WHERE app=?2 AND device_id=?3 AND message_id=?4 AND state IN (0, 1)",
                [(ts, app, device, mid) for app, device, mid, _, _, ts in keep],
            )
            return ok

        result: list[bool] = await self._submit(write)
        return result

    # --- events -------------------------------------------------------------------------------

    async def insert_events(
        self,
        app: str,
        device: str,
        user_key: str,
        events: Sequence[Event],
        now: float,
        *,
        registered: bool = False,
    ) -> None:
        """Store behaviour events; a resent event id is ignored.

        ``registered``: they come from a connected device, refused with
        :class:`DeviceErased` if the device is no longer registered (its user was erased).
        """
        rows = [
            (app, device, e.id, user_key, e.name, e.ts / 1000, json.dumps(e.props), now)
            for e in events
        ]

        latest = max((e.ts / 1000 for e in events), default=now)
        earliest = min((e.ts / 1000 for e in events), default=now)

        def write(db: sqlite3.Connection) -> None:
            if registered:
                _check_device(db, app, device)
            db.executemany(
                "INSERT OR IGNORE INTO events (app, device_id, event_id, user_key, name, ts,"
                " props, received_at) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
            db.execute(
                "INSERT INTO users (app, user_key, first_seen, last_seen) VALUES (?,?,?,?)"
                " ON CONFLICT (app, user_key) DO UPDATE SET"
                " first_seen=MIN(first_seen, excluded.first_seen),"
                " last_seen=MAX(last_seen, excluded.last_seen)",
                (app, user_key, min(earliest, now), min(latest, now)),
            )

        await self._submit(write)

    # --- targeting and campaigns -------------------------------------------------------------

    async def append_changes(self, origin: str, bodies: Sequence[bytes]) -> None:
        """Add changes to the feed, in order, in one write."""
        if not bodies:
            return
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO changes (at, origin, body) VALUES (?,?,?)",
                [(now, origin, body) for body in bodies],
            )

        await self._submit(write)

    async def read_changes(
        self, cursor: str | None, limit: int = 10_000
    ) -> tuple[str, list[tuple[str, bytes]]]:
        """The changes committed after ``cursor`` (None: none, the position now), oldest
        first, and the cursor after them (the last row id: one writer commits at a time, so
        ids are in commit order)."""
        if cursor is None:
            row = await self._conn.fetchone("SELECT COALESCE(MAX(id), 0) FROM changes")
            return str(row[0] if row else 0), []
        rows = await self._conn.fetchall(
            "SELECT id, origin, body FROM changes WHERE id>? ORDER BY id LIMIT ?",
            (int(cursor), limit + 1),
        )
        if len(rows) > limit:
            raise FeedBehind(f"change feed: more than {limit} changes behind")
        return (str(rows[-1][0]) if rows else cursor), [(r[1], bytes(r[2])) for r in rows]

    async def trim_changes(self, keep_s: float) -> int:
        """Forget changes older than ``keep_s`` seconds; how many."""
        before = time.time() - keep_s

        def write(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM changes WHERE at<?", (before,)).rowcount

        result: int = await self._submit(write)
        return result

    async def claim_due(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[PendingSend]:
        """Claim pending work due at ``now`` for ``owner`` until ``now + lease_s``.

        Work of paused campaigns waits unclaimed; work another scheduler holds is taken only
        once its lease has ended (that scheduler crashed or stalled). Work ``owner`` itself
        still holds is taken again at once: a scheduler claims only between its runs, so what
        it holds then was left (its campaign was paused mid-run). Earliest first.
        """

        def write(db: sqlite3.Connection) -> list[PendingSend]:
            rows = db.execute(
                "UPDATE pending_sends SET claimed_by=?, claim_until=? WHERE id IN"
                " (SELECT id FROM pending_sends p WHERE due_at<=? AND (claim_until<=? OR"
                f" claimed_by=?) AND NOT EXISTS ({PAUSED}) ORDER BY due_at, id LIMIT ?)"
                " RETURNING id, app, campaign, user_key, due_at, event",
                (owner, now + lease_s, now, now, owner, limit),
            ).fetchall()
            return sorted(
                (PendingSend(id=r[0], app=r[1], campaign=r[2], user_key=r[3], due_at=r[4],
                             event=None if r[5] is None else json.loads(r[5]))
                 for r in rows),
                key=lambda p: (p.due_at, p.id),
            )  # fmt: skip

        result: list[PendingSend] = await self._submit(write)
        return result

    async def set_campaign_status(
        self,
        app: str,
        cid: str,
        status: str,
        now: float,
        expect: Sequence[str] = (),
        then: Sequence[PendingSend] = (),
    ) -> bool:
        """Record a campaign's new status; with ``expect``, only from one of those statuses.

        False when the campaign does not exist or its stored status is not expected (another
        request changed it first): a transition happens once, however many ask for it.
        ``then``: pending work the change creates, stored in the same write only if it
        happened (a start's audience run: whoever claims it finishes what the start began).
        """
        sql = "UPDATE campaigns SET status=?, updated_at=? WHERE app=? AND id=?"
        params: list[Any] = [status, now, app, cid]
        if expect:
            sql += f" AND status IN ({','.join('?' * len(expect))})"
            params += list(expect)

        def write(db: sqlite3.Connection) -> bool:
            if db.execute(sql, params).rowcount == 0:
                return False
            if then:
                _insert_pending(db, app, then)
            return True

        changed: bool = await self._submit(write)
        return changed

    async def swap_rollout(
        self, app: str, cid: str, expect: dict[str, Any] | None, new: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set a campaign's roll-out state to ``new`` if it is still ``expect``.

        Returns the state stored afterwards: ``new`` when this call changed it, else what
        another scheduler stored first (None when the campaign is gone). Of concurrent calls
        with the same ``expect``, exactly one changes it.
        """

        def write(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT rollout FROM campaigns WHERE app=? AND id=?", (app, cid)
            ).fetchone()
            if row is None:
                return None
            current = None if row[0] is None else json.loads(row[0])
            if current != expect:
                return current  # type: ignore[no-any-return]
            db.execute(
                "UPDATE campaigns SET rollout=? WHERE app=? AND id=?",
                (json.dumps(new, sort_keys=True), app, cid),
            )
            return new

        result: dict[str, Any] | None = await self._submit(write)
        return result

    async def fates(self, app: str, user_key: str, message_ids: Sequence[str]) -> list[FateRow]:
        """What happened to these messages sent to the user, oldest first: deliveries its
        devices acknowledged, their receipts, and the user's inbox state (:class:`FateRow`)."""
        out: list[FateRow] = []
        for chunk in _chunks(list(dict.fromkeys(message_ids))):
            marks = ",".join("?" * len(chunk))
            ids = tuple(chunk)
            devices = ("(SELECT device_id FROM devices WHERE app=? AND COALESCE(user_id,"
                       " '~' || device_id)=?)")  # fmt: skip
            rows = await self._conn.fetchall(
                f"SELECT message_id, 'delivered', acked_at, device_id, NULL FROM deliveries"
                f" WHERE app=? AND message_id IN ({marks}) AND state=1 AND acked_at IS NOT NULL"
                f" AND device_id IN {devices}"
                f" UNION ALL SELECT message_id, kind, ts, device_id, action FROM receipts"
                f" WHERE app=? AND message_id IN ({marks}) AND device_id IN {devices}"
                f" UNION ALL SELECT message_id, state, at, NULL, NULL FROM inbox_state"
                f" WHERE app=? AND user_key=? AND message_id IN ({marks}) AND at IS NOT NULL",
                (app, *ids, app, user_key, app, *ids, app, user_key, app, user_key, *ids),
            )
            out += [FateRow(message_id=r[0], what=r[1], at=r[2], device=r[3], action=r[4])
                    for r in rows]  # fmt: skip
        return sorted(out, key=lambda f: (f.at, f.what, f.device or ""))

    async def erase_user(self, app: str, user_key: str) -> tuple[list[str], list[str]]:
        """Erase a profile and everything about it; return its devices and pending messages.

        Removes the profile, events, send records, decisions, pending work, inbox state,
        receipts, the devices' queues and the devices themselves, and the messages that were
        rendered for this user alone (campaign messages).
        """

        def write(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            if user_key.startswith("~"):
                sel, key = "device_id=? AND user_id IS NULL", user_key[1:]
            else:
                sel, key = "user_id=?", user_key
            devices = [r[0] for r in db.execute(
                f"SELECT device_id FROM devices WHERE app=? AND {sel}", (app, key)
            )]  # fmt: skip
            pending: list[str] = []
            for device in devices:
                pending += [
                    r[0]
                    for r in db.execute(
                        "SELECT message_id FROM deliveries WHERE app=? AND device_id=? AND state=0",
                        (app, device),
                    ).fetchall()
                ]
                # Events go by user below: another user's events on a shared device stay.
                for table in ("deliveries", "receipts", "devices"):
                    db.execute(f"DELETE FROM {table} WHERE app=? AND device_id=?", (app, device))
            db.execute(
                "DELETE FROM messages WHERE app=? AND campaign IS NOT NULL AND id IN"
                " (SELECT message_id FROM sends WHERE app=? AND user_key=?)",
                (app, app, user_key),
            )
            for table in ("sends", "decisions", "pending_sends", "inbox_state", "user_inbox",
                          "events", "users"):  # fmt: skip
                db.execute(f"DELETE FROM {table} WHERE app=? AND user_key=?", (app, user_key))
            return devices, sorted(set(pending))

        result: tuple[list[str], list[str]] = await self._submit(write)
        return result

    async def export_user(self, app: str, user_key: str) -> dict[str, Any]:
        """Everything stored about a profile, as JSON-ready data."""

        async def rows(sql: str, params: tuple[Any, ...] | dict[str, Any]) -> list[Any]:
            return list(await self._conn.fetchall(sql, params))

        user = await self.user(app, user_key)
        events = await self.events_since(app, 0, user_key=user_key)
        sends = await rows(
            "SELECT s.message_id, s.at, s.category, s.campaign, s.variant, m.wire FROM sends s"
            " LEFT JOIN messages m ON m.app=s.app AND m.id=s.message_id"
            " WHERE s.app=? AND s.user_key=? ORDER BY s.at",
            (app, user_key),
        )
        decisions = await rows(
            "SELECT campaign, at, reason, detail, variant FROM decisions"
            " WHERE app=? AND user_key=? ORDER BY at",
            (app, user_key),
        )
        inbox = await rows(INBOX_SQL.format(app=":app", user=":user"),
                           {"app": app, "user": user_key})  # fmt: skip
        devices = await self.devices_of_keys(app, [user_key])
        return export_document(user, [d for d, _ in devices], events, sends, decisions, inbox)

    # --- admin requests made once -------------------------------------------------------------

    async def begin_request(
        self, app: str, key: str, fingerprint: str, now: float, lease_s: float
    ) -> RequestRow | None:
        """Take ``key`` for a request, or return what an earlier request under it left.

        None: the caller has the key (new, or its earlier holder's lease ran out) and must
        :meth:`finish_request` or :meth:`abandon_request`. A row: the key is answered (its
        status and answer), still running (status None), or was used for another request
        (its fingerprint differs). Keys are kept for :data:`REQUEST_KEEP_S`.
        """

        def write(db: sqlite3.Connection) -> RequestRow | None:
            db.execute("DELETE FROM requests WHERE created_at<?", (now - REQUEST_KEEP_S,))
            row = db.execute(
                "SELECT fingerprint, status, answer, lease_until FROM requests"
                " WHERE app=? AND key=?",
                (app, key),
            ).fetchone()
            if row is not None and (row[1] is not None or row[3] > now or row[0] != fingerprint):
                return RequestRow(fingerprint=row[0], status=row[1], answer=row[2])
            db.execute(
                "INSERT INTO requests (app, key, fingerprint, created_at, lease_until)"
                " VALUES (?,?,?,?,?) ON CONFLICT (app, key) DO UPDATE SET"
                " lease_until=excluded.lease_until",
                (app, key, fingerprint, now, now + lease_s),
            )
            return None

        result: RequestRow | None = await self._submit(write)
        return result

    # --- inbox state --------------------------------------------------------------------------

    async def inbox_update(
        self,
        app: str,
        user_key: str,
        changes: Sequence[InboxChange],
        now: float | None = None,
    ) -> tuple[int, list[InboxChange]]:
        """Apply inbox changes (made at ``now``, when given); return the new version and the
        changes that took effect."""

        def write(db: sqlite3.Connection) -> tuple[int, list[InboxChange]]:
            return _inbox_apply(db, app, user_key, changes, now)

        result: tuple[int, list[InboxChange]] = await self._submit(write)
        return result


def _inbox_apply(
    db: sqlite3.Connection,
    app: str,
    user_key: str,
    changes: Sequence[InboxChange],
    now: float | None = None,
) -> tuple[int, list[InboxChange]]:
    r = db.execute(
        "SELECT inbox_ver FROM users WHERE app=? AND user_key=?", (app, user_key)
    ).fetchone()
    ver = int(r[0]) if r else 0
    applied: list[InboxChange] = []
    for change in changes:
        old = db.execute(
            "SELECT state FROM inbox_state WHERE app=? AND user_key=? AND message_id=?",
            (app, user_key, change.id),
        ).fetchone()
        if old is not None and (old[0] == "deleted" or old[0] == change.state):
            continue  # deleted is final; an unchanged state needs no new version
        ver += 1
        db.execute(
            "INSERT INTO inbox_state (app, user_key, message_id, state, ver, at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (app, user_key, message_id) DO UPDATE SET"
            " state=excluded.state, ver=excluded.ver, at=excluded.at",
            (app, user_key, change.id, change.state, ver, now),
        )
        applied.append(InboxChange(id=change.id, state=change.state, ver=ver))
    if applied:
        db.execute(
            "INSERT INTO users (app, user_key, inbox_ver, first_seen, last_seen)"
            " VALUES (?,?,?,0,0) ON CONFLICT (app, user_key) DO UPDATE SET"
            " inbox_ver=excluded.inbox_ver",
            (app, user_key, ver),
        )
    return ver, applied


def _commit_outcome(
    db: sqlite3.Connection, app: str, outcome: Outcome, messages: Sequence[OutMessage]
) -> Committed:
    """The body of :meth:`SqliteStore.commit`, inside the writer's transaction."""
    budget_left: int | None = None
    if outcome.settings is not None:
        stored = db.execute("SELECT spec FROM app_settings WHERE app=?", (app,)).fetchone()
        require_settings(app, outcome.settings, None if stored is None else stored[0])
    if outcome.campaign is not None:
        row = db.execute(
            "SELECT sent_total, status FROM campaigns WHERE app=? AND id=?",
            (app, outcome.campaign),
        ).fetchone()
        require_running(outcome.campaign, None if row is None else row[1])
        if outcome.budget is not None:
            budget_left = outcome.budget - (int(row[0]) if row else 0)
        outcome, messages = forget_erased(outcome, messages, _erased(db, app, outcome))
    if outcome.done_pending:
        if outcome.claim is None:
            db.executemany(
                "DELETE FROM pending_sends WHERE id=?", [(i,) for i in outcome.done_pending]
            )
        else:
            done = sum(
                db.execute(
                    "DELETE FROM pending_sends WHERE id=? AND claimed_by=?", (i, outcome.claim)
                ).rowcount
                for i in outcome.done_pending
            )
            if done != len(outcome.done_pending):
                raise ClaimLost(
                    f"pending work: {len(outcome.done_pending) - done} of"
                    f" {len(outcome.done_pending)} rows are no longer claimed by"
                    f" {outcome.claim!r}; nothing of this outcome was stored"
                )
    if outcome.progress is not None:
        at = outcome.progress
        moved = db.execute(
            "UPDATE pending_sends SET event=?, claim_until=? WHERE id=? AND claimed_by=?",
            (json.dumps(at.event), at.claim_until, at.pending_id, outcome.claim),
        ).rowcount
        require_progress(bool(moved), at, outcome.claim)
    sends, refused = _admit(db, app, outcome, budget_left)
    refused_keys = {(r.message_id, r.user_key) for r in refused}
    kept = kept_messages(messages, outcome, sends, refused)
    seqs = _next_seqs(db, app, [d for _, devices in kept for d in devices])
    deliveries: dict[str, tuple[tuple[str, int], ...]] = {}
    for m, devices in kept:
        deliveries[m.message_id] = tuple((d, seqs[d].pop(0)) for d in devices if d in seqs)
        _insert_message(db, app, m, deliveries[m.message_id])
        _keep_in_inboxes(db, app, m, inbox_users(m, refused_keys))
    if sends:
        db.executemany(
            "INSERT INTO sends (app, user_key, at, category, campaign, variant, message_id)"
            " VALUES (?,?,?,?,?,?,?)",
            [(app, r.user_key, r.at, r.category, r.campaign, r.variant, r.message_id)
             for r in sends],
        )  # fmt: skip
    decisions = logged_decisions(outcome, sends, refused)
    if decisions:
        db.executemany(
            "INSERT INTO decisions (app, campaign, user_key, at, reason, detail, variant,"
            " message_id) VALUES (?,?,?,?,?,?,?,?)",
            [(app, d.campaign, d.user_key, d.at, d.reason, d.detail, d.variant, d.message_id)
             for d in decisions],
        )  # fmt: skip
    if outcome.new_pending:
        _insert_pending(db, app, outcome.new_pending)
    total = None
    if outcome.campaign is not None:
        added = sum(1 for s in sends if s.campaign == outcome.campaign)
        row = db.execute(
            "UPDATE campaigns SET sent_total=sent_total+? WHERE app=? AND id=?"
            " RETURNING sent_total",
            (added, app, outcome.campaign),
        ).fetchone()
        total = None if row is None else int(row[0])
    return Committed(deliveries=deliveries, refused=tuple(refused), sent=len(sends),
                     sent_total=total)  # fmt: skip


def _insert_pending(db: sqlite3.Connection, app: str, pending: Sequence[PendingSend]) -> None:
    db.executemany(
        "INSERT INTO pending_sends (app, campaign, user_key, due_at, event) VALUES (?,?,?,?,?)",
        [(app, p.campaign, p.user_key, p.due_at, None if p.event is None else json.dumps(p.event))
         for p in pending],
    )  # fmt: skip


def _admit(
    db: sqlite3.Connection, app: str, outcome: Outcome, budget_left: int | None
) -> tuple[list[SendRow], list[Refusal]]:
    """Read the stored counts of every limit (one grouped query per distinct limit and time,
    in chunks of users), then :func:`admit` the sends."""
    wanted: dict[tuple[Limit, float], set[str]] = {}
    for s in outcome.sends:
        for limit in s.limits:
            wanted.setdefault((limit, s.at), set()).add(s.user_key)
    counts: Counts = {}
    for (limit, at), users in wanted.items():
        stored = _count_sends(db, app, limit, at, sorted(users))
        counts.update(((limit, at, user), stored.get(user, 0)) for user in users)
    opted: dict[str, set[str]] = {}
    for category, asked in consent_checks(outcome.sends).items():
        opted[category] = _opted_out(db, app, category, asked)
    return admit(outcome, budget_left, counts, opted)


def _erased(db: sqlite3.Connection, app: str, outcome: Outcome) -> set[str]:
    """The users of a campaign's commit with no stored profile: erased (see
    :func:`forget_erased`)."""
    asked = campaign_users(outcome)
    return set(asked) - {r[0] for r in _rows_in(db, _USERS_IN, app, asked)}


def _opted_out(db: sqlite3.Connection, app: str, category: str, users: Sequence[str]) -> set[str]:
    """The stored consent, read inside the commit: who of ``users`` refuses ``category``."""
    refuses, after = _refuses(category)
    return {r[0] for r in _rows_in(db, _USERS_IN + refuses, app, users, *after)}


_USERS_IN = "SELECT user_key FROM users WHERE app=? AND user_key IN ({marks})"


def _refuses(category: str) -> tuple[str, tuple[str, ...]]:
    """The condition (and its parameters) under which a stored user refuses ``category``:
    consent is opt-out, so only an explicit false refuses; marketing has its own column."""
    if category == "marketing":
        return " AND marketing_opt_out=1", ()
    return " AND json_extract(consent, ?) = 0", (_json_key(category),)


def _rows_in(
    db: sqlite3.Connection, sql: str, app: str, values: Sequence[str], *after: object
) -> list[Any]:
    """:meth:`SqliteStore._rows_in` inside the writer's transaction."""
    rows: list[Any] = []
    for chunk in _chunks(list(dict.fromkeys(values))):
        marks = ",".join("?" * len(chunk))
        rows += db.execute(sql.format(marks=marks), (app, *chunk, *after)).fetchall()
    return rows


def _count_sends(
    db: sqlite3.Connection, app: str, limit: Limit, at: float, users: Sequence[str]
) -> dict[str, int]:
    """Stored sends per user that count toward ``limit`` at time ``at``."""
    sql = "SELECT user_key, COUNT(*) FROM sends WHERE app=? AND user_key IN ({marks})"
    params: list[Any] = []
    if limit.window_s is not None:
        # No upper bound: a send stamped later than ``at`` (decided a moment after, committed
        # before) counts too.
        sql += " AND at>?"
        params.append(at - limit.window_s)
    if limit.campaign is not None:
        sql += " AND campaign=?"
        params.append(limit.campaign)
    if limit.uncounted:
        sql += f" AND category NOT IN ({','.join('?' * len(limit.uncounted))})"
        params += sorted(limit.uncounted)
    out: dict[str, int] = {}
    for chunk in _chunks(users):
        marks = ",".join("?" * len(chunk))
        for user, n in db.execute(
            sql.format(marks=marks) + " GROUP BY user_key", (app, *chunk, *params)
        ):
            out[user] = int(n)
    return out


def _next_seqs(db: sqlite3.Connection, app: str, devices: Sequence[str]) -> dict[str, list[int]]:
    """Give each delivery its device's next sequence number (in order; a device may repeat).

    Read and written inside the writer's transaction: no process keeps a counter of its own.
    A device that no longer exists (erased) gets no number and no delivery.
    """
    if not devices:
        return {}
    last: dict[str, int] = {}
    unique = list(dict.fromkeys(devices))
    for chunk in _chunks(unique):
        marks = ",".join("?" * len(chunk))
        for device, seq in db.execute(
            f"SELECT device_id, last_seq FROM devices WHERE app=? AND device_id IN ({marks})",
            (app, *chunk),
        ):
            last[device] = int(seq)
    out: dict[str, list[int]] = {}
    for device in devices:
        if device in last:
            last[device] += 1
            out.setdefault(device, []).append(last[device])
    db.executemany(
        "UPDATE devices SET last_seq=? WHERE app=? AND device_id=?",
        [(seq, app, device) for device, seq in last.items()],
    )
    return out


def _insert_message(
    db: sqlite3.Connection, app: str, m: OutMessage, deliveries: Sequence[tuple[str, int]]
) -> None:
    f = m.fields
    db.execute(
        "INSERT INTO messages (app, id, campaign, variant, kind, category, priority,"
        " collapse_key, created_at, expires_at, wire) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            app, m.message_id, f.get("campaign"), f.get("variant"), f["kind"], f["category"],
            f["priority"], m.collapse_key, f["created_at"], f["expires_at"], m.wire,
        ),
    )  # fmt: skip
    if m.collapse_key is not None:
        db.executemany(
            "UPDATE deliveries SET state=2 WHERE app=? AND device_id=? AND state=0"
            " AND collapse_key=?",
            [(app, device, m.collapse_key) for device, _ in deliveries],
        )
    db.executemany(
        "INSERT INTO deliveries (app, device_id, seq, message_id, collapse_key) VALUES (?,?,?,?,?)",
        [(app, device, seq, m.message_id, m.collapse_key) for device, seq in deliveries],
    )


def _retry_locked(work: Callable[[], object], wait_s: float = 5.0) -> None:
    """Run ``work``, again while the file is locked, for up to ``wait_s``.

    Switching a new file to WAL needs it to itself for a moment, and SQLite reports "locked"
    at once then instead of calling the busy handler: several processes opening one new file
    together would otherwise fail.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            work()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _keep_in_inboxes(db: sqlite3.Connection, app: str, m: OutMessage, users: Sequence[str]) -> None:
    """Record ``m`` in these users' inboxes; a collapse key replaces their older message."""
    if not users:
        return
    if m.collapse_key is not None:
        db.executemany(
            "DELETE FROM user_inbox WHERE app=? AND user_key=? AND collapse_key=?",
            [(app, u, m.collapse_key) for u in users],
        )
    db.executemany(
        "INSERT OR IGNORE INTO user_inbox (app, user_key, message_id, collapse_key, expires_at)"
        " VALUES (?,?,?,?,?)",
        [(app, u, m.message_id, m.collapse_key, m.fields["expires_at"]) for u in users],
    )


def _fill_inbox(
    db: sqlite3.Connection, app: str, device: str, user_key: str, resume: int, now: float
) -> int:
    """The body of :meth:`SqliteStore.fill_inbox`, inside the writer's transaction."""
    db.execute(
        "DELETE FROM user_inbox WHERE app=? AND user_key=? AND expires_at<=?", (app, user_key, now)
    )
    missing = db.execute(
        MISSING_INBOX + " ORDER BY m.created_at, m.id", (app, user_key, now, device, resume)
    ).fetchall()
    if not missing:
        return 0
    seqs = _next_seqs(db, app, [device] * len(missing))
    if device not in seqs:
        return 0  # the device was erased meanwhile
    db.executemany(
        "INSERT INTO deliveries (app, device_id, seq, message_id, collapse_key, inbox_only)"
        " VALUES (?,?,?,?,?,1)",
        [
            (app, device, seq, mid, key)
            for (mid, key), seq in zip(missing, seqs[device], strict=True)
        ],
    )
    return len(missing)


def _check_device(db: sqlite3.Connection, app: str, device: str) -> None:
    """Refuse a device's write once the device is no longer registered (erased); the app's
    backend (device ids starting with ``~``) is never refused."""
    if device.startswith("~"):
        return
    if (
        db.execute("SELECT 1 FROM devices WHERE app=? AND device_id=?", (app, device)).fetchone()
        is None
    ):
        raise DeviceErased(
            f"device {device[:40]!r}: no longer registered (its user was erased); reconnect"
            " to register it again"
        )


def _json_key(prop: str) -> str:
    """The SQLite JSON path of one top-level property (a name with dots is one key; settings
    refuse double quotes in it)."""
    return f'$."{prop}"'
