"""Segment preview over stored profiles, through the real admin API."""

from __future__ import annotations

import pytest
from rawclient import open_session

from tidings.protocol.frames import Identify, Ok
from tidings.protocol.tokens import mint_token

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_preview_counts_matching_users_in_text_and_json_and_names_parse_errors(
    admin,  # type: ignore[no-untyped-def]
) -> None:
    people = [("pv-u0", "PV-EAST", 20), ("pv-u1", "PV-EAST", 31), ("pv-u2", "PV-WEST", 40)]
    for user, region, age in people:
        token = mint_token(secret=admin.demo.secret, app="demo", device=f"dev-{user}", user=user)
        client = await open_session(admin.node.port, token)
        await client.send(Identify(rid=1, user=user, attrs={"region": region, "age": age}))
        assert await client.recv_until(Ok) == Ok(rid=1)
        await client.close()
    text = 'attr.region = "PV-EAST" and attr.age >= 25'
    r = await admin.client.post("/v1/segments/preview", json={"app": "demo", "text": text},
                                headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["count"], body["sample"]) == (1, ["pv-u1"])
    same = await admin.client.post(
        "/v1/segments/preview", json={"app": "demo", "segment": body["segment"]},
        headers=admin.auth(),
    )  # fmt: skip
    assert same.json()["count"] == 1 and same.json()["text"] == body["text"]
    bad = await admin.client.post("/v1/segments/preview",
                                  json={"app": "demo", "text": 'attr.region = "PV-EAST" and'},
                                  headers=admin.auth())  # fmt: skip
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["field"] == "text" and "^" in error["message"]
    other = await admin.client.post("/v1/segments/preview", json={"app": "demo", "text": text},
                                    headers=admin.auth(admin.other))  # fmt: skip
    assert other.status_code == 403
    both = await admin.client.post(
        "/v1/segments/preview",
        json={"app": "demo", "text": text, "segment": body["segment"]},
        headers=admin.auth(),
    )
    assert both.status_code == 422 and both.json()["error"]["field"] == "text"
