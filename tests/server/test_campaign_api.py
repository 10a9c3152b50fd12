"""Campaigns, tag rules, users and events through the real admin API on a real node."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")


def campaign(cid: str, **changes: Any) -> dict[str, Any]:
    """A valid one-off marketing banner for the demo app, with some fields replaced."""
    spec: dict[str, Any] = {
        "id": cid,
        "app": "demo",
        "name": cid.replace("-", " ").title(),
        "kind": "one_off",
        "segment": f'attr.cohort = "{cid}"',
        "content": {"kind": "banner", "title": "Hi {{ user.first_name | default('there') }}",
                    "body": "20% off today", "category": "marketing"},
    }  # fmt: skip
    spec.update(changes)
    return spec


def assert_error(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["field"] == field, error
    assert error["message"]
    return error


async def patch_user(admin: AdminHarness, user: str, **body: Any) -> httpx.Response:
    return await admin.client.patch(f"/v1/users/{user}", json={"app": "demo", **body},
                                    headers=admin.auth())  # fmt: skip


async def create_and_start(admin: AdminHarness, spec: dict[str, Any]) -> dict[str, Any]:
    created = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert created.status_code == 201, created.text
    started = await admin.client.post(f"/v1/campaigns/{spec['id']}/start",
                                      params={"app": "demo"}, headers=admin.auth())  # fmt: skip
    assert started.status_code == 200, started.text
    body: dict[str, Any] = started.json()
    return body


async def decisions_of(admin: AdminHarness, cid: str, **params: Any) -> list[dict[str, Any]]:
    r = await admin.client.get(f"/v1/campaigns/{cid}/decisions",
                               params={"app": "demo", **params}, headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["decisions"]
    return found


# --- campaigns ---------------------------------------------------------------------------------


async def test_a_one_off_campaign_runs_to_users_made_through_the_api(admin: AdminHarness) -> None:
    for user, name in (("ca-u1", "Ada"), ("ca-u2", "Bo")):
        r = await patch_user(admin, user, attrs={"cohort": "launch", "first_name": name})
        assert r.status_code == 200, r.text
    events = {"app": "demo", "user": "ca-u3", "events": [{"name": "signup", "props": {"x": 1}}]}
    r = await admin.client.post("/v1/events", json=events, headers=admin.auth())
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    assert (await patch_user(admin, "ca-u3", attrs={"cohort": "launch"})).status_code == 200

    # Inbox and banner: a user with no device yet finds it in the inbox of their first device.
    both = {**campaign("launch")["content"], "kind": "both"}
    created = await admin.client.post("/v1/campaigns", json=campaign("launch", content=both),
                                      headers=admin.auth())  # fmt: skip
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft" and created.json()["sent_total"] == 0
    listed = await admin.client.get("/v1/campaigns", params={"app": "demo"}, headers=admin.auth())
    assert "launch" in [c["id"] for c in listed.json()["campaigns"]]

    started = await admin.client.post("/v1/campaigns/launch/start", params={"app": "demo"},
                                      headers=admin.auth())  # fmt: skip
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "completed" and started.json()["sent_total"] == 3

    mine = await decisions_of(admin, "launch", user="ca-u1")
    assert [d["reason"] for d in mine] == ["sent"] and mine[0]["message_id"]
    assert mine[0]["detail"] == "no device yet: kept in the user's inbox for their first device"
    assert {d["user"] for d in await decisions_of(admin, "launch")} == {"ca-u1", "ca-u2", "ca-u3"}

    stats = await admin.client.get("/v1/campaigns/launch/stats", params={"app": "demo"},
                                   headers=admin.auth())  # fmt: skip
    assert stats.status_code == 200, stats.text
    assert stats.json()["total"]["sent"] == 3

    exported = await admin.client.get("/v1/users/ca-u1/export", params={"app": "demo"},
                                      headers=admin.auth())  # fmt: skip
    assert exported.status_code == 200
    [message] = exported.json()["messages"]
    assert message["title"] == "Hi Ada" and message["campaign"] == "launch"
    assert "wire" not in message


async def test_campaign_errors_name_the_field(admin: AdminHarness) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        (campaign("bad-1", segment='attr.cohort = "x" and'), "segment", "^"),
        (campaign("bad-2", content={"kind": "banner", "title": "Hi {{ user.nickname }}",
                                    "body": "b"}), "content.title", "default"),
        (campaign("bad-3", content={"kind": "banner", "title": "T" * 40, "body": "b"}),
         "content.title", "30"),
        ({**campaign("bad-4"), "colour": "red"}, "colour", "colour"),
        ({**campaign("bad-5"), "app": 5}, "app", "app"),
        ({**campaign("bad-6"), "control_share": float("nan")}, "control_share", "finite"),
    ]  # fmt: skip
    for spec, field, hint in cases:
        raw = json.dumps(spec)  # allows NaN, as some clients do
        r = await admin.client.post(
            "/v1/campaigns",
            content=raw,
            headers={**admin.auth(), "Content-Type": "application/json"},
        )
        error = assert_error(r, 422, field)
        assert hint in error["message"], error
    not_json = await admin.client.post("/v1/campaigns", json=[1], headers=admin.auth())
    assert not_json.status_code == 422


async def test_a_running_campaign_cannot_be_edited_or_deleted(admin: AdminHarness) -> None:
    spec = campaign("running-1", kind="triggered", trigger={"event": "never_happens"})
    await create_and_start(admin, spec)
    edited = await admin.client.put("/v1/campaigns/running-1", json={**spec, "name": "New"},
                                    headers=admin.auth())  # fmt: skip
    assert assert_error(edited, 409, "status")["code"] == "conflict"
    deleted = await admin.client.delete("/v1/campaigns/running-1", params={"app": "demo"},
                                        headers=admin.auth())  # fmt: skip
    assert_error(deleted, 409, "status")
    again = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert_error(again, 409, "id")
    paused = await admin.client.post("/v1/campaigns/running-1/pause", params={"app": "demo"},
                                     headers=admin.auth())  # fmt: skip
    assert paused.json()["status"] == "paused"
    renamed = await admin.client.put("/v1/campaigns/running-1", json={**spec, "name": "New"},
                                     headers=admin.auth())  # fmt: skip
    assert renamed.status_code == 200 and renamed.json()["name"] == "New"
    mismatch = await admin.client.put("/v1/campaigns/running-1", json=campaign("other-id"),
                                      headers=admin.auth())  # fmt: skip
    assert_error(mismatch, 422, "id")
    cancelled = await admin.client.post("/v1/campaigns/running-1/cancel",
                                        params={"app": "demo"}, headers=admin.auth())  # fmt: skip
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["revoked"] == 0
    missing = await admin.client.get("/v1/campaigns/nope", params={"app": "demo"},
                                     headers=admin.auth())  # fmt: skip
    assert_error(missing, 404, "id")


async def test_a_draft_can_be_deleted(admin: AdminHarness) -> None:
    created = await admin.client.post("/v1/campaigns", json=campaign("draft-1"),
                                      headers=admin.auth())  # fmt: skip
    assert created.status_code == 201
    r = await admin.client.delete("/v1/campaigns/draft-1", params={"app": "demo"},
                                  headers=admin.auth())  # fmt: skip
    assert r.status_code == 204
    gone = await admin.client.get("/v1/campaigns/draft-1", params={"app": "demo"},
                                  headers=admin.auth())  # fmt: skip
    assert gone.status_code == 404


# --- consent, tags, erase ----------------------------------------------------------------------


async def test_an_opted_out_user_is_not_sent_marketing(admin: AdminHarness) -> None:
    await patch_user(admin, "co-u1", attrs={"cohort": "consent"})
    r = await patch_user(admin, "co-u1", consent={"marketing": False})
    assert r.status_code == 200 and r.json()["consent"] == {"marketing": False}
    refused = await patch_user(admin, "co-u1", consent={"transactional": False})
    assert_error(refused, 422, "consent.transactional")
    await create_and_start(admin, campaign("consent"))
    [decision] = await decisions_of(admin, "consent", user="co-u1")
    assert decision["reason"] == "opted_out"


async def test_a_tag_rule_tags_users_from_events_and_segments_count_them(
    admin: AdminHarness,
) -> None:
    rule = {"event": "view_content", "where": [{"prop": "category", "op": "eq",
                                                "value": "sports"}],
            "threshold": {"count": 2}, "window_s": 86400}  # fmt: skip
    put = await admin.client.put("/v1/tag-rules/fan", params={"app": "demo"}, json=rule,
                                 headers=admin.auth())  # fmt: skip
    assert put.status_code == 200, put.text
    assert put.json()["name"] == "fan"
    views = [{"name": "view_content", "props": {"category": "sports"}}] * 2
    for user in ("tg-u1", "tg-u2"):
        r = await admin.client.post("/v1/events", json={"app": "demo", "user": user,
                                                        "events": views},
                                    headers=admin.auth())  # fmt: skip
        assert r.status_code == 202, r.text
    profile = await admin.client.get("/v1/users/tg-u1", params={"app": "demo"},
                                     headers=admin.auth())  # fmt: skip
    assert profile.status_code == 200 and "fan" in profile.json()["tags"]
    preview = await admin.client.post("/v1/segments/preview",
                                      json={"app": "demo", "text": "tag:fan"},
                                      headers=admin.auth())  # fmt: skip
    assert preview.json()["count"] == 2
    rules = await admin.client.get("/v1/tag-rules", params={"app": "demo"}, headers=admin.auth())
    assert [r["name"] for r in rules.json()["rules"]] == ["fan"]
    one = await admin.client.get("/v1/tag-rules/fan", params={"app": "demo"},
                                 headers=admin.auth())  # fmt: skip
    assert one.json()["threshold"] == {"count": 2}
    bad = await admin.client.put("/v1/tag-rules/fan", params={"app": "demo"},
                                 json={**rule, "name": "other"}, headers=admin.auth())  # fmt: skip
    assert_error(bad, 422, "name")
    bad = await admin.client.put("/v1/tag-rules/fan", params={"app": "demo"},
                                 json={**rule, "window_s": -1}, headers=admin.auth())  # fmt: skip
    assert_error(bad, 422, "window_s")
    deleted = await admin.client.delete("/v1/tag-rules/fan", params={"app": "demo"},
                                        headers=admin.auth())  # fmt: skip
    assert deleted.status_code == 204
    profile = await admin.client.get("/v1/users/tg-u1", params={"app": "demo"},
                                     headers=admin.auth())  # fmt: skip
    assert "fan" not in profile.json()["tags"]
    again = await admin.client.delete("/v1/tag-rules/fan", params={"app": "demo"},
                                      headers=admin.auth())  # fmt: skip
    assert_error(again, 404, "name")


async def test_erase_forgets_the_user(admin: AdminHarness) -> None:
    await patch_user(admin, "er-u1", attrs={"cohort": "erase"})
    await admin.client.post("/v1/events", json={"app": "demo", "user": "er-u1",
                                                 "events": [{"name": "open", "ts": 1000}]},
                            headers=admin.auth())  # fmt: skip
    erased = await admin.client.delete("/v1/users/er-u1", params={"app": "demo"},
                                       headers=admin.auth())  # fmt: skip
    assert erased.status_code == 204
    gone = await admin.client.get("/v1/users/er-u1", params={"app": "demo"}, headers=admin.auth())
    assert_error(gone, 404, "id")
    exported = await admin.client.get("/v1/users/er-u1/export", params={"app": "demo"},
                                      headers=admin.auth())  # fmt: skip
    assert_error(exported, 404, "id")  # nothing is left to export
    again = await admin.client.delete("/v1/users/er-u1", params={"app": "demo"},
                                      headers=admin.auth())  # fmt: skip
    assert_error(again, 404, "id")


async def test_exporting_a_user_nobody_knows_is_not_found(admin: AdminHarness) -> None:
    r = await admin.client.get("/v1/users/never-seen/export", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    assert_error(r, 404, "id")


async def test_events_and_user_patches_are_validated(admin: AdminHarness) -> None:
    too_many = [{"name": "e"}] * 101
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/events", {"app": "demo", "user": "v", "events": too_many}, "events"),
        ("/v1/events", {"app": "demo", "user": "v", "events": []}, "events"),
        ("/v1/events", {"app": "demo", "user": "v", "events": [{"name": ""}]},
         "events[0].name"),
        ("/v1/events", {"app": "demo", "user": "v", "events": [{"name": "e", "ts": -1}]},
         "events[0].ts"),
        ("/v1/events", {"app": "demo", "user": "v",
                        "events": [{"name": "e", "props": {"a": {"b": {"c": {"d": {}}}}}}]},
         "props.a.b.c.d"),
    ]  # fmt: skip
    for path, body, field in cases:
        r = await admin.client.post(path, json=body, headers=admin.auth())
        assert_error(r, 422, field)
    r = await patch_user(admin, "v", attrs={"a": 2**60})
    assert_error(r, 422, "attrs.a")
    r = await patch_user(admin, "v", consent={"marketing": "no"})
    assert_error(r, 422, "consent.marketing")


# --- cross-app access --------------------------------------------------------------------------

_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/campaigns", campaign("x")),
    ("GET", "/v1/campaigns?app=demo", None),
    ("GET", "/v1/campaigns/launch?app=demo", None),
    ("PUT", "/v1/campaigns/x", campaign("x")),
    ("DELETE", "/v1/campaigns/launch?app=demo", None),
    ("POST", "/v1/campaigns/launch/start?app=demo", None),
    ("POST", "/v1/campaigns/launch/pause?app=demo", None),
    ("POST", "/v1/campaigns/launch/cancel?app=demo", None),
    ("GET", "/v1/campaigns/launch/stats?app=demo", None),
    ("GET", "/v1/campaigns/launch/decisions?app=demo", None),
    ("GET", "/v1/tag-rules?app=demo", None),
    ("GET", "/v1/tag-rules/fan?app=demo", None),
    ("PUT", "/v1/tag-rules/fan?app=demo", {"event": "e", "threshold": {"count": 1},
                                           "window_s": 60}),
    ("DELETE", "/v1/tag-rules/fan?app=demo", None),
    ("GET", "/v1/users/ca-u1?app=demo", None),
    ("PATCH", "/v1/users/ca-u1", {"app": "demo", "attrs": {"a": 1}}),
    ("GET", "/v1/users/ca-u1/export?app=demo", None),
    ("DELETE", "/v1/users/ca-u1?app=demo", None),
    ("POST", "/v1/events", {"app": "demo", "user": "ca-u1", "events": [{"name": "e"}]}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "body"), _ROUTES)
async def test_every_new_route_refuses_other_apps_and_missing_keys(
    admin: AdminHarness, method: str, url: str, body: dict[str, Any] | None
) -> None:
    r = await admin.client.request(method, url, json=body, headers=admin.auth(admin.other))
    assert_error(r, 403, "app")
    r = await admin.client.request(method, url, json=body)
    assert_error(r, 401, "authorization")
    unknown = url.replace("app=demo", "app=nope")
    if body is not None and "app" in body:
        body = {**body, "app": "nope"}
    r = await admin.client.request(method, unknown, json=body, headers=admin.auth())
    assert_error(r, 404, "app")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"conversion": {"event": "order_paid", "where": {"sku": {"a": 1}}}},
         "conversion.where.sku"),
        ({"conversion": {"event": "order_paid", "window_s": 10}}, "conversion.window_s"),
        ({"conversion": {"where": {"sku": "x"}}}, "conversion.event"),
        ({"min_sample_per_variant": -5}, "min_sample_per_variant"),
        ({"variants": [{"name": "a"}, {"name": "b"}],
          "rollout": {"test_share": 0, "decide_after_s": 3600}}, "rollout.test_share"),
        ({"variants": [{"name": "a"}, {"name": "b"}],
          "rollout": {"test_share": 0.2, "decide_after_s": 3600, "at_deadline": "later"}},
         "rollout.at_deadline"),
        ({"rollout": {"test_share": 0.2, "decide_after_s": 3600}}, "rollout"),
    ],
)  # fmt: skip
async def test_measurement_settings_are_validated_naming_the_field(
    admin: AdminHarness, changes: dict[str, Any], field: str
) -> None:
    r = await admin.client.post("/v1/campaigns", json=campaign("measure-bad", **changes),
                                headers=admin.auth())  # fmt: skip
    assert_error(r, 422, field)


async def test_measurement_settings_round_trip_with_their_defaults(admin: AdminHarness) -> None:
    spec = campaign("measure-ok", conversion={"event": "order_paid", "where": {"sku": "x"}},
                    variants=[{"name": "a"}, {"name": "b"}], min_sample_per_variant=200,
                    rollout={"test_share": 0.2, "decide_after_s": 86400})  # fmt: skip
    r = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["conversion"] == {
        "event": "order_paid",
        "window_s": 259200,
        "where": [{"prop": "sku", "op": "eq", "value": "x"}],
    }
    assert body["min_sample_per_variant"] == 200
    assert body["rollout"] == {"test_share": 0.2, "decide_after_s": 86400, "check_every_s": 300,
                               "at_deadline": "best"}  # fmt: skip
    stats = await admin.client.get("/v1/campaigns/measure-ok/stats", params={"app": "demo"},
                                   headers=admin.auth())  # fmt: skip
    assert stats.json()["rollout"]["phase"] == "not_started"
    assert stats.json()["verdict"]["min_sample_per_variant"] == 200
