"""The store contract suite: every test here runs against every store implementation.

The tests are written once against the :class:`~tidings.server.storage.Store` protocol and use
only its public methods (no SQL, no private attributes). To run them against another
implementation, add one entry to :data:`STORE_FACTORIES`.

Messages and the decision log are written through the send path (``commit``);
:func:`deliver` and :func:`log_decisions` below are how the other files here use it, and
``test_contract_sends.py`` tests that path itself.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import pytest_asyncio

from tidings.protocol.frames import Event
from tidings.server.storage import (
    DecisionRow,
    DeviceRow,
    Outcome,
    OutMessage,
    SendRow,
    SqliteStore,
    Store,
    anonymous_key,
)

NOW = 1_700_000_000.0
"""A fixed "now" in unix seconds; tests place everything relative to it."""

PG_DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
"""The PostgreSQL database the suite runs against; ``TIDINGS_TEST_PG`` overrides it. Each test
gets a schema of its own there, dropped after it."""
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
"""Under CI a store whose server is unreachable fails its tests instead of skipping them."""

StoreMaker = Callable[[], Store]
"""Makes a new, unopened store; every store one maker makes shares the same data (as two
gateway processes on one database do)."""


@contextlib.asynccontextmanager
async def _sqlite(tmp: Path) -> AsyncIterator[StoreMaker]:
    yield lambda: SqliteStore(str(tmp / "t.db"))


_pg_unreachable: list[str] = []  # why PostgreSQL could not be used, once found out


def _unavailable(why: str) -> NoReturn:
    if IN_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Report every skip for want of PostgreSQL at one place, so that ``-ra`` folds them
    into one line (pytest reports a fixture's skip at each test's own line)."""
    report = yield
    if (
        report.skipped
        and _pg_unreachable
        and isinstance(report.longrepr, tuple)
        and _pg_unreachable[0] in str(report.longrepr[2])
    ):
        report.longrepr = (__file__, _UNAVAILABLE_LINE, report.longrepr[2])
    return report


_UNAVAILABLE_LINE = _unavailable.__code__.co_firstlineno


@contextlib.asynccontextmanager
async def _postgres(tmp: Path) -> AsyncIterator[StoreMaker]:
    if _pg_unreachable:
        _unavailable(_pg_unreachable[0])
    try:
        import asyncpg

        from tidings.server.storage import PostgresStore
    except ImportError:
        _pg_unreachable.append(
            "asyncpg is not installed: pip install -e '.[cluster]' to run the store contract "
            "suite against PostgreSQL"
        )
        _unavailable(_pg_unreachable[0])
    server = PG_DSN.rsplit("@", 1)[-1]  # host:port/database, without the password
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _pg_unreachable.append(
            f"PostgreSQL not reachable at {server} ({type(exc).__name__}): start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
            "or set TIDINGS_TEST_PG to a database URL"
        )
        _unavailable(_pg_unreachable[0])
    schema = f"t_{uuid.uuid4().hex}"
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield lambda: PostgresStore(PG_DSN, schema=schema, pool_size=5)
    finally:
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.close()


STORE_FACTORIES: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[StoreMaker]]]
STORE_FACTORIES = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}
"""Every store implementation the suite runs against: name -> an async context manager that
sets up an empty place for the data (a temporary directory, a schema of its own), yields a
:data:`StoreMaker` for it and removes it afterwards.

A store that needs a server (PostgreSQL) skips when none is reachable (fails under ``CI``).
"""

UNSHARED: frozenset[str] = frozenset()
"""Implementations whose stores cannot share data between two objects (an in-memory store);
the cross-process tests leave them out."""


@pytest_asyncio.fixture(params=list(STORE_FACTORIES))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[Store]:
    """An open, empty store of each implementation, closed after the test."""
    async with STORE_FACTORIES[request.param](tmp_path) as make:
        s = make()
        await s.open()
        try:
            yield s
        finally:
            await s.close()


