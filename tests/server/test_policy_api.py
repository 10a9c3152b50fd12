"""Per-app policy and honest times through the real admin API (and a real device socket).

Settings (``/v1/settings``), the default caps of the seeds, the value event, declared
categories, copy length in grapheme clusters, profile times from event times, campaign windows
that end, and tag windows that hold at their edge.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from rawclient import open_session

from tidings.protocol.frames import Error, Ok, Prefs
from tidings.protocol.tokens import mint_token

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY_MS = 86_400_000


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def _file_settings(admin: AdminHarness) -> AsyncIterator[None]:
    """Every test starts and ends with the apps' file settings."""
    yield
    for app in (admin.demo, admin.other):
        r = await admin.client.delete("/v1/settings", headers=admin.auth(app))
        assert r.status_code == 200, r.text


def now_ms() -> int:
    return int(time.time() * 1000)


async def put_settings(admin: AdminHarness, body: Any) -> httpx.Response:
    return await admin.client.put("/v1/settings", json=body, headers=admin.auth())


async def events(admin: AdminHarness, user: str, *evs: dict[str, Any]) -> None:
    r = await admin.client.post("/v1/events", json={"app": "demo", "user": user,
                                                    "events": list(evs)},
                                headers=admin.auth())  # fmt: skip
    assert r.status_code == 202, r.text


