"""A retried admin request with the same Idempotency-Key answers the same and sends nothing new."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from rawclient import RawClient, open_session

from tidings.protocol.tokens import mint_token

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")


def message(user: str, body: str = "b") -> dict[str, Any]:
    return {"app": "demo", "to": {"users": [user]}, "kind": "inbox", "title": "t", "body": body,
            "category": "transactional"}  # fmt: skip


async def sent_to(admin: AdminHarness, user: str) -> int:
    r = await admin.client.get(f"/v1/users/{user}/export", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    return len(r.json()["messages"])


async def phone(admin: AdminHarness, user: str) -> RawClient:
    """A connected device of ``user``, so that sends to the user are stored and counted."""
    token = mint_token(secret=admin.demo.secret, app="demo", device=f"{user}-phone", user=user)
    return await open_session(admin.node.port, token)


def keyed(admin: AdminHarness, key: str) -> dict[str, str]:
    return {**admin.auth(), "Idempotency-Key": key}


async def test_a_retried_send_gets_the_first_answer_and_sends_nothing_new(
    admin: AdminHarness,
) -> None:
    device = await phone(admin, "idem-u1")
    first = await admin.client.post("/v1/messages", json=message("idem-u1"),
                                    headers=keyed(admin, "send-1"))  # fmt: skip
    again = await admin.client.post("/v1/messages", json=message("idem-u1"),
                                    headers=keyed(admin, "send-1"))  # fmt: skip
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await sent_to(admin, "idem-u1") == 1
    other = await admin.client.post("/v1/messages", json=message("idem-u1"),
                                    headers=keyed(admin, "send-2"))  # fmt: skip
    assert other.json()["message_id"] != first.json()["message_id"]
    await device.close()


async def test_retries_racing_the_first_attempt_never_send_twice(admin: AdminHarness) -> None:
    device = await phone(admin, "idem-u2")
    answers = await asyncio.gather(*(
        admin.client.post("/v1/messages", json=message("idem-u2"), headers=keyed(admin, "race"))
        for _ in range(5)
    ))  # fmt: skip
    ok = [a for a in answers if a.status_code == 202]
    assert ok and len({a.json()["message_id"] for a in ok}) == 1
    for busy in (a for a in answers if a.status_code != 202):
        assert busy.status_code == 409 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["field"] == "Idempotency-Key"
    assert await sent_to(admin, "idem-u2") == 1
    await device.close()


async def test_a_key_used_for_another_request_is_refused(admin: AdminHarness) -> None:
    r = await admin.client.post("/v1/messages", json=message("idem-u3", "one"),
                                headers=keyed(admin, "reuse"))  # fmt: skip
    assert r.status_code == 202
    r = await admin.client.post("/v1/messages", json=message("idem-u3", "two"),
                                headers=keyed(admin, "reuse"))  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
async def test_a_malformed_key_is_refused(admin: AdminHarness, key: str) -> None:
    r = await admin.client.post("/v1/messages", json=message("idem-u4"),
                                headers={**admin.auth(), "Idempotency-Key": key})  # fmt: skip
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "Idempotency-Key"


async def test_a_retried_campaign_create_and_start_run_it_once(admin: AdminHarness) -> None:
    for user in ("idem-c1", "idem-c2"):
        await admin.client.patch(f"/v1/users/{user}", headers=admin.auth(),
                                 json={"app": "demo", "attrs": {"cohort": "idem"}})  # fmt: skip
    spec = {"id": "idem", "app": "demo", "name": "Idem", "kind": "one_off",
            "segment": 'attr.cohort = "idem"',
            "content": {"kind": "inbox", "title": "t", "body": "b",
                        "category": "transactional"}}  # fmt: skip
    created = [await admin.client.post("/v1/campaigns", json=spec, headers=keyed(admin, "mk"))
               for _ in range(2)]  # fmt: skip
    assert [c.status_code for c in created] == [201, 201]
    assert created[0].json() == created[1].json()
    started = [await admin.client.post("/v1/campaigns/idem/start", params={"app": "demo"},
                                       headers=keyed(admin, "go")) for _ in range(2)]  # fmt: skip
    assert [s.status_code for s in started] == [200, 200]
    assert started[1].headers["Idempotent-Replayed"] == "true"
    assert await sent_to(admin, "idem-c1") == 1 and await sent_to(admin, "idem-c2") == 1
    plain = await admin.client.post("/v1/campaigns/idem/start", params={"app": "demo"},
                                    headers=admin.auth())  # fmt: skip
    assert plain.status_code == 409  # without the key a second start is refused, as before


async def test_a_refused_request_frees_its_key_for_the_corrected_retry(admin: AdminHarness) -> None:
    bad = {"id": "idem-fix", "app": "demo", "name": "Fix", "kind": "one_off",
           "segment": "attr.x = 1", "content": {"kind": "inbox", "title": "{{ user.",
                                                "body": "b"}}  # fmt: skip
    r = await admin.client.post("/v1/campaigns", json=bad, headers=keyed(admin, "fix"))
    assert r.status_code == 422, r.text
    good = {**bad, "content": {"kind": "inbox", "title": "t", "body": "b"}}
    r = await admin.client.post("/v1/campaigns", json=good, headers=keyed(admin, "fix"))
    assert r.status_code == 201, r.text
