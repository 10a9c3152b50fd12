"""Store contract: inbox state versions, receipts checked against deliveries, and revocation."""

from __future__ import annotations

from tidings.protocol.frames import InboxChange, InboxStateName
from tidings.server.storage import Store

from .conftest import NOW, add_devices, deliver, device


def change(message_id: str, state: InboxStateName, ver: int = 0) -> InboxChange:
    """An inbox change as a client sends it (``ver`` 0), or as the store returns it."""
    return InboxChange(id=message_id, state=state, ver=ver)


# --- inbox_update and inbox_since --------------------------------------------------------------


async def test_an_empty_inbox_is_at_version_zero(store: Store) -> None:
    assert await store.inbox_since("a", "u1", 0) == (0, [])


async def test_each_inbox_change_gets_the_next_version(store: Store) -> None:
    ver, applied = await store.inbox_update("a", "u1", [change("m1", "read"), change("m2", "read")])
    assert (ver, applied) == (2, [change("m1", "read", 1), change("m2", "read", 2)])
    ver, applied = await store.inbox_update("a", "u1", [change("m3", "unread")])
    assert (ver, applied) == (3, [change("m3", "unread", 3)])


async def test_the_inbox_version_is_kept_on_the_profile(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.inbox_update("a", "u1", [change("m1", "read"), change("m2", "read")])
    user = await store.user("a", "u1")
    assert user is not None and user.inbox_ver == 2


async def test_inbox_since_returns_the_changes_after_a_version_in_order(
    store: Store,
) -> None:
    await store.inbox_update("a", "u1", [change("m1", "read"), change("m2", "read")])
    await store.inbox_update("a", "u1", [change("m3", "deleted")])
    assert await store.inbox_since("a", "u1", 0) == (
        3,
        [change("m1", "read", 1), change("m2", "read", 2), change("m3", "deleted", 3)],
    )
    assert await store.inbox_since("a", "u1", 2) == (3, [change("m3", "deleted", 3)])
    assert await store.inbox_since("a", "u1", 3) == (3, [])


async def test_inbox_since_returns_only_the_latest_state_of_each_message(
    store: Store,
) -> None:
    await store.inbox_update("a", "u1", [change("m1", "read"), change("m2", "read")])
    await store.inbox_update("a", "u1", [change("m1", "unread")])
    assert await store.inbox_since("a", "u1", 0) == (
        3,
        [change("m2", "read", 2), change("m1", "unread", 3)],
    )


async def test_an_unchanged_inbox_state_makes_no_new_version(store: Store) -> None:
    await store.inbox_update("a", "u1", [change("m1", "read")])
    assert await store.inbox_update("a", "u1", [change("m1", "read")]) == (1, [])
    assert await store.inbox_since("a", "u1", 1) == (1, [])


async def test_deleted_is_final(store: Store) -> None:
    await store.inbox_update("a", "u1", [change("m1", "deleted")])
    ver, applied = await store.inbox_update(
        "a", "u1", [change("m1", "unread"), change("m1", "read"), change("m2", "read")]
    )
    assert (ver, applied) == (2, [change("m2", "read", 2)])
    assert (await store.inbox_since("a", "u1", 0))[1][0] == change("m1", "deleted", 1)


async def test_changes_to_one_message_in_one_batch_each_take_effect(store: Store) -> None:
    ver, applied = await store.inbox_update(
        "a", "u1", [change("m1", "read"), change("m1", "read"), change("m1", "unread")]
    )
    assert (ver, applied) == (2, [change("m1", "read", 1), change("m1", "unread", 2)])


async def test_inbox_versions_are_counted_per_user(store: Store) -> None:
    await store.inbox_update("a", "u1", [change("m1", "read"), change("m2", "read")])
    ver, applied = await store.inbox_update("a", "u2", [change("m1", "read")])
    assert (ver, applied) == (1, [change("m1", "read", 1)])
    assert await store.inbox_since("a", "u1", 0) == (
        2,
        [change("m1", "read", 1), change("m2", "read", 2)],
    )


# --- add_receipts ------------------------------------------------------------------------------


async def test_a_receipt_for_a_delivered_message_is_accepted(store: Store) -> None:
    await add_devices(store, "a", [("d1", "u1")])
    await deliver(store, "a", "m1", [("d1", "u1")])
    receipts = [
        ("a", "d1", "m1", "displayed", None, NOW),
        ("a", "d1", "m1", "clicked", "open", NOW + 1),
        ("a", "d1", "m1", "dismissed", None, NOW + 2),
    ]
    assert await store.add_receipts(receipts) == [True, True, True]


async def test_a_receipt_for_a_message_never_delivered_to_that_device_is_refused(
    store: Store,
) -> None:
    await add_devices(store, "a", [("d1", "u1")])
    await deliver(store, "a", "m1", [("d1", "u1")])
    await store.upsert_device(device("a", "d2", "u1"))
    receipts = [
        ("a", "d2", "m1", "displayed", None, NOW),  # the user's other device did not get it
        ("a", "d1", "m-unknown", "displayed", None, NOW),
    ]
    assert await store.add_receipts(receipts) == [False, False]


async def test_a_refused_receipt_is_not_stored(store: Store) -> None:
    await add_devices(store, "a", [("d1", "u1")])
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    assert await store.add_receipts([("a", "d2", "m1", "displayed", None, NOW)]) == [False]
    assert "displayed" not in (await store.funnel_counts("a", "c1")).get(None, {})
    assert await store.add_receipts([("a", "d1", "m1", "displayed", None, NOW)]) == [True]
    assert (await store.funnel_counts("a", "c1"))[None]["displayed"] == 1


async def test_receipts_are_answered_in_order_of_a_mixed_batch(store: Store) -> None:
    await add_devices(store, "a", [("d1", "u1"), ("d2", "u2")])
    await deliver(store, "a", "m1", [("d1", "u1"), ("d2", "u2")])
    receipts = [
        ("a", "d1", "m1", "displayed", None, NOW),
        ("a", "d3", "m1", "displayed", None, NOW),
        ("a", "d2", "m1", "clicked", "buy", NOW),
        ("a", "d2", "m2", "clicked", "buy", NOW),
    ]
    assert await store.add_receipts(receipts) == [True, False, True, False]


async def test_a_receipt_sent_twice_is_accepted_twice(store: Store) -> None:
    await add_devices(store, "a", [("d1", "u1")])
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    receipt = ("a", "d1", "m1", "displayed", None, NOW)
    assert await store.add_receipts([receipt]) == [True]
    assert await store.add_receipts([receipt, receipt]) == [True, True]
    assert (await store.funnel_counts("a", "c1"))[None]["displayed"] == 1


async def test_a_large_batch_of_receipts_is_answered_in_order(store: Store) -> None:
    n = 700
    everyone = [(f"d{i}", f"u{i}") for i in range(n)]
    await add_devices(store, "a", everyone)
    await deliver(store, "a", "m1", everyone[::3])
    receipts = [("a", f"d{i}", "m1", "displayed", None, NOW) for i in range(n)]
    assert await store.add_receipts(receipts) == [i % 3 == 0 for i in range(n)]


async def test_an_empty_batch_of_receipts_is_answered_with_nothing(store: Store) -> None:
    assert await store.add_receipts([]) == []


async def test_a_revoked_message_still_takes_receipts_from_devices_that_got_it(
    store: Store,
) -> None:
    await add_devices(store, "a", [("d1", "u1")])
    await deliver(store, "a", "m1", [("d1", "u1")])
    await store.revoke("a", "m1")
    assert await store.add_receipts([("a", "d1", "m1", "dismissed", None, NOW)]) == [True]


# --- revoke ------------------------------------------------------------------------------------


async def test_revoking_an_unknown_message_returns_none(store: Store) -> None:
    assert await store.revoke("a", "never-sent") is None


async def test_revoking_a_message_returns_its_recipients(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", "u1"))
    await store.upsert_device(device("a", "d3", None))
    await deliver(store, "a", "m1", [("d1", "u1"), ("d2", "u1"), ("d3", "~d3")])
    recipients = await store.revoke("a", "m1")
    assert recipients is not None
    assert sorted(recipients) == [("d1", "u1"), ("d2", "u1"), ("d3", "~d3")]


async def test_revoking_a_message_deletes_it_from_each_recipients_inbox(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", "u2"))
    await store.inbox_update("a", "u1", [change("m0", "read"), change("m1", "read")])
    await deliver(store, "a", "m1", [("d1", "u1"), ("d2", "u2")])
    await store.revoke("a", "m1")
    assert await store.inbox_since("a", "u1", 2) == (3, [change("m1", "deleted", 3)])
    assert await store.inbox_since("a", "u2", 0) == (1, [change("m1", "deleted", 1)])


async def test_a_revoked_message_cannot_come_back_to_the_inbox(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await deliver(store, "a", "m1", [("d1", "u1")])
    await store.revoke("a", "m1")
    assert await store.inbox_update("a", "u1", [change("m1", "unread")]) == (1, [])


async def test_a_message_with_no_recipients_can_be_revoked(store: Store) -> None:
    await deliver(store, "a", "m1", [])
    assert await store.revoke("a", "m1") == []
