"""Store contract: the send invariants hold between two stores on the same data.

Two gateway processes each open a store of their own (their own connections or pool) on one
database. Caps, budgets, sequence numbers, claims, status changes and idempotency keys must
hold between them as they do inside one store: these tests give each of two store objects
half of the concurrent writes. Implementations listed in ``UNSHARED`` are left out.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tidings.server.errors import ClaimLost
from tidings.server.storage import Limit, Outcome, SendRow, Store

from .conftest import NOW, STORE_FACTORIES, UNSHARED
from .test_contract_sends import DAY, TIER, devices, message, pending_work, send


@pytest_asyncio.fixture(params=[name for name in STORE_FACTORIES if name not in UNSHARED])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[tuple[Store, Store]]:
    """Two open stores of one implementation on the same (empty) data, as two processes."""
    async with STORE_FACTORIES[request.param](tmp_path) as make:
        first, second = make(), make()
        await first.open()
        try:
            await second.open()
            try:
                yield first, second
            finally:
                await second.close()
        finally:
            await first.close()


async def test_a_cap_is_used_exactly_by_senders_in_two_processes(
    pair: tuple[Store, Store],
) -> None:
    users = await devices(pair[0], 20)
    results = await asyncio.gather(*(send(pair[i % 2], users, limits=(TIER,)) for i in range(6)))
    got = {u: 0 for u in users}
    for mid, committed in results:
        for dev, _ in committed.deliveries.get(mid, ()):
            got[dev.removesuffix("-phone")] += 1
    assert set(got.values()) == {2}
    refused = [r for _, c in results for r in c.refused]
    assert len(refused) == 80 and {r.reason for r in refused} == {"capped_tier"}


async def test_a_per_user_campaign_limit_holds_across_two_processes(
    pair: tuple[Store, Store],
) -> None:
    users = await devices(pair[1], 5)
    once = Limit(1, None, "capped_campaign", "campaign: 1 per user", campaign="c1")
    results = await asyncio.gather(
        *(send(pair[i % 2], users, campaign="c1", limits=(once,)) for i in range(4))
    )
    assert sum(c.sent for _, c in results) == 5
    assert {r.reason for _, c in results for r in c.refused} == {"capped_campaign"}


async def test_a_budget_is_never_exceeded_by_commits_in_two_processes(
    pair: tuple[Store, Store],
) -> None:
    await pair[0].save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    users = await devices(pair[0], 12)
    results = await asyncio.gather(
        *(
            send(pair[i % 2], {u: ds}, campaign="c1", budget=5)
            for i, (u, ds) in enumerate(users.items())
        )
    )
    assert sum(c.sent for _, c in results) == 5
    refused = [r for _, c in results for r in c.refused]
    assert len(refused) == 7 and {r.reason for r in refused} == {"budget_exhausted"}
    for store in pair:
        (row,) = await store.campaigns("a")
        assert row.sent_total == 5


async def test_commits_in_two_processes_never_share_or_skip_a_sequence_number(
    pair: tuple[Store, Store],
) -> None:
    users = await devices(pair[0], 3)
    results = await asyncio.gather(*(send(pair[i % 2], users) for i in range(30)))
    for d in ("u0-phone", "u1-phone", "u2-phone"):
        seqs = sorted(s for mid, c in results for dev, s in c.deliveries[mid] if dev == d)
        assert seqs == list(range(1, 31))
    assert [p.seq for p in await pair[1].pending("a", "u0-phone", 28, NOW)] == [29, 30]


async def test_due_work_is_claimed_once_by_schedulers_in_two_processes(
    pair: tuple[Store, Store],
) -> None:
    await pending_work(pair[0], *(NOW - i for i in range(1, 21)))
    got = await asyncio.gather(*(pair[i % 2].claim_due(f"s{i}", NOW, 30, 7) for i in range(6)))
    claimed = sorted(p.id for batch in got for p in batch)
    assert len(claimed) == 20 and len(set(claimed)) == 20
    assert await pair[1].next_due() == NOW + 30


async def test_a_commit_on_a_claim_lost_to_another_process_is_refused_whole(
    pair: tuple[Store, Store],
) -> None:
    slow, other = pair
    await pending_work(slow, NOW - 5)
    await devices(slow, 1)
    (work,) = await slow.claim_due("slow", NOW, 30, 100)
    (again,) = await other.claim_due("other", NOW + 31, 30, 100)
    assert again.id == work.id
    mid = uuid.uuid4().hex
    outcome = Outcome(
        sends=[SendRow(user_key="u0", at=NOW, category="marketing", message_id=mid)],
        done_pending=[work.id],
        claim="slow",
    )
    with pytest.raises(ClaimLost):
        await slow.commit("a", outcome, [message(mid, [("u0-phone", "u0")])])
    assert await other.pending("a", "u0-phone", 0, NOW) == []
    await other.commit("a", Outcome(done_pending=[work.id], claim="other"))
    assert await slow.count_pending("a", "c1") == 0


async def test_a_status_change_happens_once_when_two_processes_ask(
    pair: tuple[Store, Store],
) -> None:
    await pair[0].save_campaign("a", "c1", {"id": "c1"}, "draft", NOW)
    changed = await asyncio.gather(
        *(
            pair[i % 2].set_campaign_status("a", "c1", "running", NOW, expect=["draft"])
            for i in range(6)
        )
    )
    assert sorted(changed) == [False] * 5 + [True]


async def test_an_idempotency_key_is_taken_once_when_two_processes_ask(
    pair: tuple[Store, Store],
) -> None:
    taken = await asyncio.gather(
        *(pair[i % 2].begin_request("a", "k1", "fp", NOW, 30) for i in range(6))
    )
    assert sum(1 for row in taken if row is None) == 1
    await pair[0].finish_request("a", "k1", 201, '{"ok": true}')
    row = await pair[1].begin_request("a", "k1", "fp", NOW + 1, 30)
    assert row is not None and (row.status, row.answer) == (201, '{"ok": true}')
    # A lapsed lease is taken over by one of the processes asking, not by both.
    await pair[0].begin_request("a", "k2", "fp", NOW, 30)
    late = await asyncio.gather(
        *(pair[i % 2].begin_request("a", "k2", "fp", NOW + 31, 30) for i in range(4))
    )
    assert sum(1 for row in late if row is None) == 1


async def test_caps_count_what_the_other_process_sent_in_the_window(
    pair: tuple[Store, Store],
) -> None:
    users = await devices(pair[0], 1)
    await send(pair[0], users, at=NOW - 2 * DAY)
    await send(pair[1], users, at=NOW - DAY)
    mid, committed = await send(pair[0], users, limits=(TIER,))
    assert [r.reason for r in committed.refused] == ["capped_tier"]
    assert mid not in committed.deliveries


async def test_a_rollout_is_decided_once_by_schedulers_in_two_processes(
    pair: tuple[Store, Store],
) -> None:
    await pair[0].save_campaign("a", "c1", {"id": "c1"}, "running", now=NOW)
    testing = {"phase": "testing", "started_at": NOW, "deadline": NOW + 60}
    assert await pair[0].swap_rollout("a", "c1", None, testing) == testing
    got = await asyncio.gather(*(
        pair[i % 2].swap_rollout("a", "c1", testing, testing | {"phase": "rolled_out", "row": i})
        for i in range(8)
    ))  # fmt: skip
    assert len({json.dumps(g, sort_keys=True) for g in got}) == 1  # everyone sees one decision
    assert got[0] == (await pair[1].rollout_states("a"))["c1"]
