"""Store contract: profiles (attributes, consent, targeting rows) and privacy (erase, export)."""

from __future__ import annotations

import pytest

from tidings.protocol.frames import InboxChange
from tidings.server.storage import Store

from .conftest import NOW, decision, deliver, device, event, log_decisions

# --- user and merge_attrs ----------------------------------------------------------------------


async def test_an_unknown_user_has_no_profile(store: Store) -> None:
    assert await store.user("a", "nobody") is None
    assert await store.user("a", "~nodevice") is None


async def test_merging_attributes_creates_the_profile(store: Store) -> None:
    await store.merge_attrs("a", "u1", {"plan": "pro", "age": 31}, now=NOW)
    user = await store.user("a", "u1")
    assert user is not None
    assert (user.app, user.user_key) == ("a", "u1")
    assert user.attrs == {"plan": "pro", "age": 31}
    assert (user.first_seen, user.last_seen) == (NOW, NOW)


async def test_merging_attributes_keeps_the_others_and_overwrites_the_given_ones(
    store: Store,
) -> None:
    await store.merge_attrs("a", "u1", {"plan": "free", "age": 31}, now=NOW)
    await store.merge_attrs("a", "u1", {"plan": "pro", "tags": ["x", "y"]}, now=NOW + 1)
    user = await store.user("a", "u1")
    assert user is not None
    assert user.attrs == {"plan": "pro", "age": 31, "tags": ["x", "y"]}


async def test_a_none_attribute_value_removes_the_attribute(store: Store) -> None:
    await store.merge_attrs("a", "u1", {"plan": "pro", "age": 31}, now=NOW)
    await store.merge_attrs("a", "u1", {"age": None, "never_set": None}, now=NOW + 1)
    user = await store.user("a", "u1")
    assert user is not None and user.attrs == {"plan": "pro"}


async def test_merging_attributes_keeps_the_profile_first_seen(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 500))
    await store.merge_attrs("a", "u1", {"plan": "pro"}, now=NOW)
    user = await store.user("a", "u1")
    assert user is not None and user.first_seen == NOW - 500


# --- set_consent and opted_out -----------------------------------------------------------------


async def test_consent_categories_are_merged(store: Store) -> None:
    await store.set_consent("a", "u1", {"marketing": True, "product": True}, now=NOW)
    await store.set_consent("a", "u1", {"product": False}, now=NOW + 1)
    user = await store.user("a", "u1")
    assert user is not None
    assert user.consent == {"marketing": True, "product": False}


async def test_withdrawing_marketing_consent_opts_the_user_out(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", "u2"))
    assert await store.opted_out("a", ["u1", "u2"]) == set()
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    assert await store.opted_out("a", ["u1", "u2"]) == {"u1"}


async def test_opting_out_of_an_apps_own_category_is_found_by_category(store: Store) -> None:
    await store.set_consent("a", "u1", {"news": False, "marketing": True}, now=NOW)
    await store.set_consent("a", "u2", {"news": True}, now=NOW)
    await store.set_consent("b", "u3", {"news": False}, now=NOW)  # another app
    users = ["u1", "u2", "u3", "nobody"]
    assert await store.opted_out("a", users, "news") == {"u1"}
    assert await store.opted_out("a", users, "promotions") == set()  # opt-out needs a "no"
    assert await store.opted_out("a", users) == set()  # marketing still allowed


async def test_giving_marketing_consent_again_opts_the_user_back_in(store: Store) -> None:
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    await store.set_consent("a", "u1", {"marketing": True}, now=NOW + 1)
    assert await store.opted_out("a", ["u1"]) == set()


async def test_consent_for_another_category_keeps_a_marketing_opt_out(
    store: Store,
) -> None:
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    await store.set_consent("a", "u1", {"product": True}, now=NOW + 1)
    assert await store.opted_out("a", ["u1"]) == {"u1"}


async def test_opted_out_answers_only_for_the_users_asked_about(store: Store) -> None:
    for user in ("u1", "u2", "~d3"):
        await store.set_consent("a", user, {"marketing": False}, now=NOW)
    assert await store.opted_out("a", ["u2", "~d3", "unknown"]) == {"u2", "~d3"}
    assert await store.opted_out("a", []) == set()


async def test_setting_consent_creates_the_profile(store: Store) -> None:
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    user = await store.user("a", "u1")
    assert user is not None
    assert user.consent == {"marketing": False}
    assert user.first_seen == NOW


# --- profile_rows ------------------------------------------------------------------------------


async def test_profile_rows_list_every_profile_with_attributes_and_consent(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 100))
    await store.upsert_device(device("a", "d2", None, at=NOW - 50))
    await store.merge_attrs("a", "u1", {"plan": "pro"}, now=NOW)
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    rows = {p.user_key: p for p in await store.profile_rows("a")}
    assert set(rows) == {"u1", "~d2"}
    assert rows["u1"].attrs == {"plan": "pro"}
    assert rows["u1"].consent == {"marketing": False}
    assert rows["u1"].first_seen == NOW - 100
    assert (rows["~d2"].attrs, rows["~d2"].consent, rows["~d2"].first_seen) == ({}, {}, NOW - 50)


