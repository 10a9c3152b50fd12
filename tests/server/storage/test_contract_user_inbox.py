"""Store contract: the user's inbox, what happened after sending, writes after erasure.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tidings.protocol.frames import InboxChange
from tidings.server.errors import DeviceErased
from tidings.server.storage import Outcome, OutMessage, SendRow, Store

from .conftest import NOW, add_devices, deliver, device, event


def message(mid: str, kind: str = "inbox", *, key: str | None = None, ttl: float = 86_400,
            waiting: tuple[str, ...] = (), targets: tuple[tuple[str, str], ...] = ()
            ) -> OutMessage:  # fmt: skip
    return OutMessage(
        message_id=mid,
        fields={
            "kind": kind,
            "category": "marketing",
            "priority": "normal",
            "created_at": NOW,
            "expires_at": NOW + ttl,
        },
        wire=b"wire:" + mid.encode(),
        targets=targets,
        collapse_key=key,
        waiting=waiting,
    )


def sends(mid: str, *users: str) -> Outcome:
    return Outcome(sends=[SendRow(user_key=u, at=NOW, category="marketing", message_id=mid)
                          for u in users])  # fmt: skip


async def test_a_new_device_is_given_the_users_inbox_numbered_after_its_queue(
    store: Store,
) -> None:
    await add_devices(store, "a", [("phone", "u1")])
    await deliver(store, "a", "m1", [("phone", "u1")])
    await store.commit("a", sends("m2", "u1"), [message("m2", "both", targets=(("phone", "u1"),))])
    await store.commit(
        "a", sends("m3", "u1"), [message("m3", "banner", targets=(("phone", "u1"),))]
    )
    await store.inbox_update("a", "u1", [InboxChange(id="m1", state="deleted")], NOW)
    await add_devices(store, "a", [("tablet", "u1")])
    await deliver(store, "a", "m4", [("tablet", "u1")])  # the tablet's seq 1

    assert await store.fill_inbox("a", "tablet", "u1", 0, NOW + 1) == 1
    pending = await store.pending("a", "tablet", 0, NOW + 1)
    assert [(p.seq, p.message_id, p.inbox_only) for p in pending] == [
        (1, "m4", False), (2, "m2", True)
    ]  # fmt: skip
    assert await store.fill_inbox("a", "tablet", "u1", 0, NOW + 1) == 0, "held now: queued"


async def test_a_device_that_lost_what_it_acknowledged_gets_it_again(store: Store) -> None:
    await add_devices(store, "a", [("phone", "u1")])
    await deliver(store, "a", "m1", [("phone", "u1")])
    await store.ack("a", "phone", 1, NOW + 1)
    assert await store.fill_inbox("a", "phone", "u1", 1, NOW + 2) == 0  # it kept seq 1
    assert await store.fill_inbox("a", "phone", "u1", 0, NOW + 2) == 1  # reinstalled
    assert [p.seq for p in await store.pending("a", "phone", 0, NOW + 2)] == [2]


async def test_a_message_waits_for_a_user_with_no_device_until_it_expires(store: Store) -> None:
    committed = await store.commit(
        "a", sends("w1", "u9"), [message("w1", waiting=("u9",)), message("w2", ttl=10)]
    )
    assert committed.deliveries == {"w1": (), "w2": ()}
    await store.commit("a", sends("w3", "u9"), [message("w3", ttl=10, waiting=("u9",))])
    await add_devices(store, "a", [("first", "u9")])
    assert await store.fill_inbox("a", "first", "u9", 0, NOW + 20) == 1
    assert [p.message_id for p in await store.pending("a", "first", 0, NOW + 20)] == ["w1"]


async def test_a_newer_message_with_the_same_collapse_key_replaces_the_older_in_the_inbox(
    store: Store,
) -> None:
    for mid in ("k1", "k2"):
        await store.commit("a", sends(mid, "u9"), [message(mid, key="promo", waiting=("u9",))])
    await add_devices(store, "a", [("first", "u9")])
    await store.fill_inbox("a", "first", "u9", 0, NOW + 1)
    assert [p.message_id for p in await store.pending("a", "first", 0, NOW + 1)] == ["k2"]


async def test_what_happened_after_sending_is_listed_with_times(store: Store) -> None:
    await add_devices(store, "a", [("phone", "u1"), ("other", "u2")])
    await deliver(store, "a", "m1", [("phone", "u1"), ("other", "u2")])
    await store.ack_many([("a", "phone", 1), ("a", "other", 1)], NOW + 1)
    rows = [("a", "phone", "m1", "displayed", None, NOW + 2),
            ("a", "phone", "m1", "clicked", "buy", NOW + 3),
            ("a", "other", "m1", "expired", None, NOW + 4)]  # fmt: skip
    assert await store.add_receipts(rows) == [True, True, True]
    await store.inbox_update("a", "u1", [InboxChange(id="m1", state="read")], NOW + 5)
    fates = await store.fates("a", "u1", ["m1"])
    assert [(f.what, f.at, f.device, f.action) for f in fates] == [
        ("delivered", NOW + 1, "phone", None),
        ("displayed", NOW + 2, "phone", None),
        ("clicked", NOW + 3, "phone", "buy"),
        ("read", NOW + 5, None, None),
    ]


async def test_a_receipt_dates_the_delivery_when_it_overtakes_or_precedes_the_ack(
    store: Store,
) -> None:
    # Displayed at +2 on the device; the ack, stamped when the gateway stored it, says +5. The
    # message reached the device by the time it was shown: delivered never comes after it.
    await add_devices(store, "a", [("phone", "u1"), ("tablet", "u1")])
    await deliver(store, "a", "m1", [("phone", "u1"), ("tablet", "u1")])
    await store.ack_many([("a", "phone", 1)], NOW + 5)
    await store.add_receipts([("a", "phone", "m1", "displayed", None, NOW + 2),
                              ("a", "tablet", "m1", "displayed", None, NOW + 3)])  # fmt: skip
    await store.ack_many([("a", "tablet", 1)], NOW + 6)  # the ack after the receipt
    fates = [(f.what, f.at, f.device) for f in await store.fates("a", "u1", ["m1"])]
    assert fates == [
        ("delivered", NOW + 2, "phone"),
        ("displayed", NOW + 2, "phone"),
        ("delivered", NOW + 3, "tablet"),
        ("displayed", NOW + 3, "tablet"),
    ]


async def test_a_device_write_after_its_user_was_erased_is_refused(store: Store) -> None:
    await add_devices(store, "a", [("phone", "u1")])
    await store.erase_user("a", "u1")
    with pytest.raises(DeviceErased):
        await store.insert_events("a", "phone", "u1", [event("e1", "open", NOW)], NOW,
                                  registered=True)  # fmt: skip
    with pytest.raises(DeviceErased):
        await store.merge_attrs("a", "u1", {"plan": "pro"}, NOW, device="phone")
    with pytest.raises(DeviceErased):
        await store.set_consent("a", "u1", {"marketing": False}, NOW, device="phone")
    assert await store.user("a", "u1") is None
    assert await store.count_events("a") == 0
    await store.upsert_device(device("a", "phone", "u1"))  # a new hello registers it again
    await store.merge_attrs("a", "u1", {"plan": "pro"}, NOW, device="phone")
    user = await store.user("a", "u1")
    assert user is not None and user.attrs == {"plan": "pro"}


async def test_an_erasure_and_a_devices_write_at_once_leave_nothing_behind(store: Store) -> None:
    await add_devices(store, "a", [("phone", "u1")])

    async def write(n: int) -> None:
        with contextlib.suppress(DeviceErased):
            await store.insert_events("a", "phone", "u1", [event(f"e{n}", "open", NOW)], NOW,
                                      registered=True)  # fmt: skip

    await asyncio.gather(*(write(n) for n in range(10)), store.erase_user("a", "u1"),
                         *(write(n) for n in range(10, 20)))  # fmt: skip
    assert await store.user("a", "u1") is None
    assert await store.count_events("a") == 0


async def test_the_export_lists_the_users_inbox_with_its_state(store: Store) -> None:
    await store.commit("a", sends("x1", "u9"), [message("x1", waiting=("u9",))])
    await store.commit("a", sends("x2", "u9"), [message("x2", waiting=("u9",))])
    await store.commit("a", sends("y1", "u8"), [message("y1", waiting=("u8",))])  # another user
    await store.inbox_update("a", "u9", [InboxChange(id="x2", state="read")], NOW + 5)
    export = await store.export_user("a", "u9")
    assert export["inbox"] == [
        {"id": "x1", "state": "unread", "at": None, "kept_until": NOW + 86_400},
        {"id": "x2", "state": "read", "at": NOW + 5, "kept_until": NOW + 86_400},
    ]
    await store.erase_user("a", "u9")
    assert (await store.export_user("a", "u9"))["inbox"] == []


async def test_a_hello_is_owed_its_queue_the_inbox_it_lacks_and_the_changes_it_missed(
    store: Store,
) -> None:
    await add_devices(store, "a", [("phone", "u1")])
    for mid in ("m1", "m2"):
        await store.commit("a", sends(mid, "u1"),
                           [message(mid, "both", targets=(("phone", "u1"),))])  # fmt: skip
    ver, _ = await store.inbox_update("a", "u1", [InboxChange(id="m1", state="read")], NOW)
    await add_devices(store, "a", [("tablet", "u1")])
    await deliver(store, "a", "m3", [("tablet", "u1")])  # the tablet's own seq 1

    owed = await store.resume_state("a", "tablet", "u1", 0, 0, NOW + 1)
    assert [(p.seq, p.message_id, p.inbox_only) for p in owed.pending] == [
        (1, "m3", False), (2, "m1", True), (3, "m2", True)
    ]  # fmt: skip
    assert owed.inbox_ver == ver and [(c.id, c.state) for c in owed.changes] == [("m1", "read")]
    again = await store.resume_state("a", "tablet", "u1", 0, ver, NOW + 1)  # a reconnect
    assert [p.seq for p in again.pending] == [1, 2, 3] and again.changes == []
    # Acked up to 3: nothing is owed, and nothing of the inbox is queued twice.
    await store.ack("a", "tablet", 3, NOW + 2)
    done = await store.resume_state("a", "tablet", "u1", 3, ver, NOW + 2)
    assert (done.pending, done.inbox_ver, done.changes) == ([], ver, [])
    nobody = await store.resume_state("a", "ghost", "~ghost", 0, 0, NOW)
    assert (nobody.pending, nobody.inbox_ver, nobody.changes) == ([], 0, [])
