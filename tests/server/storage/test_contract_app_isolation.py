"""Store contract: apps are isolated; nothing written for app "a" is visible from app "b".

App "a" gets one of everything under ids that app "b" uses too, so a read or write that forgot
its app would find or touch the other app's rows.
"""

from __future__ import annotations

from tidings.protocol.frames import InboxChange
from tidings.server.storage import Store

from .conftest import NOW, decision, deliver, device, event


async def _fill_app_a(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1", platform="ios"))
    await store.upsert_device(device("a", "d2", None))
    await store.merge_attrs("a", "u1", {"plan": "pro"}, now=NOW)
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "purchase", NOW - 5, amount=9)], now=NOW
    )
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", now=NOW)
    await deliver(
        store,
        "a",
        "m1",
        [("d1", "u1"), ("d2", "~d2")],
        campaign="c1",
        variant="v1",
        category="news",  # u1 opted out of marketing (the commit checks stored consent)
        decisions=[decision("c1", "u1", "sent", variant="v1", message_id="m1")],
    )
    await store.add_receipts([("a", "d1", "m1", "displayed", None, NOW)])
    await store.inbox_update("a", "u1", [InboxChange(id="m1", state="read")])
    await store.save_tag_rule("a", "vip", {"name": "vip"})


async def test_another_app_sees_no_devices(store: Store) -> None:
    await _fill_app_a(store)
    assert await store.devices_of_users("b", ["u1"]) == []
    assert await store.known_devices("b", ["d1", "d2"]) == []
    assert await store.devices_of_keys("b", ["u1", "~d2"]) == []


async def test_another_app_sees_no_profiles(store: Store) -> None:
    await _fill_app_a(store)
    assert await store.user("b", "u1") is None
    assert await store.user("b", "~d2") is None
    assert await store.profile_rows("b") == []
    assert await store.opted_out("b", ["u1"]) == set()


async def test_another_app_sees_no_events(store: Store) -> None:
    await _fill_app_a(store)
    assert await store.events_since("b", 0) == []
    assert await store.events_since("b", 0, user_key="u1", name="purchase") == []
    assert await store.count_events("b") == 0


async def test_another_app_sees_no_inbox(store: Store) -> None:
    await _fill_app_a(store)
    assert await store.inbox_since("b", "u1", 0) == (0, [])


async def test_another_app_sees_no_campaigns_decisions_or_funnel(store: Store) -> None:
    await _fill_app_a(store)
    assert await store.campaigns("b") == []
    assert await store.decisions("b", "c1") == []
    assert await store.funnel_counts("b", "c1") == {}


async def test_another_app_exports_nothing(store: Store) -> None:
    await _fill_app_a(store)
    export = await store.export_user("b", "u1")
    assert export == {
        "user": None, "devices": [], "events": [], "messages": [], "decisions": [], "inbox": []
    }  # fmt: skip


async def test_another_app_cannot_send_receipts_for_or_revoke_a_message(
    store: Store,
) -> None:
    await _fill_app_a(store)
    assert await store.add_receipts([("b", "d1", "m1", "clicked", None, NOW)]) == [False]
    assert await store.revoke("b", "m1") is None
    assert await store.add_receipts([("a", "d1", "m1", "clicked", None, NOW)]) == [True]
    assert await store.inbox_since("a", "u1", 0) == (1, [InboxChange(id="m1", state="read", ver=1)])


async def test_writes_to_another_app_leave_the_first_untouched(store: Store) -> None:
    await _fill_app_a(store)
    before = {
        "u1": await store.export_user("a", "u1"),
        "~d2": await store.export_user("a", "~d2"),
        "profiles": await store.profile_rows("a"),
        "campaigns": await store.campaigns("a"),
        "funnel": await store.funnel_counts("a", "c1"),
        "inbox": await store.inbox_since("a", "u1", 0),
    }
    await store.upsert_device(device("b", "d1", "u9", platform="android"))
    await store.merge_attrs("b", "u1", {"plan": None}, now=NOW + 1)
    await store.set_consent("b", "u1", {"marketing": True}, now=NOW + 1)
    await store.inbox_update("b", "u1", [InboxChange(id="m1", state="deleted")])
    await store.set_campaign_status("b", "c1", "cancelled", now=NOW + 1)
    await store.save_tag_rule("b", "vip", None)
    await store.delete_campaign("b", "c1")
    await store.erase_user("b", "u1")
    await store.erase_user("b", "~d2")
    after = {
        "u1": await store.export_user("a", "u1"),
        "~d2": await store.export_user("a", "~d2"),
        "profiles": await store.profile_rows("a"),
        "campaigns": await store.campaigns("a"),
        "funnel": await store.funnel_counts("a", "c1"),
        "inbox": await store.inbox_since("a", "u1", 0),
    }
    assert after == before
    assert await store.opted_out("a", ["u1"]) == {"u1"}
    assert await store.tag_rules() == [("a", {"name": "vip"})]
    assert await store.known_devices("a", ["d1"]) == [("d1", "u1")]