def device(
    app: str,
    device_id: str,
    user: str | None,
    *,
    at: float = NOW,
    platform: str = "",
    app_version: str = "",
    locale: str = "",
    tz: str = "",
    sdk_version: str = "",
) -> DeviceRow:
    """A device row as the gateway records it at hello, first and last seen at ``at``."""
    return DeviceRow(
        app=app,
        device_id=device_id,
        user_id=user,
        platform=platform,
        app_version=app_version,
        locale=locale,
        tz=tz,
        sdk_version=sdk_version,
        first_seen=at,
        last_seen=at,
    )


async def add_devices(store: Store, app: str, devices: Sequence[tuple[str, str]]) -> None:
    """Upsert (device id, user key) pairs; a ``~device`` key makes an anonymous device."""
    for device_id, user_key in devices:
        user = None if user_key == anonymous_key(device_id) else user_key
        await store.upsert_device(device(app, device_id, user))


def event(event_id: str, name: str, at: float, **props: Any) -> Event:
    """A behaviour event as a client sends it (``at`` in unix seconds, sent in milliseconds)."""
    return Event(id=event_id, name=name, ts=int(at * 1000), props=dict(props))


def decision(
    campaign: str,
    user_key: str,
    reason: str,
    *,
    at: float = NOW,
    variant: str | None = None,
    message_id: str | None = None,
    detail: str = "",
) -> DecisionRow:
    """One decision log entry."""
    return DecisionRow(
        campaign=campaign,
        user_key=user_key,
        at=at,
        reason=reason,
        detail=detail,
        variant=variant,
        message_id=message_id,
    )


# --- writing messages, deliveries and the decision log ----------------------------------------
#
# The send path (``commit``) is the only way to store messages, deliveries, send records and
# decision log entries, and it is being reworked (sequence numbers and caps assigned inside the
# store transaction). These two functions are the only code in this folder outside the send
# path's own tests that call it: when its API changes, change them and nothing else.
#
# Written against the API in the tree at the time: ``commit(app, Outcome(...),
# [OutMessage(targets=...)])``, the store numbering deliveries and skipping unknown devices.


async def deliver(
    store: Store,
    app: str,
    message_id: str,
    devices: Sequence[tuple[str, str]],
    *,
    campaign: str | None = None,
    variant: str | None = None,
    category: str = "marketing",
    at: float = NOW,
    decisions: Sequence[DecisionRow] = (),
) -> None:
    """Store message ``message_id`` queued (not yet acknowledged) for ``devices``, as a send does.

    Args:
        store: The store under test.
        app: The app the message belongs to.
        message_id: The message id.
        devices: (device id, user key) recipients, already known to the store (upserted); each
            distinct user key gets a send record, as a real send would.
        campaign: The campaign that sent it (its sent total grows by one per user), or None.
        variant: The campaign variant, if any.
        category: The message category.
        at: When it was sent (unix seconds); it expires a day later.
        decisions: Decision log entries written with it, in the same write.
    """
    users = sorted({user for _, user in devices})
    sends = [
        SendRow(
            user_key=u,
            at=at,
            category=category,
            message_id=message_id,
            campaign=campaign,
            variant=variant,
        )
        for u in users
    ]
    message = OutMessage(
        message_id=message_id,
        fields={
            "kind": "inbox",
            "category": category,
            "priority": "normal",
            "campaign": campaign,
            "variant": variant,
            "created_at": at,
            "expires_at": at + 86_400,
        },
        wire=b"wire:" + message_id.encode(),
        targets=tuple(devices),
    )
    committed = await store.commit(
        app, Outcome(sends=sends, decisions=decisions, campaign=campaign), [message]
    )
    # A test that forgot to upsert a recipient would otherwise test less than it says.
    delivered = sorted(d for d, _ in committed.deliveries.get(message_id, ()))
    missing = {d for d, _ in devices} - set(delivered)
    assert not missing, f"not delivered to {sorted(missing)[:5]}: upsert them first"


async def log_decisions(store: Store, app: str, decisions: Sequence[DecisionRow]) -> None:
    """Write decision log entries that come with no message (users a campaign did not send to)."""
    await store.commit(app, Outcome(decisions=decisions))
