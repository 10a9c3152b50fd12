"""The store contract suite: every test here runs against every store implementation.

The tests are written once against the :class:`~tidings.server.storage.Store` protocol and use
only its public methods (no SQL, no private attributes). To run them against another
implementation, add one entry to :data:`STORE_FACTORIES`.

Messages and the decision log can only be written through the send path, which is being
reworked; :func:`deliver` and :func:`log_decisions` below are the only code in this folder that
calls it, so they are the one place to adapt when that API changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

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


STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SqliteStore(str(tmp / "t.db")),
}
"""Every store implementation the suite runs against: name -> a new, unopened, empty store.

A store that needs a server (PostgreSQL) can call ``pytest.skip`` here when none is configured.
"""


@pytest_asyncio.fixture(params=list(STORE_FACTORIES))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[Store]:
    """An open, empty store of each implementation, closed after the test."""
    s = STORE_FACTORIES[request.param](tmp_path)
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


# --- THE ONE PLACE TO ADAPT: writing messages, deliveries and the decision log ---------------
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
