"""Store contract: devices, the profiles they create, and behaviour events."""

from __future__ import annotations

import asyncio

from tidings.server.storage import Store, anonymous_key

from .conftest import NOW, device, event

# --- upsert_device -----------------------------------------------------------------------------


async def test_upserting_a_new_device_returns_it_as_given(store: Store) -> None:
    row = device(
        "a",
        "d1",
        "u1",
        platform="ios",
        app_version="2.1",
        locale="de-DE",
        tz="Europe/Berlin",
        sdk_version="0.1",
    )
    stored = await store.upsert_device(row)
    assert stored.device_id == "d1" and stored.user_id == "u1"
    assert (stored.platform, stored.app_version, stored.locale, stored.tz) == (
        "ios",
        "2.1",
        "de-DE",
        "Europe/Berlin",
    )
    assert (stored.first_seen, stored.last_seen) == (NOW, NOW)


async def test_re_upserting_a_device_keeps_its_first_seen_and_updates_its_facts(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW, app_version="1.0"))
    again = await store.upsert_device(device("a", "d1", "u1", at=NOW + 50, app_version="2.0"))
    assert again.first_seen == NOW
    assert again.last_seen == NOW + 50
    assert again.app_version == "2.0"
    (profile,) = await store.profile_rows("a")
    assert profile.app_version == "2.0"


async def test_a_device_that_changes_user_belongs_to_the_new_user_only(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d1", "u2", at=NOW + 1))
    assert await store.devices_of_users("a", ["u1"]) == []
    assert await store.devices_of_users("a", ["u2"]) == [("d1", "u2")]
    assert await store.known_devices("a", ["d1"]) == [("d1", "u2")]


async def test_a_device_that_logs_out_becomes_anonymous(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d1", None, at=NOW + 1))
    assert await store.devices_of_users("a", ["u1"]) == []
    assert await store.known_devices("a", ["d1"]) == [("d1", anonymous_key("d1"))]
    assert await store.devices_of_keys("a", [anonymous_key("d1")]) == [("d1", "~d1")]


async def test_upserting_a_device_creates_the_profile_of_its_user(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW))
    user = await store.user("a", "u1")
    assert user is not None
    assert (user.user_key, user.first_seen, user.last_seen) == ("u1", NOW, NOW)
    assert (user.attrs, user.consent, user.inbox_ver) == ({}, {}, 0)


async def test_upserting_an_anonymous_device_creates_its_anonymous_profile(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", None))
    assert anonymous_key("d1") == "~d1"
    assert await store.user("a", "~d1") is not None
    assert [p.user_key for p in await store.profile_rows("a")] == ["~d1"]


async def test_a_second_device_keeps_the_profile_first_seen_and_moves_its_last_seen(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW))
    await store.upsert_device(device("a", "d2", "u1", at=NOW + 100))
    user = await store.user("a", "u1")
    assert user is not None
    assert (user.first_seen, user.last_seen) == (NOW, NOW + 100)


# --- device lookups ----------------------------------------------------------------------------


async def test_devices_of_users_lists_every_device_of_the_named_users_only(
    store: Store,
) -> None:
    for d, u in [("d1", "u1"), ("d2", "u1"), ("d3", "u2"), ("d4", "u3"), ("d5", None)]:
        await store.upsert_device(device("a", d, u))
    found = await store.devices_of_users("a", ["u1", "u2", "nobody"])
    assert sorted(found) == [("d1", "u1"), ("d2", "u1"), ("d3", "u2")]


async def test_devices_of_no_users_is_empty(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    assert await store.devices_of_users("a", []) == []


async def test_known_devices_returns_the_existing_devices_with_their_user_keys(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", None))
    found = await store.known_devices("a", ["d1", "d2", "never-seen"])
    assert sorted(found) == [("d1", "u1"), ("d2", "~d2")]
    assert await store.known_devices("a", []) == []


async def test_devices_of_keys_finds_named_and_anonymous_profiles_devices(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    await store.upsert_device(device("a", "d2", "u1"))
    await store.upsert_device(device("a", "d3", None))
    await store.upsert_device(device("a", "d4", None))
    await store.upsert_device(device("a", "d5", "u2"))
    found = await store.devices_of_keys("a", ["u1", anonymous_key("d3"), "~unknown"])
    assert sorted(found) == [("d1", "u1"), ("d2", "u1"), ("d3", "~d3")]
    assert await store.devices_of_keys("a", []) == []


async def test_the_anonymous_key_no_longer_finds_a_device_that_has_a_user(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", None))
    await store.upsert_device(device("a", "d1", "u1", at=NOW + 1))
    assert await store.devices_of_keys("a", [anonymous_key("d1")]) == []
    assert await store.devices_of_keys("a", ["u1"]) == [("d1", "u1")]


async def test_device_lookups_take_long_lists_of_ids(store: Store) -> None:
    n = 1200
    await asyncio.gather(
        *(store.upsert_device(device("a", f"d{i}", f"u{i}" if i % 2 else None)) for i in range(n))
    )
    named = [f"u{i}" for i in range(1, n, 2)]
    ids = [f"d{i}" for i in range(n)]
    keys = [f"u{i}" if i % 2 else anonymous_key(f"d{i}") for i in range(n)]
    assert len(await store.devices_of_users("a", named)) == n // 2
    assert len(await store.known_devices("a", ids)) == n
    assert sorted(await store.devices_of_keys("a", keys)) == sorted(zip(ids, keys, strict=True))


async def test_a_user_named_twice_in_a_long_list_is_answered_once(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1"))
    others = [f"nobody{i}" for i in range(600)]
    assert await store.devices_of_users("a", ["u1", *others, "u1"]) == [("d1", "u1")]


# --- insert_events and count_events ------------------------------------------------------------


async def test_inserted_events_are_read_back_with_their_time_in_seconds(
    store: Store,
) -> None:
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "purchase", NOW - 10, amount=9.5, sku="x")], now=NOW
    )
    (row,) = await store.events_since("a", 0)
    assert (row.user_key, row.name, row.ts) == ("u1", "purchase", NOW - 10)
    assert row.props == {"amount": 9.5, "sku": "x"}
    assert await store.count_events("a") == 1


async def test_a_resent_event_id_is_ignored(store: Store) -> None:
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW - 5, n=1)], now=NOW)
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "open", NOW - 5, n=2), event("e2", "open", NOW - 4)], now=NOW
    )
    rows = await store.events_since("a", 0)
    assert [r.props for r in rows] == [{"n": 1}, {}]
    assert await store.count_events("a") == 2