async def user(admin: AdminHarness, user_id: str) -> dict[str, Any]:
    r = await admin.client.get(f"/v1/users/{user_id}", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def patch_user(admin: AdminHarness, user_id: str, **body: Any) -> httpx.Response:
    return await admin.client.patch(f"/v1/users/{user_id}", json={"app": "demo", **body},
                                    headers=admin.auth())  # fmt: skip


async def run_campaign(admin: AdminHarness, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Create and start a campaign; its decisions, newest first."""
    spec = {"app": "demo", "name": spec["id"], **spec}
    created = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert created.status_code == 201, created.text
    started = await admin.client.post(f"/v1/campaigns/{spec['id']}/start",
                                      params={"app": "demo"}, headers=admin.auth())  # fmt: skip
    assert started.status_code == 200, started.text
    return await decisions(admin, spec["id"])


async def decisions(admin: AdminHarness, cid: str) -> list[dict[str, Any]]:
    r = await admin.client.get(f"/v1/campaigns/{cid}/decisions", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["decisions"]
    return found


def one_off(cid: str, cohort: str, **content: Any) -> dict[str, Any]:
    return {"id": cid, "kind": "one_off", "segment": f'attr.cohort = "{cohort}"',
            "content": {"kind": "inbox", "title": "t", "body": "b", **content}}  # fmt: skip


async def an_active_user(admin: AdminHarness, user_id: str, cohort: str) -> None:
    """A user first seen 10 days ago and seen yesterday: active, never bought (basic)."""
    await events(admin, user_id, {"name": "open", "ts": now_ms() - 10 * DAY_MS},
                 {"name": "open", "ts": now_ms() - DAY_MS})  # fmt: skip
    assert (await patch_user(admin, user_id, attrs={"cohort": cohort})).status_code == 200
    p = await user(admin, user_id)
    assert (p["lifecycle"], p["tier"]) == ("active", "basic")


# --- settings ----------------------------------------------------------------------------------


async def test_settings_answer_the_seed_defaults_of_the_callers_app(admin: AdminHarness) -> None:
    r = await admin.client.get("/v1/settings", headers=admin.auth())
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["categories"] == ["marketing", "transactional"]
    assert s["value_event"] == {"name": "purchase", "amount": "amount"}
    assert s["caps"]["lifecycle"] == {
        "new": "none", "active": {"limit": 4, "days": 7},
        "dormant": {"limit": 2, "days": 30}, "churned": {"limit": 1, "days": 30},
    }  # fmt: skip
    assert s["caps"]["tier"]["basic"] == {"limit": 2, "days": 7}
    assert s["caps"]["min_gap_hours"] is None
    assert s["thresholds"]["churned_after_days"] == 30
    other = await admin.client.get("/v1/settings", params={"app": "other"}, headers=admin.auth())
    assert other.status_code == 403


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"caps": {"lifecycle": {"active": {"limit": 0, "days": 7}}}},
         "caps.lifecycle.active.limit", "greater than 0"),
        ({"caps": {"lifecycle": {"asleep": {"limit": 1, "days": 7}}}},
         "caps.lifecycle.asleep", "active, churned, dormant, new"),
        ({"caps": {"tier": {"basic": {"limit": 2}}}}, "caps.tier.basic.days", "required"),
        ({"caps": {"tier": {"basic": {"limit": 2, "days": 7, "per": 1}}}},
         "caps.tier.basic.per", "unknown key"),
        ({"thresholds": {"dormant_after_days": 40}}, "thresholds.dormant_after_days",
         "churned_after_days"),
        ({"thresholds": {"high_count": 1.5}}, "thresholds.high_count", "whole number"),
        ({"value_event": {"name": ""}}, "value_event.name", "1-64 characters"),
        ({"value_event": "order_paid"}, "value_event", "table"),
        ({"categories": ["Promo!"]}, "categories[0]", "a-z"),
        ({"categories": ["news", "news"]}, "categories[1]", "twice"),
        ({"colour": "blue"}, "colour", "unknown key"),
    ],
)  # fmt: skip
async def test_put_settings_names_the_bad_key_path(
    admin: AdminHarness, body: dict[str, Any], field: str, says: str
) -> None:
    r = await put_settings(admin, body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and says in error["message"], error
    assert (await admin.client.get("/v1/settings", headers=admin.auth())).json()["categories"] == [
        "marketing",
        "transactional",
    ]  # nothing of a refused document is kept


async def test_put_settings_answers_the_whole_policy_and_delete_restores_the_file(
    admin: AdminHarness,
) -> None:
    r = await put_settings(admin, {"caps": {"lifecycle": {"active": {"limit": 5, "days": 7},
                                                          "churned": "none"}}})  # fmt: skip
    assert r.status_code == 200, r.text
    lifecycle = r.json()["caps"]["lifecycle"]
    assert lifecycle["active"] == {"limit": 5, "days": 7} and lifecycle["churned"] == "none"
    assert lifecycle["dormant"] == {"limit": 2, "days": 30}  # left out: the file's
    assert (await admin.client.get("/v1/settings", headers=admin.auth())).json() == r.json()
    again = await put_settings(admin, {"categories": ["news"]})  # replaces the whole document
    assert again.json()["caps"]["lifecycle"]["active"] == {"limit": 4, "days": 7}
    reset = await admin.client.delete("/v1/settings", headers=admin.auth())
    assert reset.json()["categories"] == ["marketing", "transactional"]


# --- caps: the seeds' defaults and settings that take effect at once ---------------------------


async def test_an_active_user_who_never_bought_gets_four_marketing_messages_a_week(
    admin: AdminHarness,
) -> None:
    await an_active_user(admin, "cap-active", "cap-active")
    reasons = [(await run_campaign(admin, one_off(f"cap-a{i}", "cap-active")))[0]["reason"]
               for i in range(5)]  # fmt: skip
    assert reasons == ["sent", "sent", "sent", "sent", "capped_lifecycle"]
    detail = (await decisions(admin, "cap-a4"))[0]["detail"]
    assert "active: 4 per 7 days" in detail


async def test_a_new_user_who_never_bought_gets_two_a_week(admin: AdminHarness) -> None:
    assert (await patch_user(admin, "cap-new", attrs={"cohort": "cap-new"})).status_code == 200
    assert (await user(admin, "cap-new"))["lifecycle"] == "new"
    reasons = [(await run_campaign(admin, one_off(f"cap-n{i}", "cap-new")))[0]["reason"]
               for i in range(3)]  # fmt: skip
    assert reasons == ["sent", "sent", "capped_tier"]


async def test_changed_caps_bind_the_next_send_without_a_restart(admin: AdminHarness) -> None:
    await an_active_user(admin, "cap-live", "cap-live")
    r = await put_settings(admin, {"caps": {"lifecycle": {"active": {"limit": 1, "days": 7}}}})
    assert r.status_code == 200, r.text
    assert (await run_campaign(admin, one_off("cap-l0", "cap-live")))[0]["reason"] == "sent"
    assert (await run_campaign(admin, one_off("cap-l1", "cap-live")))[0]["reason"] == (
        "capped_lifecycle"
    )
    await put_settings(admin, {"caps": {"lifecycle": {"active": "none"},
                                        "tier": {"basic": "none"}}})  # fmt: skip
    assert (await run_campaign(admin, one_off("cap-l2", "cap-live")))[0]["reason"] == "sent"


async def test_caps_stored_through_another_node_bind_though_this_node_never_heard(
    admin: AdminHarness,
) -> None:
    # Another node stored new caps and its news was lost: the commit finds the settings it
    # was decided under are not the stored ones, and the node reads them and decides again.
    await an_active_user(admin, "cap-stale", "cap-stale")
    await an_active_user(admin, "cap-direct", "cap-direct")
    one = {"caps": {"lifecycle": {"active": {"limit": 1, "days": 7}}}}
    await admin.node.store.save_app_settings("demo", one, time.time())
    assert admin.node.engine.policy("demo").to_json()["caps"]["lifecycle"]["active"] == {
        "limit": 4, "days": 7}  # the stale view  # fmt: skip
    assert (await run_campaign(admin, one_off("cap-s0", "cap-stale")))[0]["reason"] == "sent"
    assert (await run_campaign(admin, one_off("cap-s1", "cap-stale")))[0]["reason"] == (
        "capped_lifecycle"
    )
    body = {"app": "demo", "to": {"users": ["cap-direct"]}, "kind": "inbox", "title": "t",
            "body": "b"}  # fmt: skip
    first = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    second = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert (first.json()["skipped"], second.json()["skipped"]) == ({}, {"capped_lifecycle": 1})


# --- the value event ---------------------------------------------------------------------------


async def test_order_paid_counts_as_a_purchase_once_it_is_the_value_event(
    admin: AdminHarness,
) -> None:
    paid = {"name": "order_paid", "props": {"total": 1200}, "ts": now_ms() - DAY_MS}
    await events(admin, "buyer", paid)
    before = await user(admin, "buyer")
    assert (before["purchase_count"], before["tier"]) == (0, "basic")
    r = await put_settings(admin, {"value_event": {"name": "order_paid", "amount": "total"}})
    assert r.status_code == 200, r.text
    after = await user(admin, "buyer")  # stored events recounted at once
    assert (after["purchase_count"], after["purchase_total"], after["tier"]) == (
        1, 1200.0, "high_value",
    )  # fmt: skip
    assert after["last_purchase"] == pytest.approx(paid["ts"] / 1000)
    await events(admin, "buyer", {"name": "order_paid", "props": {"total": 30}})
    live = await user(admin, "buyer")
    assert (live["purchase_count"], live["purchase_total"]) == (2, 1230.0)
    await events(admin, "buyer", {"name": "purchase", "props": {"amount": 5}})
    assert (await user(admin, "buyer"))["purchase_count"] == 2  # no longer the value event


# --- categories --------------------------------------------------------------------------------


async def test_a_campaign_must_pick_one_of_the_apps_categories(admin: AdminHarness) -> None:
    spec = {"app": "demo", "name": "n", **one_off("cat-news", "cat", category="news")}
    refused = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "content.category"
    assert "'news'" in error["message"] and "marketing, transactional" in error["message"]
    await put_settings(admin, {"categories": ["promotions", "news", "reminders"]})
    accepted = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["content"]["category"] == "news"


async def test_consent_for_an_unknown_category_is_refused_with_the_apps_categories(
    admin: AdminHarness,
) -> None:
    await put_settings(admin, {"categories": ["promotions", "news"]})
    refused = await patch_user(admin, "cat-u", consent={"reminders": False})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "consent.reminders"
    assert "marketing, transactional, promotions, news" in error["message"]
    ok = await patch_user(admin, "cat-u", consent={"news": False})
    assert ok.status_code == 200 and ok.json()["consent"] == {"news": False}


async def test_a_device_opting_out_of_an_unknown_category_gets_an_error_frame(
    admin: AdminHarness,
) -> None:
    await put_settings(admin, {"categories": ["news"]})
    token = mint_token(secret=admin.demo.secret, app="demo", device="cat-phone", user="cat-d")
    client = await open_session(admin.node.port, token)
    await client.send(Prefs(rid=7, categories={"promotions": False}))
    error = await client.recv_until(Error)
    assert error.rid == 7 and error.code == "invalid_field"
    assert error.message.startswith("prefs.categories.promotions: unknown category")
    assert "marketing, transactional, news" in error.message
    await client.send(Prefs(rid=8, categories={"news": False}))  # the connection stays open
    assert await client.recv_until(Ok) == Ok(rid=8)
    await client.close()
    assert (await user(admin, "cat-d"))["consent"] == {"news": False}


async def test_a_campaign_of_a_declared_category_skips_users_who_opted_out_of_it(
    admin: AdminHarness,
) -> None:
    await put_settings(admin, {"categories": ["news"]})
    for u, news in (("cat-in", True), ("cat-out", False)):
        assert (await patch_user(admin, u, attrs={"cohort": "cat-news2"},
                                 consent={"news": news})).status_code == 200  # fmt: skip
    found = await run_campaign(admin, one_off("cat-news2", "cat-news2", category="news"))
    assert {d["user"]: d["reason"] for d in found} == {"cat-in": "sent", "cat-out": "opted_out"}


# --- copy length -------------------------------------------------------------------------------


async def test_copy_length_counts_what_a_reader_sees(admin: AdminHarness) -> None:
    body = "中" * 49 + "👍🏽"  # 50 characters to a reader, 51 code points
    family = "👨‍👩‍👧‍👦" * 30  # 30 characters, 210 code points
    sent = await admin.client.post("/v1/messages", headers=admin.auth(), json={
        "app": "demo", "to": {"users": ["len-u"]}, "kind": "banner", "title": family,
        "body": body,
    })  # fmt: skip
    assert sent.status_code == 202, sent.text
    too_long = await admin.client.post("/v1/messages", headers=admin.auth(), json={
        "app": "demo", "to": {"users": ["len-u"]}, "kind": "banner", "title": "t",
        "body": body + "中",
    })  # fmt: skip
    assert too_long.status_code == 422
    assert too_long.json()["error"]["message"].startswith("body: 51 characters")


async def test_overflow_truncate_cuts_long_copy_at_a_cluster_with_an_ellipsis(
    admin: AdminHarness,
) -> None:
    name = "中" * 47 + "👍🏽" * 5
    for u, overflow in (("cut-u", "truncate"), ("skip-u", "skip")):
        attrs = {"cohort": f"cut-{overflow}", "first_name": name}
        assert (await patch_user(admin, u, attrs=attrs)).status_code == 200
    # "both": kept in the inbox of these device-less users, under the banner's length limits
    body = {"kind": "both", "title": "Hi", "body": "{{ user.first_name | default('x') }}"}
    cut = await run_campaign(admin, one_off("cut-t", "cut-truncate", **body, overflow="truncate"))
    skipped = await run_campaign(admin, one_off("cut-s", "cut-skip", **body))
    assert [d["reason"] for d in skipped] == ["template_error"]
    assert "renders to 52 characters, more than 50" in skipped[0]["detail"]
    (sent,) = cut
    assert sent["reason"] == "sent"
    r = await admin.client.get("/v1/users/cut-u/export", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    (message,) = [m for m in r.json()["messages"] if m["id"] == sent["message_id"]]
    assert message["body"] == "中" * 47 + "👍🏽" * 2 + "…"  # 50 clusters, no tone split off


# --- time: profiles, campaign windows, tag windows --------------------------------------------


async def test_a_user_known_only_from_old_events_is_churned_not_active(
    admin: AdminHarness,
) -> None:
    old = now_ms() - 40 * DAY_MS
    await events(admin, "old-u", {"name": "open", "ts": old}, {"name": "open", "ts": old + 1000})
    p = await user(admin, "old-u")
    assert p["first_seen"] == pytest.approx(old / 1000)
    assert p["last_seen"] == pytest.approx(old / 1000 + 1)
    assert p["lifecycle"] == "churned"


async def test_a_device_clock_ahead_does_not_make_a_user_seen_in_the_future(
    admin: AdminHarness,
) -> None:
    before = time.time()
    await events(admin, "ahead-u", {"name": "open", "ts": now_ms() + 5 * DAY_MS})
    p = await user(admin, "ahead-u")
    assert before - 1 <= p["last_seen"] <= time.time() + 1


async def test_a_triggered_campaign_sends_nothing_after_its_window_ended(
    admin: AdminHarness,
) -> None:
    now = time.time()
    spec = {"id": "ended", "kind": "triggered", "segment": None,
            "trigger": {"event": "late_cart",
                        "window": {"start_at": now - 3 * 86_400, "end_at": now - 86_400}},
            "content": {"kind": "inbox", "title": "t", "body": "b"}}  # fmt: skip
    await run_campaign(admin, spec)
    inside_old_window = now_ms() - 2 * DAY_MS  # arrives late, happened while it ran
    await events(admin, "late-u", {"name": "late_cart", "ts": inside_old_window})
    (d,) = await decisions(admin, "ended")
    assert d["reason"] == "outside_trigger_window" and "window ends at" in d["detail"]


async def test_a_delayed_trigger_send_due_after_the_end_is_not_sent(admin: AdminHarness) -> None:
    now = time.time()
    spec = {"id": "ends-soon", "kind": "triggered", "segment": None,
            "trigger": {"event": "soon_cart", "delay_s": 600,
                        "window": {"start_at": now - 86_400, "end_at": now + 300}},
            "content": {"kind": "inbox", "title": "t", "body": "b"}}  # fmt: skip
    await run_campaign(admin, spec)
    await events(admin, "soon-u", {"name": "soon_cart"})  # due in 600 s, the end in 300 s
    (d,) = await decisions(admin, "ends-soon")
    assert d["reason"] == "outside_trigger_window" and "before the send time" in d["detail"]


async def test_claimed_work_due_after_the_end_is_not_sent(admin: AdminHarness) -> None:
    now = time.time()
    spec = {"id": "ended-due", "kind": "triggered", "segment": None,
            "trigger": {"event": "due_cart", "delay_s": 60,
                        "window": {"start_at": now - 86_400, "end_at": now + 120}},
            "content": {"kind": "inbox", "title": "t", "body": "b"}}  # fmt: skip
    await run_campaign(admin, spec)
    await events(admin, "due-u", {"name": "due_cart"})  # due in 60 s, before the end
    assert (await decisions(admin, "ended-due"))[0]["reason"] == "scheduled"
    await admin.node.engine.tick(now=now + 600)  # the scheduler runs late, after the end
    newest = (await decisions(admin, "ended-due"))[0]
    assert newest["reason"] == "outside_trigger_window", newest


async def test_an_event_outside_a_tag_window_never_grants_the_tag(admin: AdminHarness) -> None:
    rule = {"name": "recent_fan", "event": "cheer", "threshold": {"count": 1},
            "window_s": 7 * 86_400}  # fmt: skip
    r = await admin.client.put("/v1/tag-rules/recent_fan", params={"app": "demo"}, json=rule,
                               headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    spec = {"id": "fans", "kind": "triggered", "segment": "tag:recent_fan",
            "trigger": {"event": "cheer"},
            "content": {"kind": "inbox", "title": "t", "body": "b"}}  # fmt: skip
    await run_campaign(admin, spec)
    await events(admin, "tag-old", {"name": "cheer", "ts": now_ms() - 8 * DAY_MS})
    assert (await user(admin, "tag-old"))["tags"] == []
    assert [d["reason"] for d in await decisions(admin, "fans")] == ["not_in_segment"]
    await events(admin, "tag-new", {"name": "cheer", "ts": now_ms() - 6 * DAY_MS})
    assert (await user(admin, "tag-new"))["tags"] == ["recent_fan"]


# --- segment errors ----------------------------------------------------------------------------


async def test_a_segment_parse_error_puts_the_caret_under_the_bad_token(
    admin: AdminHarness,
) -> None:
    r = await admin.client.post("/v1/segments/preview", json={"app": "demo", "text": "tier = vip"},
                                headers=admin.auth())  # fmt: skip
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "text: tier = vip\n" + " " * len("text: tier = ") + "^ expected one of high_value, "
        "potential, basic, dormant"
    )


async def test_a_direct_send_takes_the_apps_own_categories_and_respects_opt_outs(
    admin: AdminHarness,
) -> None:
    def send(category: str) -> Any:
        return admin.client.post("/v1/messages", headers=admin.auth(), json={
            "app": "demo", "to": {"users": ["ds-in", "ds-out"]}, "kind": "inbox",
            "title": "News", "body": "b", "category": category,
        })  # fmt: skip

    unknown = await send("news")
    assert unknown.status_code == 422, unknown.text
    error = unknown.json()["error"]
    assert error["field"] == "category"
    assert "unknown category 'news'" in error["message"] and "transactional" in error["message"]
    await put_settings(admin, {"categories": ["news"]})
    for u, news in (("ds-in", True), ("ds-out", False)):
        assert (await patch_user(admin, u, consent={"news": news})).status_code == 200
    sent = await send("news")
    assert sent.status_code == 202, sent.text
    assert sent.json()["no_device"] == 1 and sent.json()["skipped"] == {"opted_out": 1}
