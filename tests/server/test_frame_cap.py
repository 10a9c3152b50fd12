"""Nothing is accepted whose deliver frame would pass the frame cap (PROTOCOL.md §7).

Such a message would be refused by every device at every reconnect and wedge its queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_direct_send_whose_frame_would_pass_the_cap_is_refused_naming_the_field(
    admin: AdminHarness,
) -> None:
    # ~210 KB of JSON: under the request limit, every field valid, yet a ~210 KB deliver frame.
    data = {f"k{i}": "x" * 3500 for i in range(60)}
    body = {"app": "demo", "to": {"users": ["cap-u1"]}, "kind": "inbox", "title": "t",
            "body": "b", "data": data}  # fmt: skip
    r = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "data", error
    assert "frame cap" in error["message"] and "65,536" in error["message"]


async def test_a_direct_send_just_under_the_cap_is_accepted(admin: AdminHarness) -> None:
    data = {f"k{i}": "x" * 900 for i in range(60)}  # ~54 KB
    body = {"app": "demo", "to": {"users": ["cap-u1"]}, "kind": "inbox", "title": "t",
            "body": "b", "data": data, "category": "transactional"}  # fmt: skip
    r = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
    assert r.status_code == 202, r.text


async def test_a_campaign_skips_a_user_whose_rendered_message_would_pass_the_cap(
    admin: AdminHarness,
) -> None:
    for user, blob in (("cap-big", "x" * 4000), ("cap-small", "x")):
        r = await admin.client.patch(f"/v1/users/{user}", headers=admin.auth(), json={
            "app": "demo", "attrs": {"cohort": "cap", "blob": blob}})  # fmt: skip
        assert r.status_code == 200, r.text
    spec: dict[str, Any] = {
        "id": "cap", "app": "demo", "name": "cap", "kind": "one_off",
        "segment": 'attr.cohort = "cap"',
        "content": {"kind": "inbox", "title": "Hi", "body": "b", "category": "transactional",
                    "data": {f"k{i}": "{{ user.blob | default('') }}" for i in range(20)}},
    }  # fmt: skip
    assert (await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())).is_success
    r = await admin.client.post("/v1/campaigns/cap/start", params={"app": "demo"},
                                headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    r = await admin.client.get("/v1/campaigns/cap/decisions", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    why = {d["user"]: d for d in r.json()["decisions"]}
    assert why["cap-small"]["reason"] == "sent"
    assert why["cap-big"]["reason"] == "too_large"
    assert "frame cap" in why["cap-big"]["detail"]
