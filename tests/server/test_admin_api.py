"""The admin HTTP API over real HTTP against a real node."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tidings.server.admin import MAX_REQUEST_BYTES, MAX_TARGETS
from tidings.server.errors import StoreError

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")

VALID: dict[str, Any] = {
    "app": "demo",
    "to": {"users": ["alice", "bob"]},
    "kind": "banner",
    "title": "Spring sale",
    "body": "20% off everything today",
}


def with_(**changes: Any) -> dict[str, Any]:
    """The valid body with some fields replaced (``None`` removes a field)."""
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not None}


async def post_raw(admin: AdminHarness, content: bytes, **headers: str) -> httpx.Response:
    return await admin.client.post(
        "/v1/messages",
        content=content,
        headers={**admin.auth(), "Content-Type": "application/json", **headers},
    )


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]
    if field is not None:
        assert field in error["message"]
    assert isinstance(error["details"], list) and error["details"]


# --- authentication ----------------------------------------------------------------------------


async def test_send_without_a_key_is_401(admin: AdminHarness) -> None:
    response = await admin.client.post("/v1/messages", json=VALID)
    assert_error(response, 401, "unauthorized", "authorization")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-key-123", "Bearer", "Basic ZGVtbzpkZW1v", "{key}", "Bearer {key}x", "Bearer é"],
)
async def test_send_with_a_bad_key_is_401(admin: AdminHarness, header: str) -> None:
    raw = {b"Authorization": header.format(key=admin.demo.admin_key).encode("utf-8")}
    response = await admin.client.post("/v1/messages", json=VALID, headers=raw)
    assert_error(response, 401, "unauthorized", "authorization")


async def test_unauthenticated_request_learns_nothing_about_validation(
    admin: AdminHarness,
) -> None:
    response = await admin.client.post("/v1/messages", json={"app": 5})
    assert_error(response, 401, "unauthorized", "authorization")


async def test_send_with_another_apps_key_is_403(admin: AdminHarness) -> None:
    response = await admin.client.post("/v1/messages", json=VALID, headers=admin.auth(admin.other))
    assert_error(response, 403, "forbidden", "app")


async def test_revoke_with_another_apps_key_is_403(admin: AdminHarness) -> None:
    sent = await admin.client.post("/v1/messages", json=VALID, headers=admin.auth())
    message_id = sent.json()["message_id"]
    response = await admin.client.delete(
        f"/v1/messages/{message_id}", params={"app": "demo"}, headers=admin.auth(admin.other)
    )
    assert_error(response, 403, "forbidden", "app")
    # The other app's own namespace has no such message either.
    response = await admin.client.delete(
        f"/v1/messages/{message_id}", params={"app": "other"}, headers=admin.auth(admin.other)
    )
    assert_error(response, 404, "not_found", "id")


async def test_unknown_app_is_404_naming_the_field(admin: AdminHarness) -> None:
    response = await admin.client.post("/v1/messages", json=with_(app="nope"), headers=admin.auth())
    assert_error(response, 404, "not_found", "app")


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_(kind="popup"), "kind"),
        (with_(title="x" * 31), "title"),
        (with_(kind="both", title="x" * 31), "title"),
        (with_(body="x" * 51), "body"),
        (with_(title=""), "title"),
        (with_(title=None), "title"),
        (with_(to={"users": ["a"], "devices": ["d"]}), "to"),
        (with_(to={}), "to"),
        (with_(to={"users": []}), "to.users"),
        (with_(to={"users": ["ok", ""]}), "to.users[1]"),
        (with_(to={"users": ["a\nb"]}), "to.users[0]"),
        (with_(to={"users": [f"u{i}" for i in range(MAX_TARGETS + 1)]}), "to.users"),
        (with_(to={"groups": ["a"]}), "to.groups"),
        (with_(to=None), "to"),
        (with_(ttl=-1), "ttl"),
        (with_(ttl=0), "ttl"),
        (with_(ttl=31 * 24 * 3600), "ttl"),
        (with_(ttl="60"), "ttl"),
        (with_(ttl=1.5), "ttl"),
        (with_(ttl=True), "ttl"),
        (with_(category="spam"), "category"),
        (with_(priority=3), "priority"),
        (with_(image="ftp://example.com/a.png"), "image"),
        (with_(actions=[{"id": "a", "label": "A"}] * 6), "actions"),
        (with_(actions=[{"id": "a", "label": "A"}, {"id": "a", "label": "B"}]), "actions"),
        (
            with_(actions=[{"id": "a", "label": "A", "url": "javascript:alert(1)"}]),
            "actions[0].url",
        ),
        (with_(data={"x": {"y": {"z": {"w": {"v": 1}}}}}), "data.x.y.z.w"),
        (with_(data={"k": "v" * 5000}), "data.k"),
        (with_(data=[1, 2]), "data"),
        (with_(expire_after_read="yes"), "expire_after_read"),
        (with_(titel="typo"), "titel"),
        (with_(app=""), "app"),
        (with_(title="Hi {{ user.first_name }}"), "title"),  # not personalised: say so
        (with_(body="{% if user.vip %}VIP{% endif %}"), "body"),
    ],
)
async def test_invalid_send_is_422_naming_the_field(
    admin: AdminHarness, body: dict[str, Any], field: str
) -> None:
    response = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert_error(response, 422, "invalid_field", field)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (json.dumps(with_(ttl=float("nan"))), "ttl"),
        (json.dumps(with_(data={"price": float("inf")})), "data.price"),
        (json.dumps(with_(data={"price": float("-inf")})), "data.price"),
        (json.dumps(with_(title="\ud800 broken")), "title"),
        (json.dumps(with_(data={"\udfff": 1})), "data"),
    ],
)
async def test_non_finite_numbers_and_broken_text_are_422(
    admin: AdminHarness, raw: str, field: str
) -> None:
    response = await post_raw(admin, raw.encode("ascii"))
    assert_error(response, 422, "invalid_field", field)


async def test_inbox_messages_have_the_longer_inbox_limits(admin: AdminHarness) -> None:
    body = with_(kind="inbox", title="t" * 100, body="b" * 1500)
    response = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert response.status_code == 202, response.text
    response = await admin.client.post(
        "/v1/messages", json=with_(kind="inbox", body="b" * 2001), headers=admin.auth()
    )
    assert_error(response, 422, "invalid_field", "body")


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"app": "\xff\xfe"}', b"\xff" * 10, b"[" * 100_000, b'{"n": 1' + b"0" * 5000 + b"}"],
)
async def test_unparseable_body_is_400(admin: AdminHarness, raw: bytes) -> None:
    response = await post_raw(admin, raw)
    assert_error(response, 400, "invalid_json", "body")


@pytest.mark.parametrize("raw", [b"[]", b'"hello"', b"null", b"42"])
async def test_body_that_is_not_an_object_is_422(admin: AdminHarness, raw: bytes) -> None:
    response = await post_raw(admin, raw)
    assert_error(response, 422, "invalid_field", "body")


async def test_body_over_the_size_limit_is_413(admin: AdminHarness) -> None:
    big = json.dumps(with_(data={"pad": "x" * 4000})).encode()
    big = big + b" " * (MAX_REQUEST_BYTES + 1 - len(big))
    response = await post_raw(admin, big)
    assert_error(response, 413, "payload_too_large", "body")


async def test_chunked_body_over_the_size_limit_is_413(admin: AdminHarness) -> None:
    async def chunks() -> Any:
        for _ in range(MAX_REQUEST_BYTES // 4096 + 2):
            yield b" " * 4096

    response = await admin.client.post(
        "/v1/messages",
        content=chunks(),
        headers={**admin.auth(), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "payload_too_large", "body")


# --- sending and revoking ----------------------------------------------------------------------


async def test_valid_send_is_202_with_the_message_id(admin: AdminHarness) -> None:
    body = with_(
        to={"users": ["alice", "bob", "alice"]},
        kind="both",
        ttl=600,
        collapse_key="sale",
        image="https://example.com/sale.png",
        actions=[{"id": "shop", "label": "Shop now", "url": "app://sale"}],
        data={"coupon": "SPRING", "pct": 20, "nested": {"ok": [1, 2.5, None, True]}},
        priority="urgent",
        expire_after_read=True,
    )
    response = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["message_id"]
    assert result["ids"] == [result["message_id"]]
    assert isinstance(result["devices"], int) and result["devices"] >= 0
    assert isinstance(result["users"], int) and 0 <= result["users"] <= 2
    assert isinstance(result["skipped"], dict)


async def test_send_to_devices_is_202(admin: AdminHarness) -> None:
    body = with_(to={"devices": ["phone-1"]}, kind="inbox", category="transactional")
    response = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert response.status_code == 202, response.text


async def test_revoking_a_sent_message_is_204(admin: AdminHarness) -> None:
    body = with_(to={"devices": ["phone-1"]})
    sent = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    message_id = sent.json()["message_id"]
    response = await admin.client.delete(
        f"/v1/messages/{message_id}", params={"app": "demo"}, headers=admin.auth()
    )
    assert response.status_code == 204, response.text
    assert response.content == b""


async def test_revoking_an_unknown_message_is_404(admin: AdminHarness) -> None:
    response = await admin.client.delete(
        "/v1/messages/no-such-message", params={"app": "demo"}, headers=admin.auth()
    )
    assert_error(response, 404, "not_found", "id")


async def test_a_request_without_app_acts_on_the_app_of_its_key(admin: AdminHarness) -> None:
    # Each admin key belongs to one app: ?app= is needed only to name it explicitly.
    response = await admin.client.delete("/v1/messages/m1", headers=admin.auth())
    assert_error(response, 404, "not_found", "id")
    assert "in app 'demo'" in response.json()["error"]["message"]
    listed = await admin.client.get("/v1/campaigns", headers=admin.auth())
    assert listed.status_code == 200, listed.text
    other = await admin.client.delete("/v1/messages/m1", params={"app": "other"},
                                      headers=admin.auth())  # fmt: skip
    assert other.status_code in (403, 404) and other.json()["error"]["field"] == "app"
    empty = await admin.client.get("/v1/campaigns", params={"app": ""}, headers=admin.auth())
    assert_error(empty, 422, "invalid_field", "app")


# --- operations --------------------------------------------------------------------------------


async def test_healthz_needs_no_key_and_counts_connections(admin: AdminHarness) -> None:
    response = await admin.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "connections": 0, "node": admin.node.node_id,
                               "store": "ok", "broker": "in-process",
                               "feed": "single-node"}  # fmt: skip


async def test_healthz_says_503_when_the_store_does_not_answer(admin: AdminHarness) -> None:
    real = admin.node.store.ping

    async def down() -> None:
        raise StoreError("db: disk unplugged", temporary=True)

    admin.node.store.ping = down  # type: ignore[method-assign]
    try:
        response = await admin.client.get("/healthz")
    finally:
        admin.node.store.ping = real  # type: ignore[method-assign]
    assert response.status_code == 503
    assert response.json()["status"] == "degraded" and response.json()["store"] == "unreachable"


async def test_metrics_are_prometheus_text(admin: AdminHarness) -> None:
    response = await admin.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.strip()


async def test_openapi_describes_the_api(admin: AdminHarness) -> None:
    response = await admin.client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "post" in schema["paths"]["/v1/messages"]
    assert "delete" in schema["paths"]["/v1/messages/{message_id}"]
    assert "/healthz" in schema["paths"]
    assert any(
        s.get("scheme") == "bearer" for s in schema["components"]["securitySchemes"].values()
    )


async def test_unknown_endpoint_and_method_use_the_error_shape(admin: AdminHarness) -> None:
    assert_error(await admin.client.get("/v1/nothing"), 404, "not_found", None)
    assert_error(await admin.client.get("/v1/messages"), 405, "method_not_allowed", None)


# --- no input makes it fail --------------------------------------------------------------------

_NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1e308,
    -0.0,
    "",
    "x" * 5000,
    "'; DROP TABLE messages; --",
    "{{ user.secret }}",
    "\u202e\u0000",
    [],
    [None],
    {},
    {"users": None},
    {"": {"": {"": {"": {"": 1}}}}},
]


async def test_every_field_mutated_to_nasty_values_never_fails_the_server(
    admin: AdminHarness,
) -> None:
    full = with_(
        kind="both",
        ttl=60,
        collapse_key="k",
        image="https://example.com/a.png",
        actions=[{"id": "a", "label": "A", "url": "app://a"}],
        data={"k": 1},
    )
    bodies: list[Any] = [value for value in _NASTY]
    for key in [*full, "extra"]:
        for value in _NASTY:
            bodies.append({**full, key: value})
    for key in ("users", "devices"):
        for value in _NASTY:
            bodies.append({**full, "to": {key: value}})
            bodies.append({**full, "to": {key: [value]}})
    for value in _NASTY:
        bodies.append({**full, "actions": [value]})
        bodies.append({**full, "actions": [{"id": value, "label": value, "url": value}]})
    for body in bodies:
        response = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
        assert response.status_code < 500, (body, response.text)
        if response.status_code >= 400:
            assert response.json()["error"]["code"], response.text
    for path in ["/v1/messages/%00", "/v1/messages/" + "x" * 500, "/v1/messages/%ED%A0%80"]:
        for params in [{"app": "demo"}, {"app": ""}, {"app": "x" * 100}, {}]:
            response = await admin.client.delete(path, params=params, headers=admin.auth())
            assert 400 <= response.status_code < 500, (path, params, response.text)


async def test_body_sent_as_a_form_is_told_to_use_json(admin: AdminHarness) -> None:
    response = await admin.client.post(
        "/v1/messages",
        content=b"app=demo&title=hi",
        headers={**admin.auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 422, "invalid_field", "body")
    assert "application/json" in response.json()["error"]["message"]


async def test_a_body_that_trickles_in_too_slowly_is_408() -> None:
    from tidings.server.admin.api import _BodyLimit

    async def never_called(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see an incomplete body")

    async def slow_receive() -> dict[str, Any]:
        await asyncio.sleep(1)
        return {"type": "http.request", "body": b" ", "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    guard = _BodyLimit(never_called, timeout=0.05)
    await guard({"type": "http", "headers": []}, slow_receive, send)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "timeout"
