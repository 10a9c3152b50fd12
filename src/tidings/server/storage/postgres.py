"""The PostgreSQL store: :class:`Store` for several gateway processes sharing one database.

Every method is one transaction on a connection from an ``asyncpg`` pool; a write's call
returns after its commit. The invariants the SQLite store gets from its single writer (caps,
budgets, sequence numbers, claims, status changes, idempotency keys) hold here across
processes because every write that reads what it then decides on locks it first, always in
this order, so that two writes never wait for each other in a circle:

1. the campaign row (``SELECT ... FOR UPDATE``), when a commit sends for a campaign: its
   budget and sent total are read and written under it;
2. the user locks: transaction-level advisory locks, one per *bucket* of users
   (:data:`USER_LOCK_BUCKETS`), taken in ascending bucket order by a commit for the users its
   limits count for, and by the writes that read-modify-write one user (inbox versions,
   attributes, consent, erasure);
3. pending work rows: the fenced ``DELETE`` of a commit; claims take a lock of their own
   first (claimers take turns) and then ``FOR UPDATE SKIP LOCKED``, never waiting for a row;
4. device rows in ``device_id`` order (``FOR NO KEY UPDATE``; ``FOR UPDATE`` to erase,
   ``FOR KEY SHARE`` to check receipts): sequence numbers are read and incremented under them,
   and a write changes only the device rows it locked;
5. the rows the write then changes (deliveries, messages, users, ...).

Why buckets and not one advisory lock per user: every advisory lock held takes a slot of the
server's shared lock table (``max_locks_per_transaction`` x connections, about 10,000 slots
with the defaults), so a commit to 10,000 users would fill it for the whole server. A bucket
holds the users whose ``crc32(app:user)`` falls in it; at most :data:`USER_LOCK_BUCKETS` slots
per transaction. The lock keys are scoped to the database schema, so stores on different
schemas of one database do not wait for each other.

A transaction that still loses a race (a deadlock the order above does not cover, a
serialization failure) is retried whole, up to :data:`WRITE_ATTEMPTS` times. Every ``asyncpg``
and socket error becomes a :class:`StoreError` in this module (:func:`_store_error`) with one
line that names the server; ``temporary`` when retrying later may succeed (connection refused
or lost, too many connections, serialization failures, disk full, server shutting down).

JSON is stored as the text ``json.dumps`` writes, as in SQLite: what the SQLite store accepts,
this one stores unchanged (``jsonb`` would refuse ``\\u0000`` in a client's free text).

All SQL of the server lives under ``server/storage``. Every query is parameterised; the
optional ``asyncpg`` package (``pip install 'tidings[cluster]'``) is needed only to open it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tidings.protocol.frames import Event, InboxChange
from tidings.server.batches import Batches
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
    RequestRow,
    SendRow,
    SessionCheck,
    anonymous_key,
    export_document,
    profiles_from,
)
from tidings.server.storage.sql import (
    DEVICE_SEEN,
    INSERT_DEVICE,
    INSERT_USER,
    MISSING_INBOX,
    PAUSED,
    USER_SEEN,
    SqlStore,
    device_params,
    migrations,
    numbered,
    stored_device,
)

try:
    import asyncpg
except ImportError:  # the optional "cluster" extra is missing: open() says how to install it
    asyncpg = None

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_POOL_SIZE",
    "USER_LOCK_BUCKETS",
    "WRITE_ATTEMPTS",
    "PostgresStore",
]

log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 10
"""Connections per store (per gateway process); PostgreSQL's ``max_connections`` (100 by
default) must cover every process's pool plus the admin tools."""
DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""How long opening a connection may take before the server counts as unreachable."""
COMMAND_TIMEOUT_S = 30.0
"""The longest any statement may run (a million-row commit stays well below it); a silent
partition ends every call after this long at the latest (the admin API does not wait that
long: see ``server/storewatch.py``)."""
ACQUIRE_TIMEOUT_S = 5.0
"""How long a call waits for a free connection of the pool."""
USER_LOCK_BUCKETS = 1024
"""Advisory locks that stand for users (see the module docstring); a commit holds at most
this many lock-table slots, and two commits to different users wait for each other with
probability 1/1024 per pair of users."""
HELLO_BATCH = 500
"""Devices recorded in one transaction when they say hello together."""
WRITE_ATTEMPTS = 4
"""How many times a write transaction runs before a deadlock or serialization failure is
reported (as a temporary :class:`StoreError`)."""
_RETRY_PAUSE_S = 0.01  # grows with each attempt, jittered: racers do not meet again
_CLAIM_LOCK = -1  # the advisory lock of claim_due, beside the buckets 0..USER_LOCK_BUCKETS-1
_MIGRATION_LOCK = 0x7D1D  # the advisory lock class of migrations (any constant will do)

STATE_PENDING, STATE_ACKED, STATE_DROPPED = 0, 1, 2
# Device rows are locked in one order by every write (module docstring, step 4).
_LOCK_DEVICES = (
    "SELECT device_id FROM (SELECT device_id FROM devices WHERE app=$1"
    ' AND device_id = ANY($2::text[]) ORDER BY device_id COLLATE "C" FOR {mode}) locked'
)
# A string amount counts by its leading number, as SQLite turns text into a number for SUM.
_LEADING_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)

_T = TypeVar("_T")
_Conn = Any  # asyncpg.Connection: asyncpg ships no type hints


def _server_of(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages; never its user or password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "PostgreSQL (unparsable DSN)"
    database = parts.path.lstrip("/") or "(default database)"
    return f"PostgreSQL at {host}:{port}/{database}"


_UPSERT_DEVICES = (
    INSERT_DEVICE + " SELECT a, d, u, p, v, l, t, s, f, ls, 1 FROM unnest($1::text[],"
    " $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],"
    " $9::float8[], $10::float8[]) AS x(a, d, u, p, v, l, t, s, f, ls)"
    ' ORDER BY a COLLATE "C", d COLLATE "C"' + DEVICE_SEEN
)
""":data:`~tidings.server.storage.sql.UPSERT_DEVICE` for many devices, in device order (the
lock order of the module docstring, step 4)."""


def _touch_users_sql(first: int) -> str:
    """Profiles made or seen, from four arrays numbered from ``$first``, in user order."""
    a, k, f, last = (f"${n}" for n in range(first, first + 4))
    return (
        INSERT_USER + f" SELECT * FROM unnest({a}::text[], {k}::text[], {f}::float8[],"
        f' {last}::float8[]) AS x(a, k, f, l) ORDER BY a COLLATE "C", k COLLATE "C"' + USER_SEEN
    )


_TOUCH_USERS = _touch_users_sql(1)
_HELLOS = f"WITH d AS ({_UPSERT_DEVICES}), u AS ({_touch_users_sql(11)}) SELECT * FROM d"
"""A batch of hellos with no device twice, as one statement (its own transaction): the devices
upserted in device order, then their profiles touched. One round trip instead of four
(``BEGIN``, devices, profiles, ``COMMIT``): the row locks of a hello are held for the time the
server takes to run it, never for the time a busy gateway takes to send the next statement."""


def _hello_rounds(rows: Sequence[DeviceRow]) -> list[list[int]]:
    """The rows of a batch in rounds where no device is twice (``ON CONFLICT`` may touch a
    row once per statement): a device that said hello twice goes in the next round, so its
    later hello takes the next epoch. Almost every batch is one round."""
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        key = (row.app, row.device_id)
        n = seen[key] = seen.get(key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


def _users_seen(params: Sequence[tuple[tuple[Any, ...], tuple[Any, ...]]]) -> list[list[Any]]:
    """The :data:`_TOUCH_USERS` columns for these hellos' profiles: each once, made at its
    first hello and seen at its last."""
    users: dict[tuple[str, str], tuple[float, float]] = {}
    for _, (app, key, since, at) in params:
        seen = users.get((app, key))
        users[(app, key)] = (since if seen is None else seen[0], at)
    return [[a for a, _ in users], [k for _, k in users],
            [f for f, _ in users.values()], [t for _, t in users.values()]]  # fmt: skip


async def _upsert_devices(
    con: _Conn, rows: Sequence[DeviceRow], rounds: list[list[int]]
) -> list[DeviceRow]:
    """Record these hellos (in their :func:`_hello_rounds`) in one transaction, or as
    :data:`_HELLOS` alone when there is one round; each row back with its stored state, in
    order."""
    params = [device_params(row) for row in rows]
    out: list[DeviceRow | None] = [None] * len(rows)
    for n, todo in enumerate(rounds):
        columns = [list(c) for c in zip(*(params[i][0] for i in todo), strict=True)]
        if len(rounds) == 1:
            stored = await con.fetch(_HELLOS, *columns, *_users_seen(params))
        else:
            stored = await con.fetch(_UPSERT_DEVICES, *columns)
            if n == len(rounds) - 1:
                await con.execute(_TOUCH_USERS, *_users_seen(params))
        by_key = {(r[4], r[5]): r for r in stored}
        for i in todo:
            out[i] = stored_device(rows[i], by_key[(rows[i].app, rows[i].device_id)])
    return [r for r in out if r is not None]


async def _keep_session(con: Any) -> None:
    """What a connection needs before going back to the pool: nothing more than asyncpg's own
    rollback of a transaction left open. The store takes only transaction-level advisory locks
    and never LISTENs, SETs or keeps a cursor, so asyncpg's default reset query would cost
    one more round trip for every call and undo nothing (6.8 % of a PostgreSQL gateway's time
    in a connect storm, by py-spy)."""


def _store_error(server: str, exc: BaseException) -> StoreError:
    """Translate an ``asyncpg`` or socket error into one line that names the server."""
    # asyncpg puts the server's DETAIL and HINT on lines of their own.
    what = " ".join(str(exc).split()) or type(exc).__name__
    if asyncpg is not None:
        if isinstance(exc, asyncpg.TooManyConnectionsError):
            return StoreError(
                f"{server} has no free connection slot ({what}): lower the pool size of the "
                "gateways or raise max_connections",
                temporary=True,
            )
        if isinstance(exc, asyncpg.TransactionRollbackError):  # serialization, deadlock
            return StoreError(
                f"{server}: the transaction lost to concurrent ones {WRITE_ATTEMPTS} times "
                f"({what}): retry it",
                temporary=True,
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return StoreError(
                f"{server} refused the login ({what}): check the user and password of the DSN"
            )
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return StoreError(f"{server}: {what}: create the database or fix the DSN")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return StoreError(
                f"{server}: {what}: the DSN's user must be able to create and write the "
                "store's tables in its schema"
            )
        if isinstance(exc, asyncpg.InsufficientResourcesError | asyncpg.OperatorInterventionError):
            # Disk full, out of memory or locks; shutting down, starting up, cancelled.
            return StoreError(f"{server}: {what}", temporary=True)
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            if isinstance(exc, asyncpg.ClientConfigurationError):
                return StoreError(f"{server}: bad DSN ({what})")
            return StoreError(f"{server}: connection lost ({what})", temporary=True)
    if isinstance(exc, ConnectionError) and not isinstance(exc, ConnectionRefusedError):
        return StoreError(f"{server}: connection lost ({what})", temporary=True)
    if isinstance(exc, OSError | TimeoutError):
        return StoreError(
            f"cannot reach {server} ({what}): start the server or point the DSN at a running one",
            temporary=True,
        )
    return StoreError(f"{server}: {what}")


def _key32(text: str) -> int:
    """A stable signed 32-bit advisory lock key for ``text`` (the same in every process)."""
    n = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    return n - (1 << 32) if n >= 1 << 31 else n


def _bucket(app: str, user_key: str) -> int:
    return zlib.crc32(f"{app}:{user_key}".encode("utf-8", "surrogatepass")) % USER_LOCK_BUCKETS


def _rowcount(status: str) -> int:
    """Rows a statement touched, from its status (``"UPDATE 3"``)."""
    return int(status.rsplit(" ", 1)[-1])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _amount(props: dict[str, Any], prop: str = "amount") -> float | None:
    """An event's ``prop`` as SQLite's ``SUM(json_extract(props, '$.amount'))`` counts it:
    a number as itself, true as 1, a string by its leading number (0 if none), anything else
    as 0; None (adds nothing) when absent or null."""
    value = props.get(prop)
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        found = _LEADING_NUMBER.match(value)
        return float(found.group()) if found else 0.0
    return 0.0


class PostgresStore(SqlStore):
    """The PostgreSQL store: an ``asyncpg`` pool, numbered migrations, and every write one
    transaction whose locks keep the store's invariants across processes.

    Args:
        dsn: ``postgresql://user[:password]@host[:port]/database``.
        schema: The schema holding the store's tables (created if missing); None uses the
            connection's default ``search_path``.
        pool_size: Connections this store may open (see :data:`DEFAULT_POOL_SIZE`).
        connect_timeout: Seconds a connection may take to open.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size: must be at least 1")
        self.dsn = dsn
        self.schema = schema
        self.server = _server_of(dsn)
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: Any = None  # asyncpg.Pool
        self.answered_at = 0.0
        """When the server last answered a call (monotonic seconds): a busy pool is not a
        silent server (:class:`~tidings.server.storewatch.StoreWatch`)."""
        self._hellos: Batches[DeviceRow, DeviceRow] = Batches(self._upsert_batch,
                                                              limit=HELLO_BATCH)  # fmt: skip
        self._ns = 0  # the advisory lock class of this schema (set at open)

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema if missing and apply pending migrations.

        Raises:
            StoreError: one line naming the server and what to do, when asyncpg is missing,
                the server cannot be reached or refuses, or the schema was written by a newer
                version of tidings.
        """
        if asyncpg is None:
            raise StoreError(
                "the PostgreSQL store needs the asyncpg package: pip install 'tidings[cluster]'"
            )
        settings = {"application_name": "tidings", "jit": "off"}  # JIT only slows short queries
        if self.schema is not None:
            settings["search_path"] = _quote_ident(self.schema)
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.connect_timeout,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings=settings,
                reset=_keep_session,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _store_error(self.server, exc) from exc
        try:
            self._ns = await self._write(self._migrate)
        except StoreError:
            await self._pool.close()
            self._pool = None
            raise

    async def _migrate(self, con: _Conn) -> int:
        """Apply the migrations this schema lacks; return its advisory lock class."""
        # One migrator at a time per schema: the others wait, then find nothing left to do.
        await con.execute(
            "SELECT pg_advisory_xact_lock($1, $2)", _MIGRATION_LOCK, _key32(self.schema or "")
        )
        if self.schema is not None and not await con.fetchval(
            "SELECT 1 FROM pg_namespace WHERE nspname=$1", self.schema
        ):  # asked first: a user who may not create schemas can still use an existing one
            await con.execute(f"CREATE SCHEMA {_quote_ident(self.schema)}")
        await con.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        current = int(await con.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        scripts = migrations("migrations/postgres")
        latest = scripts[-1][0] if scripts else 0
        if current > latest:
            # Running old code on a newer schema would misread or damage what it wrote.
            raise StoreError(
                f"{self.server}: schema {self.schema or '(default)'} has version {current}, "
                f"newer than this version of tidings knows (up to {latest}): upgrade tidings "
                "to the version that wrote it, or use another schema"
            )
        for version, script in scripts:
            if version <= current:
                continue
            await con.execute(script.read_text(encoding="utf-8"))
            await con.execute("INSERT INTO schema_version VALUES ($1)", version)
            log.info("store: applied migration postgres/%s", script.name)
        schema = await con.fetchval("SELECT current_schema()")
        return _key32(f"tidings:{schema}")

    async def flush(self) -> None:
        """Nothing to wait for: every write has committed when its call returns."""

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the server answers a trivial query."""
        await self._fetch("SELECT 1")

    async def close(self) -> None:
        """Close the pool once the calls using it are done; a second ``close`` does nothing.

        A call made once ``close`` has begun fails with :class:`StoreError` (temporary).
        """
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await pool.close()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("store: closing %s: %s", self.server, exc)
            pool.terminate()

    # --- transactions: the one boundary where asyncpg errors become StoreError ----------------

    def _live_pool(self) -> Any:
        if self._pool is None:
            raise StoreError("store is closed", temporary=True)
        return self._pool

    async def _write(
        self, work: Callable[[_Conn], Awaitable[_T]], *, transaction: bool = True
    ) -> _T:
        """Run ``work`` in one transaction, again from the start if it lost a race.

        ``transaction=False``: ``work`` is a single statement, a transaction of its own
        without the two round trips of ``BEGIN`` and ``COMMIT``.
        """
        pool = self._live_pool()
        for attempt in itertools.count(1):
            try:
                async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
                    if transaction:
                        async with con.transaction():
                            result = await work(con)
                    else:
                        result = await work(con)
                self.answered_at = time.monotonic()
                return result
            except asyncpg.TransactionRollbackError as exc:
                if attempt >= WRITE_ATTEMPTS:
                    raise _store_error(self.server, exc) from exc
                log.info("store: %s (attempt %d), retrying", exc, attempt)
                await asyncio.sleep(random.uniform(0, _RETRY_PAUSE_S * attempt))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                raise _store_error(self.server, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, work: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run the queries of ``work`` on one snapshot (a read-only repeatable-read
        transaction), so that they agree with each other."""
        pool = self._live_pool()
        try:
            async with (
                pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con,
                con.transaction(isolation="repeatable_read", readonly=True),
            ):
                result = await work(con)
            self.answered_at = time.monotonic()
            return result
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _store_error(self.server, exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """One query's rows (``sql`` in either placeholder style, :func:`numbered`)."""
        pool = self._live_pool()
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as con:
                rows = list(await con.fetch(numbered(sql), *args))
            self.answered_at = time.monotonic()
            return rows
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise _store_error(self.server, exc) from exc

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        return await self._fetch(sql, *params)

    async def _row(self, sql: str, *params: Any) -> Any:
        rows = await self._fetch(sql, *params)
        return rows[0] if rows else None

    async def _rows_in(
        self, sql: str, app: str, values: Sequence[str], *after: object
    ) -> list[Any]:
        """``sql`` with its ``IN ({marks})`` list as one array parameter."""
        if not values:
            return []
        return await self._fetch(sql.replace("IN ({marks})", "= ANY(?::text[])"), app,
                                 list(dict.fromkeys(values)), *after)  # fmt: skip

    async def _execute(self, *statements: Any) -> None:
        """Run ``sql, args`` pairs in one transaction."""

        async def work(con: _Conn) -> None:
            for i in range(0, len(statements), 2):
                await con.execute(numbered(statements[i]), *statements[i + 1])

        await self._write(work)

    async def _lock_users(self, con: _Conn, app: str, user_keys: Iterable[str]) -> None:
        """Take the user locks of ``user_keys`` (module docstring, step 2), in bucket order."""
        buckets = sorted({_bucket(app, u) for u in user_keys})
        if buckets:
            # unnest yields the array in order, and each row locks as it is produced.
            await con.execute(
                "SELECT pg_advisory_xact_lock($1, b) FROM unnest($2::int4[]) AS b",
                self._ns,
                buckets,
            )

    # --- devices and users --------------------------------------------------------------------

    async def upsert_device(self, row: DeviceRow) -> DeviceRow:
        """Record a device at hello; return it with its stored sequence state.

        Hellos arriving together share one transaction (:data:`HELLO_BATCH` at most; the next
        batch gathers while one commits), in the order they arrived: a device's later hello
        takes the higher session epoch, even in the same batch.
        """
        return await self._hellos(row)

    async def _upsert_batch(self, rows: list[DeviceRow]) -> list[DeviceRow]:
        rounds = _hello_rounds(rows)

        async def work(con: _Conn) -> list[DeviceRow]:
            return await _upsert_devices(con, rows, rounds)

        # One round is one statement, a transaction of its own.
        return await self._write(work, transaction=len(rounds) > 1)

    async def check_sessions(
        self, app: str, sessions: Sequence[tuple[str, int, int]]
    ) -> list[SessionCheck]:
        """Of live sessions given as (device, highest seq sent, session epoch), those the store
        says are behind: a delivery numbered past what was sent, or a newer session since.

        One query for the whole batch (the comparison is made by the server, so only the
        sessions behind travel back).
        """
        if not sessions:
            return []
        rows = await self._fetch(
            "SELECT v.device_id, v.last_seq, v.session_epoch FROM unnest($2::text[],"
            " $3::int8[], $4::int8[]) AS q(device_id, sent, epoch) JOIN devices v"
            " ON v.app=$1 AND v.device_id=q.device_id"
            " WHERE v.last_seq>q.sent OR v.session_epoch>q.epoch",
            app,
            [d for d, _, _ in sessions],
            [int(sent) for _, sent, _ in sessions],
            [int(epoch) for _, _, epoch in sessions],
        )
        return [SessionCheck(device=r[0], last_seq=int(r[1]), epoch=int(r[2])) for r in rows]

    async def opted_out(
        self, app: str, user_keys: Sequence[str], category: str = "marketing"
    ) -> set[str]:
        """The users among ``user_keys`` who opted out of ``category``."""
        if not user_keys:
            return set()
        rows = await self._fetch(_OPTED_OUT, app, list(dict.fromkeys(user_keys)), category)
        return {r[0] for r in rows}

    async def profile_rows(
        self, app: str, *, value_event: str = "purchase", amount_prop: str = "amount"
    ) -> list[ProfileRow]:
        """Every profile of an app with its latest device facts and purchase totals.

        Purchases are the ``value_event`` events, their money value the ``amount_prop``
        property; a purchase's time is its event time, but never after it arrived.
        """

        async def work(con: _Conn) -> tuple[list[Any], list[Any], list[Any]]:
            users = await con.fetch(
                "SELECT user_key, attrs, consent, first_seen, last_seen FROM users WHERE app=$1",
                app,
            )
            facts = await con.fetch(
                "SELECT COALESCE(user_id, '~' || device_id), platform, app_version, locale, tz"
                ' FROM devices WHERE app=$1 ORDER BY last_seen, device_id COLLATE "C"',
                app,
            )
            if amount_prop == "amount":  # summed from the column stored for it
                buys = await con.fetch(
                    "SELECT user_key, COUNT(*), COALESCE(SUM(amount), 0),"
                    " MAX(LEAST(ts, received_at)) FROM events WHERE app=$1 AND name=$2"
                    " GROUP BY user_key",
                    app,
                    value_event,
                )
                return list(users), list(facts), list(buys)
            each = await con.fetch(
                "SELECT user_key, props, LEAST(ts, received_at) FROM events"
                " WHERE app=$1 AND name=$2",
                app,
                value_event,
            )
            totals: dict[str, list[Any]] = {}
            for key, props, at in each:
                value = _amount(json.loads(props), amount_prop) or 0.0
                seen = totals.setdefault(key, [key, 0, 0.0, at])
                seen[1], seen[2], seen[3] = seen[1] + 1, seen[2] + value, max(seen[3], at)
            return list(users), list(facts), list(totals.values())

        return profiles_from(*await self._read(work))

    async def merge_attrs(
        self,
        app: str,
        user_key: str,
        attrs: dict[str, Any],
        now: float,
        *,
        device: str | None = None,
    ) -> None:
        """Merge attributes into a profile (a ``None`` value removes the attribute); refused
        with :class:`DeviceErased` when ``device`` is no longer registered."""

        async def work(con: _Conn) -> None:
            await self._lock_users(con, app, [user_key])  # read, merge, write: one at a time
            if device is not None:
                await _check_device(self, con, app, device, user_key)
            stored = await con.fetchval(
                "SELECT attrs FROM users WHERE app=$1 AND user_key=$2", app, user_key
            )
            merged = merged_attrs(stored, attrs)
            await con.execute(
                "INSERT INTO users (app, user_key, attrs, first_seen, last_seen)"
                " VALUES ($1,$2,$3,$4,$4) ON CONFLICT (app, user_key) DO UPDATE SET"
                " attrs=excluded.attrs, last_seen=excluded.last_seen",
                app,
                user_key,
                json.dumps(merged),
                float(now),
            )

        await self._write(work)

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

        async def work(con: _Conn) -> None:
            await self._lock_users(con, app, [user_key])
            if device is not None:
                await _check_device(self, con, app, device, user_key)
            stored = await con.fetchval(
                "SELECT consent FROM users WHERE app=$1 AND user_key=$2", app, user_key
            )
            consent = {**(json.loads(stored) if stored is not None else {}), **categories}
            await con.execute(
                "INSERT INTO users (app, user_key, consent, marketing_opt_out, first_seen,"
                " last_seen) VALUES ($1,$2,$3,$4,$5,$5) ON CONFLICT (app, user_key) DO UPDATE"
                " SET consent=excluded.consent, marketing_opt_out=excluded.marketing_opt_out",
                app,
                user_key,
                json.dumps(consent),
                consent.get("marketing") is False,
                float(now),
            )

        await self._write(work)

    # --- messages and deliveries --------------------------------------------------------------

    async def commit(
        self, app: str, outcome: Outcome, messages: Sequence[OutMessage] = ()
    ) -> Committed:
        """Store the outcome of one send in one transaction, all or nothing.

        The same steps as :meth:`SqliteStore.commit <tidings.server.storage.SqliteStore.commit>`,
        under locks (module docstring): the campaign row, then the locks of the users whose
        limits are checked, then the fenced delete of the claimed pending work (refused with
        :class:`ClaimLost` if the claim passed to another scheduler), then the sends are
        checked against their :class:`Limit` s and the budget, counting the stored sends and
        those this commit accepted before them; the recipients' device rows are locked and
        their ``last_seq`` incremented for the deliveries of the accepted sends; then the
        messages, deliveries, send records, decision log entries and new pending work are
        inserted in bulk, and the campaign's total grows by the accepted sends.
        """

        async def work(con: _Conn) -> Committed:
            return await self._commit(con, app, outcome, messages)

        return await self._write(work)

    async def _commit(
        self, con: _Conn, app: str, outcome: Outcome, messages: Sequence[OutMessage]
    ) -> Committed:
        budget_left: int | None = None
        if outcome.settings is not None:
            stored = await con.fetchval("SELECT spec FROM app_settings WHERE app=$1", app)
            require_settings(app, outcome.settings, stored)
        if outcome.campaign is not None:
            # Locked even without a budget: the sent total is written at the end, and taking
            # the row there, after the user locks, could deadlock with a budgeted commit.
            row = await con.fetchrow(
                "SELECT sent_total, status FROM campaigns WHERE app=$1 AND id=$2 FOR UPDATE",
                app,
                outcome.campaign,
            )
            total = None if row is None else row[0]
            require_running(outcome.campaign, None if row is None else row[1])
            if outcome.budget is not None:
                budget_left = outcome.budget - (0 if total is None else int(total))
        asked = campaign_users(outcome)
        await self._lock_users(con, app, [*asked, *(s.user_key for s in outcome.sends if s.limits)])
        if asked:
            # Under the user locks an erasure takes first: it either ended before (the profile
            # is gone, nothing of the user is written) or waits for this commit (and deletes
            # what it wrote).
            found = {r[0] for r in await con.fetch(
                "SELECT user_key FROM users WHERE app=$1 AND user_key = ANY($2::text[])",
                app, asked,
            )}  # fmt: skip
            outcome, messages = forget_erased(outcome, messages, set(asked) - found)
        if outcome.done_pending:
            await _finish_pending(con, outcome)
        if outcome.progress is not None:
            at = outcome.progress
            moved = await con.fetchval(
                "UPDATE pending_sends SET event=$1, claim_until=$2 WHERE id=$3 AND claimed_by=$4"
                " RETURNING id",
                json.dumps(at.event), float(at.claim_until), at.pending_id, outcome.claim,
            )  # fmt: skip
            require_progress(moved is not None, at, outcome.claim)
        counts = await _count_sends(con, app, outcome.sends)
        opted: dict[str, set[str]] = {}
        for category, users in consent_checks(outcome.sends).items():
            opted[category] = {r[0] for r in await con.fetch(_OPTED_OUT, app, users, category)}
        sends, refused = admit(outcome, budget_left, counts, opted)
        refused_keys = {(r.message_id, r.user_key) for r in refused}
        # A message all of whose sends were refused is not stored; one with no sends (a direct
        # send to devices with nothing counted) or an accepted send is, for its accepted users.
        kept = kept_messages(messages, outcome, sends, refused)
        seqs = await _next_seqs(con, app, [d for _, devices in kept for d in devices])
        deliveries: dict[str, tuple[tuple[str, int], ...]] = {}
        for m, devices in kept:
            deliveries[m.message_id] = tuple((d, next(seqs[d])) for d in devices if d in seqs)
        if kept:
            await _insert_messages(con, app, [(m, deliveries[m.message_id]) for m, _ in kept])
            await _keep_in_inboxes(con, app, [(m, inbox_users(m, refused_keys)) for m, _ in kept])
        if sends:
            await con.execute(
                "INSERT INTO sends (app, user_key, at, category, campaign, variant, message_id)"
                " SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::text[], $5::text[],"
                " $6::text[], $7::text[])",
                app,
                [s.user_key for s in sends],
                [float(s.at) for s in sends],
                [s.category for s in sends],
                [s.campaign for s in sends],
                [s.variant for s in sends],
                [s.message_id for s in sends],
            )
        decisions = logged_decisions(outcome, sends, refused)
        if decisions:
            # In list order: the log's id orders entries logged at the same time.
            await con.execute(
                "INSERT INTO decisions (app, campaign, user_key, at, reason, detail, variant,"
                " message_id) SELECT $1, * FROM unnest($2::text[], $3::text[], $4::float8[],"
                " $5::text[], $6::text[], $7::text[], $8::text[])",
                app,
                [d.campaign for d in decisions],
                [d.user_key for d in decisions],
                [float(d.at) for d in decisions],
                [d.reason for d in decisions],
                [d.detail for d in decisions],
                [d.variant for d in decisions],
                [d.message_id for d in decisions],
            )
        if outcome.new_pending:
            await _insert_pending(con, app, outcome.new_pending)
        total_after = None
        if outcome.campaign is not None:
            added = sum(1 for s in sends if s.campaign == outcome.campaign)
            value = await con.fetchval(
                "UPDATE campaigns SET sent_total=sent_total+$3 WHERE app=$1 AND id=$2"
                " RETURNING sent_total",
                app,
                outcome.campaign,
                added,
            )
            total_after = None if value is None else int(value)
        return Committed(
            deliveries=deliveries, refused=tuple(refused), sent=len(sends), sent_total=total_after
        )

    async def fill_inbox(
        self, app: str, device: str, user_key: str, resume: int, now: float
    ) -> int:
        """Queue for ``device`` every message of the user's inbox it does not hold (see
        :meth:`SqliteStore.fill_inbox <tidings.server.storage.SqliteStore.fill_inbox>`)."""

        # Most hellos find nothing missing: look first, and write (where the look is repeated
        # under the device's lock) only when something is.
        if not await self._fetch(MISSING_INBOX + " LIMIT 1", app, user_key, float(now),
                                 device, resume):  # fmt: skip
            return 0

        async def work(con: _Conn) -> int:
            if not await _lock_devices(con, app, [device], "NO KEY UPDATE"):
                return 0  # erased meanwhile
            await con.execute(
                "DELETE FROM user_inbox WHERE app=$1 AND user_key=$2 AND expires_at<=$3",
                app,
                user_key,
                float(now),
            )
            missing = await con.fetch(
                numbered(MISSING_INBOX + " ORDER BY m.created_at, m.id"),
                app,
                user_key,
                float(now),
                device,
                resume,
            )
            if not missing:
                return 0
            seqs = await _next_seqs(con, app, [device] * len(missing))
            if device not in seqs:
                return 0
            numbers = list(seqs[device])
            await con.execute(
                "INSERT INTO deliveries (app, device_id, seq, message_id, collapse_key,"
                " inbox_only) SELECT $1, $2, * , 1 FROM unnest($3::int8[], $4::text[], $5::text[])",
                app,
                device,
                numbers,
                [r[0] for r in missing],
                [r[1] for r in missing],
            )
            return len(missing)

        return await self._write(work)

    async def ack_many(
        self, acks: Sequence[tuple[str, str, int]], now: float | None = None
    ) -> None:
        """Apply many (app, device, seq) acknowledgements in one write; ``now`` is recorded as
        when they were delivered."""
        if not acks:
            return
        upto: dict[tuple[str, str], int] = {}
        for app, device, seq in acks:  # acks up to the highest seq cover the lower ones
            upto[(app, device)] = max(seq, upto.get((app, device), seq))
        keys = sorted(upto)

        async def work(con: _Conn) -> None:
            locked = await con.fetch(
                "SELECT app, device_id FROM (SELECT v.app, v.device_id FROM devices v"
                " JOIN unnest($1::text[], $2::text[]) AS q(app, device_id) ON v.app=q.app"
                ' AND v.device_id=q.device_id ORDER BY v.app COLLATE "C", v.device_id COLLATE "C"'
                " FOR NO KEY UPDATE OF v) locked",
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
            # Only the devices locked: one (re)created since is acked as if it came after.
            mine = [(r[0], r[1]) for r in locked]
            apps, devices, seqs = (
                [a for a, _ in mine],
                [d for _, d in mine],
                [upto[k] for k in mine],
            )
            await con.execute(
                "UPDATE deliveries d SET state=1, acked_at=$4"
                " FROM unnest($1::text[], $2::text[], $3::int8[])"
                " AS q(app, device_id, seq) WHERE d.app=q.app AND d.device_id=q.device_id"
                " AND d.seq<=q.seq AND d.state=0",
                apps,
                devices,
                seqs,
                None if now is None else float(now),
            )
            await con.execute(
                "UPDATE devices v SET acked_seq=LEAST(q.seq, v.last_seq)"
                " FROM unnest($1::text[], $2::text[], $3::int8[]) AS q(app, device_id, seq)"
                " WHERE v.app=q.app AND v.device_id=q.device_id AND v.acked_seq<q.seq",
                apps,
                devices,
                seqs,
            )

        await self._write(work)

    async def revoke(self, app: str, message_id: str) -> list[tuple[str, str]] | None:
        """Revoke a message; return its (device, user key) recipients, or None if unknown."""
        recipients_sql = (
            "SELECT DISTINCT d.device_id, v.user_id FROM deliveries d LEFT JOIN devices v"
            " ON v.app=d.app AND v.device_id=d.device_id WHERE d.app=$1 AND d.message_id=$2"
        )

        async def work(con: _Conn) -> list[tuple[str, str]] | None:
            before = await con.fetch(recipients_sql, app, message_id)
            users = {r[1] or anonymous_key(r[0]) for r in before}
            await self._lock_users(con, app, users)
            await _lock_devices(con, app, [r[0] for r in before], "NO KEY UPDATE")
            status = await con.execute(
                "UPDATE messages SET revoked=true WHERE app=$1 AND id=$2", app, message_id
            )
            if _rowcount(status) == 0:
                return None
            await con.execute(
                "UPDATE deliveries SET state=2 WHERE app=$1 AND message_id=$2 AND state=0",
                app,
                message_id,
            )
            rows = await con.fetch(recipients_sql, app, message_id)
            recipients = [(r[0], r[1] or anonymous_key(r[0])) for r in rows]
            now_users = {u for _, u in recipients}
            # A device that changed user since the first read: lock its new user too.
            await self._lock_users(con, app, now_users - users)
            gone = [InboxChange(id=message_id, state="deleted")]
            await _inbox_apply(con, app, {u: gone for u in sorted(now_users)})
            return recipients

        return await self._write(work)

    async def add_receipts(
        self, receipts: Sequence[tuple[str, str, str, str, str | None, float]]
    ) -> list[bool]:
        """Record (app, device, message, kind, action, ts) receipts in one write.

        Returns, for each, whether it was accepted: a receipt for a message that was never
        delivered to that device is refused (and not stored).
        """
        if not receipts:
            return []
        asked = sorted({(r[0], r[1], r[2]) for r in receipts})

        async def work(con: _Conn) -> list[bool]:
            # The devices are share-locked first: an erasure running now either ends before
            # (its deliveries are gone: refused) or waits (and deletes these receipts).
            devices = sorted({(a, d) for a, d, _ in asked})
            await con.execute(
                "SELECT count(*) FROM (SELECT 1 FROM devices v JOIN unnest($1::text[],"
                " $2::text[]) AS q(app, device_id) ON v.app=q.app AND v.device_id=q.device_id"
                ' ORDER BY v.app COLLATE "C", v.device_id COLLATE "C" FOR KEY SHARE OF v) locked',
                [a for a, _ in devices],
                [d for _, d in devices],
            )
            rows = await con.fetch(
                "SELECT DISTINCT d.app, d.device_id, d.message_id FROM deliveries d"
                " JOIN unnest($1::text[], $2::text[], $3::text[]) AS q(app, device_id, message_id)"
                " ON d.app=q.app AND d.message_id=q.message_id AND d.device_id=q.device_id",
                [a for a, _, _ in asked],
                [d for _, d, _ in asked],
                [m for _, _, m in asked],
            )
            delivered = {(r[0], r[1], r[2]) for r in rows}
            ok = [(r[0], r[1], r[2]) in delivered for r in receipts]
            keep = [r for r, accepted in zip(receipts, ok, strict=True) if accepted]
            if keep:
                await con.execute(
                    "INSERT INTO receipts (app, device_id, message_id, kind, action, ts)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                    " $5::text[], $6::float8[]) ON CONFLICT DO NOTHING",
                    [r[0] for r in keep],
                    [r[1] for r in keep],
                    [r[2] for r in keep],
                    [r[3] for r in keep],
                    [r[4] for r in keep],
                    [float(r[5]) for r in keep],
                )
                # A receipt proves the delivery by its time, even when it overtook the
                # device's ack (or the ack, stamped when the gateway stored it, came later).
                await con.execute(
                    "UPDATE deliveries d SET state=1, acked_at=LEAST(COALESCE(d.acked_at, q.ts),"
                    " q.ts) FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[])"
                    " AS q(app, device_id, message_id, ts) WHERE d.app=q.app"
                    " AND d.device_id=q.device_id AND d.message_id=q.message_id"
                    " AND d.state IN (0, 1)",
                    [r[0] for r in keep],
                    [r[1] for r in keep],
                    [r[2] for r in keep],
                    [float(r[5]) for r in keep],
                )
            return ok

        return await self._write(work)

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
        """Store behaviour events; a resent event id is ignored (``registered``: see
        :meth:`SqliteStore.insert_events <tidings.server.storage.SqliteStore.insert_events>`)."""
        latest = min(max((e.ts / 1000 for e in events), default=now), now)
        earliest = min(min((e.ts / 1000 for e in events), default=now), now)

        async def work(con: _Conn) -> None:
            if registered:
                await _check_device(self, con, app, device, user_key)
            if events:
                # In order: of two events with one id in a batch, the first is kept.
                await con.execute(
                    "INSERT INTO events (app, device_id, event_id, user_key, name, ts, props,"
                    " received_at, amount) SELECT $1, $2, q.id, $3, q.name, q.ts, q.props, $4,"
                    " q.amount FROM unnest($5::text[], $6::text[], $7::float8[], $8::text[],"
                    " $9::float8[]) AS q(id, name, ts, props, amount) ON CONFLICT DO NOTHING",
                    app,
                    device,
                    user_key,
                    float(now),
                    [e.id for e in events],
                    [e.name for e in events],
                    [e.ts / 1000 for e in events],
                    [json.dumps(e.props) for e in events],
                    [_amount(e.props) for e in events],
                )
            await con.execute(
                "INSERT INTO users (app, user_key, first_seen, last_seen) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT (app, user_key) DO UPDATE SET"
                " first_seen=LEAST(users.first_seen, excluded.first_seen),"
                " last_seen=GREATEST(users.last_seen, excluded.last_seen)",
                app,
                user_key,
                float(earliest),
                float(latest),
            )

        await self._write(work)

    # --- targeting and campaigns -------------------------------------------------------------

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

        False when the campaign does not exist or its stored status is not expected: one
        ``UPDATE`` whose condition PostgreSQL checks again on the row it locked, so of
        concurrent requests for one transition exactly one makes it. ``then``: pending work
        the change creates, inserted in the same transaction only if it happened.
        """
        sql = "UPDATE campaigns SET status=$1, updated_at=$2 WHERE app=$3 AND id=$4"
        params: list[Any] = [status, float(now), app, cid]
        if expect:
            sql += " AND status = ANY($5::text[])"
            params.append(list(expect))

        async def work(con: _Conn) -> bool:
            if _rowcount(await con.execute(sql, *params)) == 0:
                return False
            if then:
                await _insert_pending(con, app, then)
            return True

        return await self._write(work)

    async def swap_rollout(
        self, app: str, cid: str, expect: dict[str, Any] | None, new: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Set a campaign's roll-out state to ``new`` if it is still ``expect``.

        Returns the state stored afterwards: ``new`` when this call changed it, else what
        another scheduler stored first (None when the campaign is gone). The row is locked
        while it is compared, so of concurrent calls with the same ``expect`` exactly one
        changes it.
        """

        async def work(con: _Conn) -> dict[str, Any] | None:
            row = await con.fetchrow(
                "SELECT rollout FROM campaigns WHERE app=$1 AND id=$2 FOR UPDATE", app, cid
            )
            if row is None:
                return None
            current = None if row[0] is None else json.loads(row[0])
            if current != expect:
                return current  # type: ignore[no-any-return]
            await con.execute(
                "UPDATE campaigns SET rollout=$1 WHERE app=$2 AND id=$3",
                json.dumps(new, sort_keys=True), app, cid,
            )  # fmt: skip
            return new

        return await self._write(work)

    async def append_changes(self, origin: str, bodies: Sequence[bytes]) -> None:
        """Add changes to the feed, in order, in one transaction."""
        if bodies:
            await self._execute(
                "INSERT INTO changes (origin, body) SELECT $1, b FROM unnest($2::bytea[])"
                " WITH ORDINALITY AS q(b, i) ORDER BY i",
                (origin, list(bodies)),
            )

    async def read_changes(
        self, cursor: str | None, limit: int = 10_000
    ) -> tuple[str, list[tuple[str, bytes]]]:
        """The changes committed after ``cursor`` (None: none, the position now), oldest
        first, and the cursor after them.

        A cursor is a snapshot: what it reads are the transactions the snapshot of this read
        sees and the cursor's did not. A transaction that took its id before others but
        commits after them is read at the next call, not skipped.

        Raises:
            FeedBehind: more than ``limit`` changes are waiting: the reader is so far behind
                that it should rebuild its view from the store instead.
        """

        async def work(con: _Conn) -> tuple[str, list[tuple[str, bytes]]]:
            now = str(await con.fetchval("SELECT pg_current_snapshot()::text"))
            if cursor is None:
                return now, []
            rows = await con.fetch(
                "SELECT origin, body FROM changes"
                " WHERE tx >= pg_snapshot_xmin($1::text::pg_snapshot)"
                " AND pg_visible_in_snapshot(tx, $2::text::pg_snapshot)"
                " AND NOT pg_visible_in_snapshot(tx, $1::text::pg_snapshot) ORDER BY id LIMIT $3",
                cursor,
                now,
                limit + 1,
            )
            if len(rows) > limit:
                raise FeedBehind(f"change feed: more than {limit} changes behind")
            return now, [(r[0], bytes(r[1])) for r in rows]

        return await self._read(work)

    async def trim_changes(self, keep_s: float) -> int:
        """Forget changes older than ``keep_s`` seconds (the store's clock); how many."""

        async def work(con: _Conn) -> int:
            return _rowcount(await con.execute(
                "DELETE FROM changes WHERE at < extract(epoch FROM clock_timestamp()) - $1",
                float(keep_s),
            ))  # fmt: skip

        return await self._write(work)

    async def claim_due(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[PendingSend]:
        """Claim pending work due at ``now`` for ``owner`` until ``now + lease_s``.

        Work of paused campaigns waits unclaimed; work another scheduler holds is taken only
        once its lease has ended. Work ``owner`` itself still holds is taken again at once: a
        scheduler claims only between its runs, so what it holds then was left (its campaign
        was paused mid-run). Earliest first. Claimers take turns (an advisory lock), so
        that one gets all the due work the other has not taken; rows that a commit or a
        delete has locked are skipped (``SKIP LOCKED``), not waited for.
        """

        async def work(con: _Conn) -> list[PendingSend]:
            await con.execute("SELECT pg_advisory_xact_lock($1, $2)", self._ns, _CLAIM_LOCK)
            rows = await con.fetch(
                "WITH due AS (SELECT id FROM pending_sends p WHERE due_at<=$3 AND (claim_until<=$3"
                f" OR claimed_by=$1) AND NOT EXISTS ({PAUSED}) ORDER BY due_at, id LIMIT $4"
                " FOR UPDATE OF p SKIP LOCKED)"
                " UPDATE pending_sends s SET claimed_by=$1, claim_until=$2 FROM due"
                " WHERE s.id=due.id RETURNING s.id, s.app, s.campaign, s.user_key, s.due_at,"
                " s.event",
                owner,
                float(now + lease_s),
                float(now),
                limit,
            )
            return sorted(
                (PendingSend(id=int(r[0]), app=r[1], campaign=r[2], user_key=r[3], due_at=r[4],
                             event=None if r[5] is None else json.loads(r[5]))
                 for r in rows),
                key=lambda p: (p.due_at, p.id),
            )  # fmt: skip

        return await self._write(work)

    # --- analytics ----------------------------------------------------------------------------

    async def fates(self, app: str, user_key: str, message_ids: Sequence[str]) -> list[FateRow]:
        """What happened to these messages sent to the user, oldest first (see
        :meth:`SqliteStore.fates <tidings.server.storage.SqliteStore.fates>`)."""
        ids = sorted(set(message_ids))
        devices = ("(SELECT device_id FROM devices WHERE app=$1"
                   " AND COALESCE(user_id, '~' || device_id)=$2)")  # fmt: skip
        rows = await self._fetch(
            "SELECT message_id, 'delivered', acked_at, device_id, NULL FROM deliveries"
            " WHERE app=$1 AND message_id = ANY($3::text[]) AND state=1 AND acked_at IS NOT NULL"
            f" AND device_id IN {devices}"
            " UNION ALL SELECT message_id, kind, ts, device_id, action FROM receipts"
            f" WHERE app=$1 AND message_id = ANY($3::text[]) AND device_id IN {devices}"
            " UNION ALL SELECT message_id, state, at, NULL, NULL FROM inbox_state"
            " WHERE app=$1 AND user_key=$2 AND message_id = ANY($3::text[]) AND at IS NOT NULL",
            app,
            user_key,
            ids,
        )
        out = [FateRow(message_id=r[0], what=r[1], at=float(r[2]), device=r[3], action=r[4])
               for r in rows]  # fmt: skip
        return sorted(out, key=lambda f: (f.at, f.what, f.device or ""))

    # --- privacy ------------------------------------------------------------------------------

    async def erase_user(self, app: str, user_key: str) -> tuple[list[str], list[str]]:
        """Erase a profile and everything about it; return its devices and pending messages.

        Removes the profile, events, send records, decisions, pending work, inbox state,
        receipts, the devices' queues and the devices themselves, and the messages that were
        rendered for this user alone (campaign messages).
        """
        if user_key.startswith("~"):
            sel, key = "device_id=$2 AND user_id IS NULL", user_key[1:]
        else:
            sel, key = "user_id=$2", user_key

        async def work(con: _Conn) -> tuple[list[str], list[str]]:
            await self._lock_users(con, app, [user_key])
            await con.execute(
                "DELETE FROM pending_sends WHERE app=$1 AND user_key=$2", app, user_key
            )
            devices = [
                r[0]
                for r in await con.fetch(
                    f"SELECT device_id FROM devices WHERE app=$1 AND {sel}"
                    ' ORDER BY device_id COLLATE "C" FOR UPDATE',
                    app,
                    key,
                )
            ]
            pending: list[str] = []
            if devices:
                pending = [
                    r[0]
                    for r in await con.fetch(
                        "SELECT DISTINCT message_id FROM deliveries WHERE app=$1"
                        " AND device_id = ANY($2::text[]) AND state=0",
                        app,
                        devices,
                    )
                ]
                # Events go by user below: another user's events on a shared device stay.
                for table in ("deliveries", "receipts", "devices"):
                    await con.execute(
                        f"DELETE FROM {table} WHERE app=$1 AND device_id = ANY($2::text[])",
                        app,
                        devices,
                    )
            await con.execute(
                "DELETE FROM messages WHERE app=$1 AND campaign IS NOT NULL AND id IN"
                " (SELECT message_id FROM sends WHERE app=$1 AND user_key=$2)",
                app,
                user_key,
            )
            for table in ("sends", "decisions", "inbox_state", "user_inbox", "events", "users"):
                await con.execute(
                    f"DELETE FROM {table} WHERE app=$1 AND user_key=$2", app, user_key
                )
            return devices, sorted(set(pending))

        return await self._write(work)

    async def export_user(self, app: str, user_key: str) -> dict[str, Any]:
        """Everything stored about a profile, as JSON-ready data."""

        async def work(con: _Conn) -> tuple[list[Any], list[Any], list[Any]]:
            sends = await con.fetch(
                "SELECT s.message_id, s.at, s.category, s.campaign, s.variant, m.wire FROM sends s"
                " LEFT JOIN messages m ON m.app=s.app AND m.id=s.message_id"
                " WHERE s.app=$1 AND s.user_key=$2 ORDER BY s.at",
                app,
                user_key,
            )
            decisions = await con.fetch(
                "SELECT campaign, at, reason, detail, variant FROM decisions"
                " WHERE app=$1 AND user_key=$2 ORDER BY at, id",
                app,
                user_key,
            )
            inbox = await con.fetch(INBOX_SQL.format(app="$1", user="$2"), app, user_key)
            return list(sends), list(decisions), list(inbox)

        user = await self.user(app, user_key)
        events = await self.events_since(app, 0, user_key=user_key)
        sends, decisions, inbox = await self._read(work)
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
        (its fingerprint differs). Keys are kept for ``REQUEST_KEEP_S``. Concurrent requests
        under one key: the ``INSERT ... ON CONFLICT`` lets one in, and a lapsed lease is taken
        over under the row's lock, so exactly one of them gets None.
        """

        async def work(con: _Conn) -> RequestRow | None:
            await con.execute(
                "DELETE FROM requests WHERE created_at<$1", float(now - REQUEST_KEEP_S)
            )
            while True:
                taken = await con.fetchval(
                    "INSERT INTO requests (app, key, fingerprint, created_at, lease_until)"
                    " VALUES ($1,$2,$3,$4,$5) ON CONFLICT (app, key) DO NOTHING RETURNING 1",
                    app, key, fingerprint, float(now), float(now + lease_s),
                )  # fmt: skip
                if taken is not None:
                    return None
                row = await con.fetchrow(
                    "SELECT fingerprint, status, answer, lease_until FROM requests"
                    " WHERE app=$1 AND key=$2 FOR UPDATE",
                    app,
                    key,
                )
                if row is not None:
                    break
                # Deleted since the insert saw it (expired): insert again.
            if row[1] is not None or row[3] > now or row[0] != fingerprint:
                return RequestRow(fingerprint=row[0], status=row[1], answer=row[2])
            await con.execute(
                "UPDATE requests SET lease_until=$3 WHERE app=$1 AND key=$2",
                app,
                key,
                float(now + lease_s),
            )
            return None

        return await self._write(work)

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

        async def work(con: _Conn) -> tuple[int, list[InboxChange]]:
            await self._lock_users(con, app, [user_key])  # versions count up one at a time
            return (await _inbox_apply(con, app, {user_key: changes}, now))[user_key]

        return await self._write(work)


# --- the steps of a write, inside its transaction ----------------------------------------------


async def _lock_devices(con: _Conn, app: str, devices: Iterable[str], mode: str) -> list[str]:
    """Lock the rows of ``devices`` (module docstring, step 4) in ``device_id`` order; return
    the ids locked. A write changes only these: a device (re)created since the lock was taken
    is left alone, as if the write came first, so that it never waits for a row out of order.
    """
    ids = sorted(set(devices))
    if not ids:
        return []
    return [r[0] for r in await con.fetch(_LOCK_DEVICES.format(mode=mode), app, ids)]


async def _insert_pending(con: _Conn, app: str, new: Sequence[PendingSend]) -> None:
    await con.execute(
        "INSERT INTO pending_sends (app, campaign, user_key, due_at, event)"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::float8[], $5::text[])",
        app,
        [p.campaign for p in new],
        [p.user_key for p in new],
        [float(p.due_at) for p in new],
        [None if p.event is None else json.dumps(p.event) for p in new],
    )


_OPTED_OUT = (
    "SELECT user_key FROM users WHERE app=$1 AND user_key = ANY($2::text[]) AND"
    " CASE WHEN $3 = 'marketing' THEN marketing_opt_out"
    " ELSE (consent::jsonb -> $3) = 'false'::jsonb END"
)
"""Who of the users ``$2`` refuses category ``$3`` (consent is opt-out: only an explicit
false refuses; marketing has its own column)."""


async def _finish_pending(con: _Conn, outcome: Outcome) -> None:
    """Delete the finished pending work, fenced by the claim: all of it, or raise."""
    ids = [int(i) for i in outcome.done_pending]
    if outcome.claim is None:
        await con.execute("DELETE FROM pending_sends WHERE id = ANY($1::int8[])", ids)
        return
    # A row another scheduler claimed since is not deleted: its UPDATE locked the row, and
    # this DELETE checks claimed_by again on the version that UPDATE committed.
    done = await con.fetchval(
        "WITH gone AS (DELETE FROM pending_sends WHERE id = ANY($1::int8[]) AND claimed_by=$2"
        " RETURNING 1) SELECT count(*) FROM gone",
        ids,
        outcome.claim,
    )
    if int(done) != len(ids):
        raise ClaimLost(
            f"pending work: {len(ids) - int(done)} of {len(ids)} rows are no longer claimed"
            f" by {outcome.claim!r}; nothing of this outcome was stored"
        )


async def _count_sends(con: _Conn, app: str, sends: Sequence[SendRow]) -> Counts:
    """Stored sends that count toward each (limit, time, user) the sends ask about.

    One grouped query per distinct :class:`Limit` (its filters), over every (user, time) pair
    at once; a limit counts sends with ``at`` after ``time - window_s``, with no upper bound (a
    send stamped later than ``time``, decided a moment after and committed before, counts).
    """
    wanted: dict[Limit, set[tuple[str, float]]] = {}
    for s in sends:
        for limit in s.limits:
            wanted.setdefault(limit, set()).add((s.user_key, s.at))
    counts: Counts = {}
    for limit, pairs in wanted.items():
        ordered = sorted(pairs)
        sql = (
            "SELECT q.i, COUNT(*) FROM unnest($2::text[], $3::float8[]) WITH ORDINALITY"
            " AS q(user_key, after, i) JOIN sends s ON s.app=$1 AND s.user_key=q.user_key"
            " AND s.at>q.after"
        )
        params: list[Any] = [
            app,
            [u for u, _ in ordered],
            [float("-inf") if limit.window_s is None else at - limit.window_s for _, at in ordered],
        ]
        if limit.campaign is not None:
            params.append(limit.campaign)
            sql += f" AND s.campaign=${len(params)}"
        if limit.uncounted:
            params.append(sorted(limit.uncounted))
            sql += f" AND s.category <> ALL(${len(params)}::text[])"
        found = {int(r[0]): int(r[1]) for r in await con.fetch(sql + " GROUP BY q.i", *params)}
        for i, (user, at) in enumerate(ordered, 1):
            counts[(limit, at, user)] = found.get(i, 0)
    return counts


async def _next_seqs(con: _Conn, app: str, devices: Sequence[str]) -> dict[str, Iterator[int]]:
    """Give each delivery its device's next sequence number (in order; a device may repeat).

    The device rows are locked in order, then ``last_seq`` grows by each device's deliveries
    in one ``UPDATE ... RETURNING``: no process keeps a counter of its own. A device that no
    longer exists (erased) gets no number and no delivery.
    """
    if not devices:
        return {}
    wanted = Counter(devices)
    ids = await _lock_devices(con, app, wanted, "NO KEY UPDATE")
    rows = await con.fetch(
        "UPDATE devices v SET last_seq=v.last_seq+q.n FROM unnest($2::text[], $3::int8[])"
        " AS q(device_id, n) WHERE v.app=$1 AND v.device_id=q.device_id"
        " RETURNING v.device_id, v.last_seq",
        app,
        ids,
        [wanted[d] for d in ids],
    )
    return {r[0]: iter(range(int(r[1]) - wanted[r[0]] + 1, int(r[1]) + 1)) for r in rows}


async def _insert_messages(
    con: _Conn, app: str, kept: Sequence[tuple[OutMessage, tuple[tuple[str, int], ...]]]
) -> None:
    """Insert messages and their numbered deliveries in bulk.

    A collapse key drops the device's older pending deliveries with the same key
    (PROTOCOL.md §3): those stored before, and those of earlier messages in this commit.
    """
    fields = [m.fields for m, _ in kept]
    await con.execute(
        "INSERT INTO messages (app, id, campaign, variant, kind, category, priority,"
        " collapse_key, created_at, expires_at, wire) SELECT $1, * FROM unnest($2::text[],"
        " $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::float8[],"
        " $10::float8[], $11::bytea[])",
        app,
        [m.message_id for m, _ in kept],
        [f.get("campaign") for f in fields],
        [f.get("variant") for f in fields],
        [f["kind"] for f in fields],
        [f["category"] for f in fields],
        [f["priority"] for f in fields],
        [m.collapse_key for m, _ in kept],
        [float(f["created_at"]) for f in fields],
        [float(f["expires_at"]) for f in fields],
        [m.wire for m, _ in kept],
    )
    collapsing = sorted(
        {(d, m.collapse_key) for m, ds in kept if m.collapse_key is not None for d, _ in ds}
    )
    if collapsing:
        await con.execute(
            "UPDATE deliveries d SET state=2 FROM unnest($2::text[], $3::text[])"
            " AS q(device_id, collapse_key) WHERE d.app=$1 AND d.device_id=q.device_id"
            " AND d.collapse_key=q.collapse_key AND d.state=0",
            app,
            [d for d, _ in collapsing],
            [k for _, k in collapsing],
        )
    rows: list[tuple[str, int, str, str | None, int]] = []
    last: dict[tuple[str, str], int] = {}  # (device, key) -> index of its latest delivery
    for m, ds in kept:
        if m.collapse_key is not None:
            for d, _ in ds:
                earlier = last.get((d, m.collapse_key))
                if earlier is not None:
                    rows[earlier] = (*rows[earlier][:4], STATE_DROPPED)
        start = len(rows)
        rows += [(d, seq, m.message_id, m.collapse_key, STATE_PENDING) for d, seq in ds]
        if m.collapse_key is not None:
            for i, (d, _) in enumerate(ds):
                last[(d, m.collapse_key)] = start + i
    if rows:
        await con.execute(
            "INSERT INTO deliveries (app, device_id, seq, message_id, collapse_key, state)"
            " SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[],"
            " $6::int2[])",
            app,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
        )


async def _inbox_apply(
    con: _Conn, app: str, changes: dict[str, Sequence[InboxChange]], now: float | None = None
) -> dict[str, tuple[int, list[InboxChange]]]:
    """Apply each user's inbox changes in order; return each user's version and applied changes.

    The caller holds the users' locks. Deleted is final; an unchanged state makes no new
    version. Three queries for any number of users and changes.
    """
    users = sorted(changes)
    vers = {
        r[0]: int(r[1])
        for r in await con.fetch(
            "SELECT user_key, inbox_ver FROM users WHERE app=$1 AND user_key = ANY($2::text[])",
            app,
            users,
        )
    }
    asked = sorted({(u, c.id) for u in users for c in changes[u]})
    states = {
        (r[0], r[1]): r[2]
        for r in await con.fetch(
            "SELECT s.user_key, s.message_id, s.state FROM inbox_state s"
            " JOIN unnest($2::text[], $3::text[]) AS q(user_key, message_id)"
            " ON s.user_key=q.user_key AND s.message_id=q.message_id WHERE s.app=$1",
            app,
            [u for u, _ in asked],
            [m for _, m in asked],
        )
    }
    out: dict[str, tuple[int, list[InboxChange]]] = {}
    final: dict[tuple[str, str], tuple[str, int]] = {}
    for u in users:
        ver = vers.get(u, 0)
        applied: list[InboxChange] = []
        for change in changes[u]:
            old = states.get((u, change.id))
            if old is not None and (old == "deleted" or old == change.state):
                continue  # deleted is final; an unchanged state needs no new version
            ver += 1
            states[(u, change.id)] = change.state
            final[(u, change.id)] = (change.state, ver)
            applied.append(InboxChange(id=change.id, state=change.state, ver=ver))
        out[u] = (ver, applied)
    if final:
        keys = sorted(final)
        await con.execute(
            "INSERT INTO inbox_state (app, user_key, message_id, state, ver, at) SELECT $1, *,"
            " $6::float8 FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[])"
            " ON CONFLICT (app, user_key, message_id) DO UPDATE SET state=excluded.state,"
            " ver=excluded.ver, at=excluded.at",
            app,
            [u for u, _ in keys],
            [m for _, m in keys],
            [final[k][0] for k in keys],
            [final[k][1] for k in keys],
            None if now is None else float(now),
        )
        changed = [u for u in users if out[u][1]]
        await con.execute(
            "INSERT INTO users (app, user_key, inbox_ver, first_seen, last_seen)"
            " SELECT $1, *, 0, 0 FROM unnest($2::text[], $3::int8[])"
            " ON CONFLICT (app, user_key) DO UPDATE SET inbox_ver=excluded.inbox_ver",
            app,
            changed,
            [out[u][0] for u in changed],
        )
    return out


async def _keep_in_inboxes(
    con: _Conn, app: str, kept: Sequence[tuple[OutMessage, Sequence[str]]]
) -> None:
    """Record each message in its users' inboxes; a collapse key replaces their older one."""
    rows = [(u, m.message_id, m.collapse_key, float(m.fields["expires_at"]))
            for m, users in kept for u in users]  # fmt: skip
    if not rows:
        return
    keyed = [(u, k) for u, _, k, _ in rows if k is not None]
    if keyed:
        await con.execute(
            "DELETE FROM user_inbox u USING unnest($2::text[], $3::text[]) AS q(user_key, k)"
            " WHERE u.app=$1 AND u.user_key=q.user_key AND u.collapse_key=q.k",
            app,
            [u for u, _ in keyed],
            [k for _, k in keyed],
        )
    await con.execute(
        "INSERT INTO user_inbox (app, user_key, message_id, collapse_key, expires_at)"
        " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[])"
        " ON CONFLICT DO NOTHING",
        app,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )


async def _check_device(
    store: PostgresStore, con: _Conn, app: str, device: str, user_key: str
) -> None:
    """Refuse a device's write once the device is no longer registered (erased). The user's
    lock orders it with the erasure (which holds that lock); ``~`` ids (the app's backend)
    are never refused."""
    if device.startswith("~"):
        return
    await store._lock_users(con, app, [user_key])
    if (
        await con.fetchval("SELECT 1 FROM devices WHERE app=$1 AND device_id=$2", app, device)
        is None
    ):
        raise DeviceErased(
            f"device {device[:40]!r}: no longer registered (its user was erased); reconnect"
            " to register it again"
        )
