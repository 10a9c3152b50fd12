"""The OpenAPI schema says what validation enforces, so a client built from it is not refused.

Found with schemathesis against ``/openapi.json``: control characters, "exactly one of users or
devices", free-form objects' keys and limits, integers written ``3.0``, ``Allow`` on ``405``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def schemas(admin: AdminHarness) -> dict[str, Any]:
    r = await admin.client.get("/openapi.json")
    found: dict[str, Any] = r.json()["components"]["schemas"]
    return found


async def test_text_fields_say_they_refuse_control_characters(admin: AdminHarness) -> None:
    send = (await schemas(admin))["SendBody"]["properties"]
    one_line = re.compile(send["title"]["pattern"])
    multi_line = re.compile(send["body"]["pattern"])
    assert one_line.match("Spring sale") and not one_line.match("Spring\nsale")
    assert multi_line.match("line one\nline two") and not multi_line.match("bell\x07")
    body = {"app": "demo", "to": {"users": ["oa-u1"]}, "title": "a\x07b", "body": "b"}
    r = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert r.status_code == 422 and r.json()["error"]["field"] == "title"


async def test_the_target_schema_says_exactly_one_non_empty_list(admin: AdminHarness) -> None:
    target = (await schemas(admin))["Target"]
    assert (target["minProperties"], target["maxProperties"]) == (1, 1)
    for name in ("users", "devices"):
        assert target["properties"][name]["type"] == "array"
        assert target["properties"][name]["minItems"] == 1


async def test_free_form_objects_state_their_key_and_size_limits(admin: AdminHarness) -> None:
    found = await schemas(admin)
    for model, field in (("SendBody", "data"), ("EventIn", "props"), ("UserPatch", "attrs")):
        schema = found[model]["properties"][field]
        assert schema["propertyNames"]["minLength"] == 1, (model, field)
        assert schema["maxProperties"] == 64, (model, field)
        kinds = {k.get("type") for k in schema["additionalProperties"]["anyOf"]}
        assert {"null", "integer", "string", "array", "object"} <= kinds


async def test_an_integer_written_with_a_decimal_point_is_an_integer(admin: AdminHarness) -> None:
    found = await schemas(admin)
    ts = next(k for k in found["EventIn"]["properties"]["ts"]["anyOf"] if k["type"] == "integer")
    assert ts["minimum"] == 0
    body = {"app": "demo", "user": "oa-u2", "events": [{"name": "open", "ts": 1.7e12}]}
    assert (await admin.client.post("/v1/events", json=body, headers=admin.auth())).is_success
    body["events"] = [{"name": "open", "ts": "1700000000000"}]  # text is still not a number
    r = await admin.client.post("/v1/events", json=body, headers=admin.auth())
    assert r.status_code == 422


async def test_a_method_not_allowed_lists_every_allowed_one(admin: AdminHarness) -> None:
    r = await admin.client.options("/v1/campaigns", headers=admin.auth())
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, POST"
    r = await admin.client.patch("/v1/campaigns/x", params={"app": "demo"}, headers=admin.auth())
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE, GET, PUT"