async def test_profile_rows_total_the_amounts_of_purchase_events(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.insert_events(
        "a",
        "d1",
        "u1",
        [
            event("e1", "purchase", NOW - 30, amount=10.5),
            event("e2", "purchase", NOW - 20, amount=4),
            event("e3", "purchase", NOW - 25),  # no amount: counted, adds nothing
            event("e4", "refund", NOW - 10, amount=100),  # not a purchase
        ],
        now=NOW,
    )
    (row,) = await store.profile_rows("a")
    assert row.purchase_count == 3
    assert row.purchase_total == pytest.approx(14.5)
    assert row.last_purchase == NOW - 20


async def test_profile_rows_read_purchase_amounts_of_any_json_type(store: Store) -> None:
    amounts = [3, "2.5 EUR", True, "n/a", [1], {"x": 1}, None, "\x00"]
    await store.insert_events(
        "a",
        "d1",
        "u1",
        [event(f"e{i}", "purchase", NOW - i, amount=a) for i, a in enumerate(amounts)]
        + [event("e-nul", "purchase", NOW, amount=1, note="a \x00 in any text")],
        now=NOW,
    )
    (row,) = await store.profile_rows("a")
    assert (row.purchase_count, row.purchase_total) == (9, pytest.approx(7.5))


async def test_profile_rows_of_a_user_who_never_bought_have_no_purchases(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW - 5)], now=NOW)
    (row,) = await store.profile_rows("a")
    assert (row.purchase_count, row.purchase_total, row.last_purchase) == (0, 0.0, None)


async def test_profile_rows_count_each_users_purchases_apart(store: Store) -> None:
    await store.insert_events("a", "d1", "u1", [event("e1", "purchase", NOW, amount=1)], now=NOW)
    await store.insert_events(
        "a",
        "d2",
        "u2",
        [event("e1", "purchase", NOW, amount=2), event("e2", "purchase", NOW, amount=3)],
        now=NOW,
    )
    rows = {p.user_key: (p.purchase_count, p.purchase_total) for p in await store.profile_rows("a")}
    assert rows == {"u1": (1, 1.0), "u2": (2, 5.0)}


async def test_profile_rows_carry_the_facts_of_the_users_most_recently_seen_device(
    store: Store,
) -> None:
    android = {"platform": "android", "app_version": "3.0", "locale": "fr-FR", "tz": "Europe/Paris"}
    ios = {"platform": "ios", "app_version": "2.0", "locale": "en-US", "tz": "America/New_York"}
    await store.upsert_device(device("a", "d2", "u1", at=NOW, **android))
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 100, **ios))
    (row,) = await store.profile_rows("a")
    facts = {
        "platform": row.platform,
        "app_version": row.app_version,
        "locale": row.locale,
        "tz": row.tz,
    }
    assert facts == android