async def test_a_repeated_event_id_within_one_batch_is_stored_once(store: Store) -> None:
    batch = [event("e1", "open", NOW - 5, n=1), event("e1", "open", NOW - 5, n=2)]
    await store.insert_events("a", "d1", "u1", batch, now=NOW)
    assert await store.count_events("a") == 1


async def test_the_same_event_id_from_another_device_is_another_event(
    store: Store,
) -> None:
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW - 5)], now=NOW)
    await store.insert_events("a", "d2", "u1", [event("e1", "open", NOW - 5)], now=NOW)
    assert await store.count_events("a") == 2


async def test_inserting_events_creates_a_missing_profile(store: Store) -> None:
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW - 30)], now=NOW)
    user = await store.user("a", "u1")
    assert user is not None
    assert user.last_seen == NOW - 30


async def test_inserting_events_moves_the_user_last_seen_to_the_latest_event(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 100))
    batch = [
        event("e1", "open", NOW - 20),
        event("e2", "open", NOW - 10),
        event("e3", "x", NOW - 60),
    ]
    await store.insert_events("a", "d1", "u1", batch, now=NOW)
    user = await store.user("a", "u1")
    assert user is not None
    assert (user.first_seen, user.last_seen) == (NOW - 100, NOW - 10)


async def test_old_events_never_move_the_user_last_seen_back(store: Store) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW))
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW - 3600)], now=NOW)
    user = await store.user("a", "u1")
    assert user is not None and user.last_seen == NOW


async def test_an_event_from_the_future_moves_last_seen_no_further_than_now(
    store: Store,
) -> None:
    await store.upsert_device(device("a", "d1", "u1", at=NOW - 100))
    await store.insert_events("a", "d1", "u1", [event("e1", "open", NOW + 86_400)], now=NOW)
    user = await store.user("a", "u1")
    assert user is not None and user.last_seen == NOW


