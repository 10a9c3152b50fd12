"""Caps, per-user limits and budgets hold under concurrent requests through the admin API.

Each test fires its requests together (``asyncio.gather`` over real HTTP), the way a busy
marketing team and a busy app do; every invariant is checked from what was stored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from rawclient import open_session

from tidings.protocol.frames import Deliver
from tidings.protocol.tokens import mint_token

if TYPE_CHECKING:
    from tests.server.conftest import AdminHarness

pytestmark = pytest.mark.asyncio(loop_scope="module")


def marketing(cid: str, segment: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": cid, "app": "demo", "name": cid, "kind": "one_off", "segment": segment,
        "content": {"kind": "inbox", "title": "Hi", "body": "20% off", "category": "marketing"},
    }  # fmt: skip
    return {**spec, **changes}


async def users(admin: AdminHarness, prefix: str, n: int, cohort: str) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for user in ids:
        r = await admin.client.patch(f"/v1/users/{user}", headers=admin.auth(),
                                     json={"app": "demo", "attrs": {"cohort": cohort}})  # fmt: skip
        assert r.status_code == 200, r.text
    return ids


async def create(admin: AdminHarness, spec: dict[str, Any]) -> None:
    r = await admin.client.post("/v1/campaigns", json=spec, headers=admin.auth())
    assert r.status_code == 201, r.text


async def start(admin: AdminHarness, cid: str) -> None:
    r = await admin.client.post(f"/v1/campaigns/{cid}/start", params={"app": "demo"},
                                headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text


async def messages_of(admin: AdminHarness, user: str) -> list[dict[str, Any]]:
    r = await admin.client.get(f"/v1/users/{user}/export", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["messages"]
    return found


async def reasons(admin: AdminHarness, cid: str) -> list[str]:
    r = await admin.client.get(f"/v1/campaigns/{cid}/decisions", headers=admin.auth(),
                               params={"app": "demo", "limit": 1000})  # fmt: skip
    assert r.status_code == 200, r.text
    return sorted(d["reason"] for d in r.json()["decisions"])


async def track(admin: AdminHarness, user: str, name: str) -> None:
    body = {"app": "demo", "user": user, "events": [{"name": name, "props": {}}]}
    r = await admin.client.post("/v1/events", json=body, headers=admin.auth())
    assert r.status_code == 202, r.text


async def test_a_basic_user_targeted_by_four_campaigns_started_together_gets_exactly_two(
    admin: AdminHarness,
) -> None:
    people = await users(admin, "four", 20, "four")
    cids = [f"four-{i}" for i in range(4)]
    for cid in cids:
        await create(admin, marketing(cid, 'attr.cohort = "four"'))
    await asyncio.gather(*(start(admin, cid) for cid in cids))
    for user in people:
        assert len(await messages_of(admin, user)) == 2, user  # the basic cap, used in full
    every = [r for cid in cids for r in await reasons(admin, cid)]
    assert every.count("sent") == 40 and every.count("capped_tier") == 40


async def test_a_triggered_budget_holds_when_its_triggers_arrive_together(
    admin: AdminHarness,
) -> None:
    people = await users(admin, "budget", 10, "budget")
    spec = marketing("budget", 'attr.cohort = "budget"', kind="triggered",
                     trigger={"event": "budget_go"}, frequency={"total_budget": 3})  # fmt: skip
    await create(admin, spec)
    await start(admin, "budget")
    await asyncio.gather(*(track(admin, user, "budget_go") for user in people))
    assert sum([len(await messages_of(admin, u)) for u in people]) == 3
    assert (await reasons(admin, "budget")).count("sent") == 3
    for user in people:  # why not? asked per user, even after the campaign completed
        r = await admin.client.get("/v1/campaigns/budget/decisions", headers=admin.auth(),
                                   params={"app": "demo", "user": user})  # fmt: skip
        assert r.json()["decisions"][0]["reason"] in ("sent", "budget_exhausted"), r.text
    r = await admin.client.get("/v1/campaigns/budget", params={"app": "demo"},
                               headers=admin.auth())  # fmt: skip
    assert r.json()["sent_total"] == 3 and r.json()["status"] == "completed"


async def test_a_per_user_limit_holds_when_one_users_triggers_arrive_together(
    admin: AdminHarness,
) -> None:
    (user,) = await users(admin, "once", 1, "once")
    spec = marketing("once", 'attr.cohort = "once"', kind="triggered",
                     trigger={"event": "once_go"}, frequency={"per_user_limit": 1})  # fmt: skip
    await create(admin, spec)
    await start(admin, "once")
    await asyncio.gather(*(track(admin, user, "once_go") for _ in range(5)))
    assert len(await messages_of(admin, user)) == 1
    got = await reasons(admin, "once")
    assert got.count("sent") == 1 and got.count("capped_campaign") == 4


async def test_direct_marketing_sends_count_toward_caps_at_once(admin: AdminHarness) -> None:
    (user,) = await users(admin, "direct", 1, "direct")
    token = mint_token(secret=admin.demo.secret, app="demo", device="direct-phone", user=user)
    phone = await open_session(admin.node.port, token)

    async def direct() -> dict[str, Any]:
        body = {"app": "demo", "to": {"users": [user]}, "kind": "inbox", "title": "t",
                "body": "b", "category": "marketing"}  # fmt: skip
        r = await admin.client.post("/v1/messages", json=body, headers=admin.auth())
        assert r.status_code == 202, r.text
        answer: dict[str, Any] = r.json()
        return answer

    answers = await asyncio.gather(direct(), direct(), direct())
    assert sorted(a["users"] for a in answers) == [0, 1, 1]
    assert [a["skipped"] for a in answers if a["users"] == 0] == [{"capped_tier": 1}]
    shown = {(await phone.recv_until(Deliver)).msg.id for _ in range(2)}
    assert shown == {a["message_id"] for a in answers if a["users"] == 1}
    assert await phone.nothing_for()
    await create(admin, marketing("after-direct", 'attr.cohort = "direct"'))
    await start(admin, "after-direct")
    assert await reasons(admin, "after-direct") == ["capped_tier"]
    assert len(await messages_of(admin, user)) == 2
    transactional = {"app": "demo", "to": {"users": [user]}, "kind": "inbox", "title": "t",
                     "body": "shipped", "category": "transactional"}  # fmt: skip
    r = await admin.client.post("/v1/messages", json=transactional, headers=admin.auth())
    assert r.json()["users"] == 1 and r.json()["skipped"] == {}  # caps do not apply
    await phone.close()
