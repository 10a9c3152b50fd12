"""Store contract: campaign definitions, tag rules, the decision log and funnel counts."""

from __future__ import annotations

from typing import Any

from tidings.server.storage import Store

from .conftest import NOW, add_devices, decision, deliver, event, log_decisions

PHONES = [("d1", "u1"), ("d1b", "u1"), ("d2", "u2"), ("d3", "u3"), ("d4", "u4"), ("d5", "u5")]
"""The app's devices: (device id, user key); u1 has two."""


def spec(cid: str, **extra: Any) -> dict[str, Any]:
    """A campaign definition as the API stores it (the store treats it as opaque JSON)."""
    return {"id": cid, "name": f"Campaign {cid}", "segment": {"attr": "plan", "eq": "pro"}, **extra}


# --- save_campaign and campaigns ---------------------------------------------------------------


async def test_a_saved_campaign_is_listed_with_its_definition(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1", budget=10), "draft", now=NOW)
    (row,) = await store.campaigns("a")
    assert (row.app, row.id, row.status, row.sent_total) == ("a", "c1", "draft", 0)
    assert row.spec == spec("c1", budget=10)
    assert (row.created_at, row.updated_at) == (NOW, NOW)


async def test_re_saving_a_campaign_replaces_its_definition_and_status(
    store: Store,
) -> None:
    await store.save_campaign("a", "c1", spec("c1", budget=10), "draft", now=NOW)
    await store.save_campaign("a", "c1", spec("c1", budget=20), "running", now=NOW + 60)
    (row,) = await store.campaigns("a")
    assert (row.spec["budget"], row.status) == (20, "running")
    assert (row.created_at, row.updated_at) == (NOW, NOW + 60)


async def test_a_campaign_counts_the_messages_it_sent(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1")
    (row,) = await store.campaigns("a")
    assert row.sent_total == 2


async def test_re_saving_a_campaign_keeps_its_sent_total(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1")
    await deliver(store, "a", "m3", [("d3", "u3")], campaign="c1")
    await store.save_campaign("a", "c1", spec("c1", budget=5), "paused", now=NOW + 1)
    (row,) = await store.campaigns("a")
    assert (row.sent_total, row.status, row.spec["budget"]) == (3, "paused", 5)


async def test_campaigns_are_listed_oldest_first(store: Store) -> None:
    await store.save_campaign("a", "c-new", spec("c-new"), "draft", now=NOW + 10)
    await store.save_campaign("a", "c-old", spec("c-old"), "draft", now=NOW - 10)
    await store.save_campaign("a", "c-mid-b", spec("c-mid-b"), "draft", now=NOW)
    await store.save_campaign("a", "c-mid-a", spec("c-mid-a"), "draft", now=NOW)
    assert [c.id for c in await store.campaigns("a")] == ["c-old", "c-mid-a", "c-mid-b", "c-new"]


async def test_campaigns_of_no_app_lists_every_apps_campaigns(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "draft", now=NOW)
    await store.save_campaign("b", "c1", spec("c1", of="b"), "running", now=NOW + 1)
    rows = await store.campaigns()
    assert [(c.app, c.id, c.status) for c in rows] == [("a", "c1", "draft"), ("b", "c1", "running")]
    assert rows[1].spec["of"] == "b"


async def test_an_app_without_campaigns_lists_none(store: Store) -> None:
    assert await store.campaigns("a") == []
    assert await store.campaigns() == []


# --- set_campaign_status and delete_campaign ---------------------------------------------------


async def test_setting_a_campaign_status_changes_only_its_status_and_update_time(
    store: Store,
) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    await store.set_campaign_status("a", "c1", "completed", now=NOW + 30)
    (row,) = await store.campaigns("a")
    assert (row.status, row.updated_at) == ("completed", NOW + 30)
    assert (row.spec, row.created_at, row.sent_total) == (spec("c1"), NOW, 1)


async def test_setting_the_status_of_an_unknown_campaign_creates_nothing(
    store: Store,
) -> None:
    await store.set_campaign_status("a", "ghost", "running", now=NOW)
    assert await store.campaigns() == []


async def test_deleting_a_campaign_removes_only_that_campaign(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "draft", now=NOW)
    await store.save_campaign("a", "c2", spec("c2"), "draft", now=NOW + 1)
    await store.delete_campaign("a", "c1")
    assert [c.id for c in await store.campaigns("a")] == ["c2"]
    await store.delete_campaign("a", "never-existed")
    assert [c.id for c in await store.campaigns("a")] == ["c2"]


async def test_deleting_a_campaign_keeps_its_decision_log_and_funnel(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    await add_devices(store, "a", PHONES)
    await deliver(
        store,
        "a",
        "m1",
        [("d1", "u1")],
        campaign="c1",
        decisions=[decision("c1", "u1", "sent", message_id="m1")],
    )
    await store.delete_campaign("a", "c1")
    assert [d.reason for d in await store.decisions("a", "c1")] == ["sent"]
    assert (await store.funnel_counts("a", "c1"))[None]["sent"] == 1


async def test_a_deleted_campaign_saved_again_starts_from_zero(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1")
    await store.delete_campaign("a", "c1")
    await store.save_campaign("a", "c1", spec("c1"), "draft", now=NOW + 5)
    (row,) = await store.campaigns("a")
    assert (row.sent_total, row.created_at) == (0, NOW + 5)


# --- tag rules ---------------------------------------------------------------------------------


async def test_a_saved_tag_rule_is_listed_with_its_app(store: Store) -> None:
    rule = {"name": "vip", "when": {"attr": "spend", "gte": 100}}
    await store.save_tag_rule("a", "vip", rule)
    assert await store.tag_rules() == [("a", rule)]


async def test_saving_a_tag_rule_again_replaces_it(store: Store) -> None:
    await store.save_tag_rule("a", "vip", {"name": "vip", "v": 1})
    await store.save_tag_rule("a", "vip", {"name": "vip", "v": 2})
    assert await store.tag_rules() == [("a", {"name": "vip", "v": 2})]


async def test_saving_no_tag_rule_deletes_it(store: Store) -> None:
    await store.save_tag_rule("a", "vip", {"name": "vip"})
    await store.save_tag_rule("a", "new", {"name": "new"})
    await store.save_tag_rule("a", "vip", None)
    assert await store.tag_rules() == [("a", {"name": "new"})]
    await store.save_tag_rule("a", "never-existed", None)
    assert await store.tag_rules() == [("a", {"name": "new"})]


async def test_tag_rules_are_listed_by_app_then_name(store: Store) -> None:
    for app, name in [("b", "alpha"), ("a", "zeta"), ("a", "beta"), ("b", "beta")]:
        await store.save_tag_rule(app, name, {"name": name, "app": app})
    assert [(app, r["name"]) for app, r in await store.tag_rules()] == [
        ("a", "beta"),
        ("a", "zeta"),
        ("b", "alpha"),
        ("b", "beta"),
    ]


async def test_a_tag_rule_of_one_app_is_deleted_in_that_app_only(store: Store) -> None:
    await store.save_tag_rule("a", "vip", {"name": "vip", "app": "a"})
    await store.save_tag_rule("b", "vip", {"name": "vip", "app": "b"})
    await store.save_tag_rule("b", "vip", None)
    assert await store.tag_rules() == [("a", {"name": "vip", "app": "a"})]


# --- decisions ---------------------------------------------------------------------------------


async def test_the_decision_log_keeps_every_field(store: Store) -> None:
    await add_devices(store, "a", PHONES)
    await deliver(
        store,
        "a",
        "m1",
        [("d1", "u1")],
        campaign="c1",
        variant="v2",
        decisions=[
            decision(
                "c1", "u1", "sent", at=NOW, variant="v2", message_id="m1", detail="1 device(s)"
            )
        ],
    )
    assert await store.decisions("a", "c1") == [
        decision("c1", "u1", "sent", at=NOW, variant="v2", message_id="m1", detail="1 device(s)")
    ]


async def test_the_decision_log_is_listed_newest_first(store: Store) -> None:
    await log_decisions(
        store,
        "a",
        [
            decision("c1", "u1", "scheduled", at=NOW - 20),
            decision("c1", "u2", "not_in_segment", at=NOW),
            decision("c1", "u1", "capped_tier", at=NOW - 10),
        ],
    )
    rows = await store.decisions("a", "c1")
    assert [(d.user_key, d.reason, d.at) for d in rows] == [
        ("u2", "not_in_segment", NOW),
        ("u1", "capped_tier", NOW - 10),
        ("u1", "scheduled", NOW - 20),
    ]


async def test_decisions_at_the_same_time_are_listed_latest_logged_first(
    store: Store,
) -> None:
    await log_decisions(store, "a", [decision("c1", "u1", "scheduled")])
    await log_decisions(store, "a", [decision("c1", "u1", "capped_tier")])
    assert [d.reason for d in await store.decisions("a", "c1")] == ["capped_tier", "scheduled"]


async def test_the_decision_log_can_be_read_for_one_user(store: Store) -> None:
    await log_decisions(
        store,
        "a",
        [
            decision("c1", "u1", "scheduled", at=NOW - 20),
            decision("c1", "u2", "not_in_segment", at=NOW),
            decision("c1", "u1", "capped_tier", at=NOW - 10),
        ],
    )
    assert [d.reason for d in await store.decisions("a", "c1", "u1")] == [
        "capped_tier",
        "scheduled",
    ]
    assert await store.decisions("a", "c1", "nobody") == []


async def test_the_decision_log_is_limited_to_the_newest_entries(store: Store) -> None:
    await log_decisions(
        store, "a", [decision("c1", f"u{i}", "not_in_segment", at=NOW + i) for i in range(150)]
    )
    assert len(await store.decisions("a", "c1")) == 100
    newest = await store.decisions("a", "c1", limit=3)
    assert [d.user_key for d in newest] == ["u149", "u148", "u147"]


async def test_the_decision_log_is_kept_per_campaign(store: Store) -> None:
    await log_decisions(
        store,
        "a",
        [
            decision("c1", "u1", "holdout"),
            decision("c2", "u1", "opted_out"),
        ],
    )
    assert [d.campaign for d in await store.decisions("a", "c1")] == ["c1"]
    assert [d.reason for d in await store.decisions("a", "c2", "u1")] == ["opted_out"]
    assert await store.decisions("a", "c3") == []


# --- funnel_counts -----------------------------------------------------------------------------


async def test_a_campaign_with_no_activity_has_an_empty_funnel(store: Store) -> None:
    assert await store.funnel_counts("a", "c1") == {}


async def test_the_funnel_counts_each_variants_sends(store: Store) -> None:
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1")], campaign="c1", variant="v1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1", variant="v1")
    await deliver(store, "a", "m3", [("d3", "u3")], campaign="c1", variant="v2")
    await deliver(store, "a", "m4", [("d4", "u4")], campaign="c2", variant="v1")
    await deliver(store, "a", "m5", [("d5", "u5")])  # a direct send counts for no campaign
    funnel = await store.funnel_counts("a", "c1")
    assert {v: f["sent"] for v, f in funnel.items()} == {"v1": 2, "v2": 1}


async def test_the_funnel_counts_targeted_users_once_and_only_when_eligible(
    store: Store,
) -> None:
    await log_decisions(
        store,
        "a",
        [
            decision("c1", "u1", "scheduled", variant="v1"),
            decision("c1", "u1", "sent", variant="v1"),
            decision("c1", "u2", "capped_tier", variant="v1"),
            decision("c1", "u2", "capped_tier", variant="v1", at=NOW + 1),
            decision("c1", "u3", "holdout", variant="control"),
            decision("c1", "u4", "not_in_segment", variant="v1"),
            decision("c1", "u5", "trigger_filter", variant="v1"),
            decision("c1", "u6", "outside_trigger_window", variant="v1"),
            decision("c1", "u7", "campaign_inactive", variant="v1"),
            decision("c1", "u8", "scheduled", variant="v1"),
        ],
    )
    funnel = await store.funnel_counts("a", "c1")
    assert funnel == {"v1": {"targeted": 2}, "control": {"targeted": 1}}


async def test_the_funnel_counts_each_receipt_kind_once_per_message(store: Store) -> None:
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1"), ("d1b", "u1")], campaign="c1", variant="v1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1", variant="v1")
    await deliver(store, "a", "m3", [("d3", "u3")], campaign="c1", variant="v2")
    accepted = await store.add_receipts(
        [
            ("a", "d1", "m1", "displayed", None, NOW),
            ("a", "d1b", "m1", "displayed", None, NOW),  # the same message on a second device
            ("a", "d1", "m1", "clicked", "open", NOW),
            ("a", "d2", "m2", "displayed", None, NOW),
            ("a", "d2", "m2", "dismissed", None, NOW),
            ("a", "d3", "m3", "displayed", None, NOW),
        ]
    )
    assert all(accepted)
    funnel = await store.funnel_counts("a", "c1")
    # A receipt proves its delivery: no stage counts more than the one before it, even while
    # the devices' acks (sent apart from receipts) are still on their way.
    assert funnel["v1"] == {"sent": 2, "delivered": 2, "displayed": 2, "clicked": 1,
                            "dismissed": 1}  # fmt: skip
    assert funnel["v2"] == {"sent": 1, "delivered": 1, "displayed": 1}
    assert await store.pending("a", "d3", 0, NOW) == []  # nor is it sent to the device again


async def test_the_funnel_by_day_counts_each_stage_on_the_day_it_first_happened(
    store: Store,
) -> None:
    day = int(NOW // 86_400)
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1"), ("d1b", "u1")], campaign="c1")  # day 0
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1", at=NOW + 86_400)  # day 1
    await deliver(store, "a", "m3", [("d3", "u3")], campaign="other")
    await store.ack_many([("a", "d1", 1), ("a", "d1b", 1), ("a", "d3", 1)], NOW + 10)
    await store.add_receipts([
        ("a", "d1", "m1", "displayed", None, NOW + 20),
        ("a", "d1b", "m1", "displayed", None, NOW + 86_400),  # seen again: counts once
        ("a", "d1", "m1", "clicked", "open", NOW + 2 * 86_400),  # clicked two days later
        ("a", "d2", "m2", "read", None, NOW + 86_400 + 5),  # delivered by its receipt
        ("a", "d3", "m3", "clicked", None, NOW),  # another campaign's
    ])  # fmt: skip
    assert await store.funnel_by_day("a", "c1") == {
        day: {"sent": 1, "delivered": 1, "displayed": 1},
        day + 1: {"sent": 1, "delivered": 1, "displayed": 1},
        day + 2: {"clicked": 1},
    }
    assert await store.funnel_by_day("a", "none") == {}


# --- channel_counts and cohorts ----------------------------------------------------------------


async def test_channel_counts_split_by_message_kind_and_count_any_receipt_kind(
    store: Store,
) -> None:
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1"), ("d1b", "u1")], campaign="c1", variant="v1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1", variant="v1")
    await deliver(store, "a", "m3", [("d3", "u3")], campaign="c1", variant="v2")
    await store.ack_many([("a", "d1", 1), ("a", "d2", 1), ("a", "d3", 1)])
    assert all(await store.add_receipts([
        ("a", "d1", "m1", "read", None, NOW),
        ("a", "d1b", "m1", "read", None, NOW + 1),  # read again on the other phone: once
        ("a", "d1", "m1", "clicked", "open", NOW + 2),
        ("a", "d2", "m2", "expired", None, NOW),  # a kind the store has never heard of
        ("a", "d3", "m3", "clicked", None, NOW),  # clicked without a read: seen all the same
    ]))  # fmt: skip
    counts = await store.channel_counts("a", "c1")
    assert counts == {
        "v1": {"inbox": {"delivered": 2, "read": 1, "clicked": 1, "expired": 1, "seen": 1}},
        "v2": {"inbox": {"delivered": 1, "clicked": 1, "seen": 1}},
    }
    assert await store.channel_counts("a", "c2") == {}


async def test_cohorts_start_at_the_send_the_first_sight_and_the_holdout_decision(
    store: Store,
) -> None:
    await add_devices(store, "a", PHONES)
    await deliver(store, "a", "m1", [("d1", "u1"), ("d1b", "u1")], campaign="c1", variant="v1")
    await deliver(store, "a", "m2", [("d2", "u2")], campaign="c1", variant="v1", at=NOW + 5)
    await log_decisions(store, "a", [
        decision("c1", "u3", "holdout", variant="control", at=NOW + 10),
        decision("c1", "u3", "holdout", variant="control", at=NOW + 99),  # asked again later
        decision("c1", "u4", "capped_tier", variant="v1"),
    ])  # fmt: skip
    assert all(await store.add_receipts([
        ("a", "d1b", "m1", "displayed", None, NOW + 30),
        ("a", "d1", "m1", "read", None, NOW + 20),
    ]))  # fmt: skip
    for device, user, eid, at in (
        ("d1", "u1", "e1", NOW - 1),  # before the send: not a return
        ("d1", "u1", "e2", NOW + 50),
        ("d1", "u1", "e3", NOW + 40),
        ("d2", "u2", "e4", NOW + 5 + 1000),  # after the longest window asked for
        ("d3", "u3", "e5", NOW + 11),
    ):
        await store.insert_events("a", device, user, [event(eid, "open", at)], now=at)
    rows = await store.cohorts("a", "c1", within_s=500)
    assert sorted(rows) == sorted([
        ("sent", "v1", "u1", NOW, NOW + 40),
        ("sent", "v1", "u2", NOW + 5, None),
        ("exposed", "v1", "u1", NOW + 20, None),
        ("holdout", "control", "u3", NOW + 10, NOW + 11),
    ])  # fmt: skip
    assert await store.cohorts("b", "c1", within_s=500) == []


# --- rollout states ----------------------------------------------------------------------------


async def test_a_rollout_state_changes_only_from_the_state_expected(store: Store) -> None:
    await store.save_campaign("a", "c1", spec("c1"), "running", now=NOW)
    assert await store.rollout_states("a") == {}
    testing = {"phase": "testing", "started_at": NOW, "deadline": NOW + 60}
    assert await store.swap_rollout("a", "c1", None, testing) == testing
    assert await store.swap_rollout("a", "c1", None, {"phase": "other"}) == testing
    decided = testing | {"phase": "rolled_out", "variant": "b", "row": 7}
    assert await store.swap_rollout("a", "c1", testing, decided) == decided
    assert await store.swap_rollout("a", "c1", testing, testing | {"variant": "a"}) == decided
    assert await store.rollout_states("a") == {"c1": decided}
    assert await store.rollout_states("b") == {}
    assert await store.swap_rollout("a", "nope", None, testing) is None