async def test_an_anonymous_profile_row_carries_its_devices_facts(store: Store) -> None:
    await store.upsert_device(device("a", "d1", None, platform="web", tz="UTC"))
    (row,) = await store.profile_rows("a")
    assert (row.user_key, row.platform, row.tz) == ("~d1", "web", "UTC")


async def test_a_profile_without_devices_has_blank_device_facts(store: Store) -> None:
    await store.merge_attrs("a", "u1", {"plan": "pro"}, now=NOW)
    (row,) = await store.profile_rows("a")
    assert (row.platform, row.app_version, row.locale, row.tz) == ("", "", "", "")


# --- erase_user --------------------------------------------------------------------------------


async def _two_users(store: Store) -> None:
    """u1 with two devices and everything a profile can have; u2 with one device."""
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", "u1"))
    await store.upsert_device(device("a", "d3", "u2"))
    await store.merge_attrs("a", "u1", {"plan": "pro"}, now=NOW)
    await store.set_consent("a", "u1", {"marketing": False}, now=NOW)
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "purchase", NOW - 9, amount=3)], now=NOW
    )
    await store.insert_events(
        "a", "d3", "u2", [event("e1", "purchase", NOW - 8, amount=4)], now=NOW
    )
    await deliver(
        store, "a", "direct", [("d1", "u1"), ("d2", "u1"), ("d3", "u2")], category="product"
    )
    await deliver(
        store,
        "a",
        "c1-u1",
        [("d1", "u1"), ("d2", "u1")],
        campaign="c1",
        category="product",  # u1 opted out of marketing: the commit would refuse it
        decisions=[decision("c1", "u1", "sent", message_id="c1-u1")],
    )
    await deliver(
        store,
        "a",
        "c1-u2",
        [("d3", "u2")],
        campaign="c1",
        decisions=[decision("c1", "u2", "sent", message_id="c1-u2")],
    )
    await store.inbox_update("a", "u1", [InboxChange(id="direct", state="read")])
    await store.inbox_update("a", "u2", [InboxChange(id="direct", state="read")])


async def test_erasing_a_user_returns_their_devices_and_undelivered_messages(
    store: Store,
) -> None:
    await _two_users(store)
    devices, pending = await store.erase_user("a", "u1")
    assert sorted(devices) == ["d1", "d2"]
    assert pending == ["c1-u1", "direct"]


async def test_erasing_a_user_removes_everything_about_them(store: Store) -> None:
    await _two_users(store)
    await store.erase_user("a", "u1")
    assert await store.user("a", "u1") is None
    assert await store.events_since("a", 0, user_key="u1") == []
    assert await store.devices_of_users("a", ["u1"]) == []
    assert await store.known_devices("a", ["d1", "d2"]) == []
    assert await store.inbox_since("a", "u1", 0) == (0, [])
    assert await store.decisions("a", "c1", "u1") == []
    assert await store.opted_out("a", ["u1"]) == set()
    assert [p.user_key for p in await store.profile_rows("a")] == ["u2"]
    export = await store.export_user("a", "u1")
    assert export == {
        "user": None, "devices": [], "events": [], "messages": [], "decisions": [], "inbox": []
    }  # fmt: skip


async def test_erasing_a_user_keeps_everything_about_other_users(store: Store) -> None:
    await _two_users(store)
    before = await store.export_user("a", "u2")
    await store.erase_user("a", "u1")
    assert await store.export_user("a", "u2") == before
    assert await store.inbox_since("a", "u2", 0) == (
        1,
        [InboxChange(id="direct", state="read", ver=1)],
    )
    assert await store.add_receipts([("a", "d3", "direct", "displayed", None, NOW)]) == [True]
    assert [e.user_key for e in await store.events_since("a", 0)] == ["u2"]


async def test_an_erased_users_devices_can_no_longer_send_receipts(store: Store) -> None:
    await _two_users(store)
    await store.erase_user("a", "u1")
    receipts = [
        ("a", "d1", "direct", "displayed", None, NOW),
        ("a", "d2", "c1-u1", "clicked", "open", NOW),
    ]
    assert await store.add_receipts(receipts) == [False, False]