async def test_count_events_counts_one_app_only(store: Store) -> None:
    await store.insert_events(
        "a", "d1", "u1", [event("e1", "x", NOW), event("e2", "x", NOW)], now=NOW
    )
    await store.insert_events("b", "d1", "u1", [event("e1", "x", NOW)], now=NOW)
    assert (await store.count_events("a"), await store.count_events("b")) == (2, 1)
    assert await store.count_events("c") == 0


# --- events_since ------------------------------------------------------------------------------


async def _three_users_events(store: Store) -> None:
    await store.insert_events(
        "a",
        "d1",
        "u1",
        [
            event("e1", "open", NOW - 30),
            event("e2", "purchase", NOW - 10, amount=5),
        ],
        now=NOW,
    )
    await store.insert_events(
        "a",
        "d2",
        "u2",
        [
            event("e3", "purchase", NOW - 40, amount=7),
            event("e4", "open", NOW - 20),
        ],
        now=NOW,
    )
    await store.insert_events("a", "d3", "~d3", [event("e5", "open", NOW - 5)], now=NOW)


async def test_events_since_returns_every_event_oldest_first(store: Store) -> None:
    await _three_users_events(store)
    rows = await store.events_since("a", 0)
    assert [r.ts for r in rows] == [NOW - 40, NOW - 30, NOW - 20, NOW - 10, NOW - 5]
    assert [(r.user_key, r.name) for r in rows] == [
        ("u2", "purchase"),
        ("u1", "open"),
        ("u2", "open"),
        ("u1", "purchase"),
        ("~d3", "open"),
    ]


async def test_events_since_includes_events_at_the_boundary_and_none_before(
    store: Store,
) -> None:
    await _three_users_events(store)
    rows = await store.events_since("a", NOW - 20)
    assert [r.ts for r in rows] == [NOW - 20, NOW - 10, NOW - 5]
    assert await store.events_since("a", NOW) == []


async def test_events_since_filters_by_name(store: Store) -> None:
    await _three_users_events(store)
    rows = await store.events_since("a", 0, name="purchase")
    assert [(r.user_key, r.props) for r in rows] == [("u2", {"amount": 7}), ("u1", {"amount": 5})]
    assert await store.events_since("a", 0, name="nothing") == []


async def test_events_since_filters_by_user(store: Store) -> None:
    await _three_users_events(store)
    rows = await store.events_since("a", 0, user_key="u1")
    assert [(r.name, r.ts) for r in rows] == [("open", NOW - 30), ("purchase", NOW - 10)]
    assert [r.name for r in await store.events_since("a", 0, user_key="~d3")] == ["open"]


async def test_events_since_filters_by_name_and_user_together(store: Store) -> None:
    await _three_users_events(store)
    rows = await store.events_since("a", 0, name="open", user_key="u2")
    assert [(r.user_key, r.name, r.ts) for r in rows] == [("u2", "open", NOW - 20)]


async def test_hellos_made_together_each_take_the_next_epoch_of_their_device_in_order(
    store: Store,
) -> None:
    """Hellos that arrive at once may share a write (a batch): a device's later hello still
    takes the higher session epoch, and every other device and profile is recorded."""
    rows = [device("a", "twice", "u1", at=NOW + i) for i in range(3)]
    rows += [device("a", f"d{i}", f"u{i % 5}", at=NOW + i) for i in range(40)]
    rows.insert(20, device("a", "twice", "u1", at=NOW + 50))
    stored = await asyncio.gather(*(store.upsert_device(r) for r in rows))
    twice = [s.epoch for r, s in zip(rows, stored, strict=True) if r.device_id == "twice"]
    assert twice == [1, 2, 3, 4]
    assert sorted(s.epoch for s in stored if s.device_id != "twice") == [1] * 40
    assert [s.device_id for s in stored] == [r.device_id for r in rows]
    assert len(await store.known_devices("a", [f"d{i}" for i in range(40)])) == 40
    user = await store.user("a", "u1")  # seen last by its last hello in the list
    last = [r.last_seen for r in rows if r.user_id == "u1"][-1]
    assert user is not None and (user.first_seen, user.last_seen) == (NOW, last)