async def test_erasing_a_user_deletes_their_campaign_messages_but_not_shared_ones(
    store: Store,
) -> None:
    await _two_users(store)
    await store.erase_user("a", "u1")
    assert await store.revoke("a", "c1-u1") is None
    assert await store.revoke("a", "direct") == [("d3", "u2")]
    assert await store.revoke("a", "c1-u2") == [("d3", "u2")]


async def test_erasing_an_anonymous_profile_removes_its_device_and_events(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", None))
    await store.upsert_device(device("a", "d2", None))
    await store.insert_events("a", "d1", "~d1", [event("e1", "open", NOW)], now=NOW)
    await store.insert_events("a", "d2", "~d2", [event("e1", "open", NOW)], now=NOW)
    await deliver(store, "a", "m1", [("d1", "~d1")])
    devices, pending = await store.erase_user("a", "~d1")
    assert (devices, pending) == (["d1"], ["m1"])
    assert await store.user("a", "~d1") is None
    assert await store.known_devices("a", ["d1", "d2"]) == [("d2", "~d2")]
    assert [e.user_key for e in await store.events_since("a", 0)] == ["~d2"]


async def test_erasing_an_unknown_user_changes_nothing(store: Store) -> None:
    await _two_users(store)
    before = (await store.export_user("a", "u1"), await store.export_user("a", "u2"))
    assert await store.erase_user("a", "nobody") == ([], [])
    assert (await store.export_user("a", "u1"), await store.export_user("a", "u2")) == before


async def test_erasing_a_user_keeps_another_users_events_from_a_shared_device(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 100))
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "purchase", NOW - 90, amount=5)], now=NOW - 90
    )
    await store.upsert_device(device("a", "d1", "u2", at=NOW))  # u1 logs out, u2 logs in
    await store.insert_events("a", "d1", "u2", [event("e2", "open", NOW)], now=NOW)
    await store.erase_user("a", "u2")
    assert [e.name for e in await store.events_since("a", 0, user_key="u1")] == ["purchase"]


# --- export_user -------------------------------------------------------------------------------


async def test_exporting_a_user_returns_everything_stored_about_them(store: Store) -> None:
    await _two_users(store)
    await log_decisions(
        store, "a", [decision("c2", "u1", "capped_tier", at=NOW + 5, detail="3/day")]
    )
    export = await store.export_user("a", "u1")
    assert export["user"] == {
        "attrs": {"plan": "pro"},
        "consent": {"marketing": False},
        "first_seen": NOW - 9,  # the purchase happened before the devices said hello
        "last_seen": NOW,
    }
    assert sorted(export["devices"]) == ["d1", "d2"]
    assert export["events"] == [{"name": "purchase", "props": {"amount": 3}, "ts": NOW - 9}]
    messages = {m["id"]: m for m in export["messages"]}
    assert set(messages) == {"direct", "c1-u1"}
    assert (messages["direct"]["category"], messages["direct"]["campaign"]) == ("product", None)
    assert (messages["c1-u1"]["campaign"], messages["c1-u1"]["at"]) == ("c1", NOW)
    assert all(isinstance(m["wire"], bytes) and m["wire"] for m in messages.values())
    assert [(d["campaign"], d["reason"]) for d in export["decisions"]] == [
        ("c1", "sent"),
        ("c2", "capped_tier"),
    ]
    assert export["decisions"][1]["detail"] == "3/day"


async def test_exporting_an_anonymous_profile_finds_its_device(store: Store) -> None:
    await store.upsert_device(device("a", "d1", None))
    await store.insert_events("a", "d1", "~d1", [event("e1", "open", NOW)], now=NOW)
    export = await store.export_user("a", "~d1")
    assert export["devices"] == ["d1"]
    assert [e["name"] for e in export["events"]] == ["open"]
    assert export["user"] is not None


async def test_exporting_an_unknown_user_returns_an_empty_record(store: Store) -> None:
    await _two_users(store)
    export = await store.export_user("a", "nobody")
    assert export == {
        "user": None, "devices": [], "events": [], "messages": [], "decisions": [], "inbox": []
    }  # fmt: skip
