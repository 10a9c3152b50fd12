"""Store contract: sends are numbered, capped, budgeted and claimed inside the commit.

Every invariant here must hold for concurrent commits too: the tests fire them together.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidings.server.errors import CampaignInactive, ClaimLost, SettingsChanged
from tidings.server.storage import (
    Committed,
    DecisionRow,
    Limit,
    Outcome,
    OutMessage,
    PendingSend,
    Progress,
    SendRow,
    Store,
)
from tidings.server.storage.admission import settings_fingerprint

from .conftest import NOW, device

DAY = 86_400.0
WEEK = 7 * DAY
TIER = Limit(2, WEEK, "capped_tier", "basic: 2 per 7 days", uncounted=frozenset({"transactional"}))
STAGE = Limit(
    2,
    30 * DAY,
    "capped_lifecycle",
    "dormant: 2 per 30 days",
    uncounted=frozenset({"transactional"}),
)


def message(mid: str, targets: list[tuple[str, str]], *, at: float = NOW) -> OutMessage:
    return OutMessage(
        message_id=mid,
        fields={
            "kind": "inbox",
            "category": "marketing",
            "priority": "normal",
            "campaign": None,
            "variant": None,
            "created_at": at,
            "expires_at": at + DAY,
        },
        wire=b"wire:" + mid.encode(),
        targets=tuple(targets),
    )


async def send(
    store: Store,
    users: dict[str, list[str]],
    *,
    limits: tuple[Limit, ...] = (),
    at: float = NOW,
    category: str = "marketing",
    campaign: str | None = None,
    budget: int | None = None,
    log: bool = False,
) -> tuple[str, Committed]:
    """One message to ``users`` ({user: [devices]}), each send under ``limits``."""
    mid = uuid.uuid4().hex
    sends = [
        SendRow(
            user_key=u,
            at=at,
            category=category,
            message_id=mid,
            campaign=campaign,
            limits=limits,
            decision=DecisionRow(
                campaign=campaign or "-", user_key=u, at=at, reason="sent", message_id=mid
            )
            if log
            else None,
        )
        for u in users
    ]
    targets = [(d, u) for u, devices in users.items() for d in devices]
    outcome = Outcome(sends=sends, campaign=campaign, budget=budget)
    return mid, await store.commit("a", outcome, [message(mid, targets, at=at)])


async def devices(store: Store, n: int, prefix: str = "u") -> dict[str, list[str]]:
    users = {f"{prefix}{i}": [f"{prefix}{i}-phone"] for i in range(n)}
    for u, ds in users.items():
        for d in ds:
            await store.upsert_device(device("a", d, u, at=NOW - 100 * DAY))
    return users


async def test_each_delivery_gets_its_devices_next_sequence_number(store: Store) -> None:
    users = await devices(store, 2)
    first, c1 = await send(store, users)
    second, c2 = await send(store, {"u0": ["u0-phone"]})
    assert sorted(c1.deliveries[first]) == [("u0-phone", 1), ("u1-phone", 1)]
    assert c2.deliveries[second] == (("u0-phone", 2),)
    row = await store.upsert_device(device("a", "u0-phone", "u0"))
    assert row.last_seq == 2
    assert [p.seq for p in await store.pending("a", "u0-phone", 0, NOW)] == [1, 2]


async def test_concurrent_commits_never_share_or_skip_a_sequence_number(store: Store) -> None:
    users = await devices(store, 3)
    results = await asyncio.gather(*(send(store, users) for _ in range(40)))
    for d in ("u0-phone", "u1-phone", "u2-phone"):
        seqs = sorted(s for mid, c in results for dev, s in c.deliveries[mid] if dev == d)
        assert seqs == list(range(1, 41))


async def test_a_device_that_no_longer_exists_gets_no_delivery(store: Store) -> None:
    await devices(store, 1)
    mid, committed = await send(store, {"u0": ["u0-phone", "gone-phone"]})
    assert committed.deliveries[mid] == (("u0-phone", 1),)


@pytest.mark.parametrize(
    ("sent_days_ago", "limits", "reason"),
    [
        ((1,), (TIER,), None),
        ((1, 6.9), (TIER,), "capped_tier"),
        ((1, 8, 9, 10), (TIER,), None),  # older than a week: out of the window
        ((10, 20), (TIER, STAGE), "capped_lifecycle"),
        ((1, 2), (TIER, STAGE), "capped_lifecycle"),  # both reached: the longer window binds
        ((1, 31), (TIER, STAGE), None),
    ],
)
async def test_caps_count_the_stored_sends_within_their_window(
    store: Store, sent_days_ago: tuple[float, ...], limits: tuple[Limit, ...], reason: str | None
) -> None:
    users = await devices(store, 1)
    for days in sent_days_ago:
        await send(store, users, at=NOW - days * DAY)
    mid, committed = await send(store, users, limits=limits)
    assert [r.reason for r in committed.refused] == ([] if reason is None else [reason])
    assert bool(committed.deliveries.get(mid)) is (reason is None)


async def test_uncounted_categories_neither_count_nor_are_capped(store: Store) -> None:
    users = await devices(store, 1)
    for _ in range(3):
        await send(store, users, category="transactional")
    _, committed = await send(store, users, limits=(TIER,))
    assert committed.refused == ()


async def test_sends_in_one_commit_count_against_each_other(store: Store) -> None:
    await devices(store, 1)
    mids = [uuid.uuid4().hex for _ in range(4)]
    outcome = Outcome(
        sends=[
            SendRow(user_key="u0", at=NOW, category="marketing", message_id=m, limits=(TIER,))
            for m in mids
        ]
    )
    committed = await store.commit("a", outcome, [message(m, [("u0-phone", "u0")]) for m in mids])
    assert sorted(committed.deliveries) == sorted(mids[:2])
    assert [r.message_id for r in committed.refused] == mids[2:]


async def test_a_cap_is_used_exactly_by_concurrent_senders(store: Store) -> None:
    users = await devices(store, 20)
    results = await asyncio.gather(*(send(store, users, limits=(TIER,)) for _ in range(4)))
    got = {u: 0 for u in users}
    for mid, committed in results:
        for dev, _ in committed.deliveries.get(mid, ()):
            got[dev.removesuffix("-phone")] += 1
    assert set(got.values()) == {2}
    refused = [r for _, c in results for r in c.refused]
    assert len(refused) == 40 and {r.reason for r in refused} == {"capped_tier"}


async def test_a_send_to_a_user_whose_stored_consent_refuses_it_is_refused_at_commit(
    store: Store,
) -> None:
    # The sender's view of consent may be stale (another node stored the opt-out): the commit
    # reads the stored consent, as it reads caps. Transactional messages cannot be refused.
    users = await devices(store, 3)
    await store.set_consent("a", "u0", {"marketing": False}, NOW)
    await store.set_consent("a", "u1", {"news": False}, NOW)
    mid, marketing = await send(store, users, log=True)
    assert sorted((r.user_key, r.reason) for r in marketing.refused) == [("u0", "opted_out")]
    assert {d for d, _ in marketing.deliveries[mid]} == {"u1-phone", "u2-phone"}
    mid, news = await send(store, users, category="news")
    assert [(r.user_key, r.reason) for r in news.refused] == [("u1", "opted_out")]
    mid, must = await send(store, users, category="transactional")
    assert must.refused == () and len(must.deliveries[mid]) == 3
    log = await store.decisions("a", "-", "u0")
    assert [(d.reason, d.detail) for d in log] == [
        ("opted_out", "the user opted out of marketing messages")
    ]


async def test_a_campaign_commit_writes_nothing_about_a_user_erased_meanwhile(
    store: Store,
) -> None:
    # The sending node's view still held u0, erased through another node: nothing of u0 is
    # written (no send, decision, inbox entry or pending work); u1's part goes through.
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    users = await devices(store, 2)
    await store.erase_user("a", "u0")
    mids = {u: uuid.uuid4().hex for u in users}
    outcome = Outcome(
        sends=[SendRow(user_key=u, at=NOW, category="marketing", message_id=mids[u],
                       campaign="c1",
                       decision=DecisionRow(campaign="c1", user_key=u, at=NOW, reason="sent",
                                            message_id=mids[u]))
               for u in users],
        decisions=[DecisionRow(campaign="c1", user_key="u0", at=NOW, reason="holdout")],
        new_pending=[PendingSend(app="a", campaign="c1", user_key="u0", due_at=NOW + 60)],
        campaign="c1",
    )  # fmt: skip
    messages = [message(mids[u], [(ds[0], u)]) for u, ds in users.items()]
    committed = await store.commit("a", outcome, messages)
    assert committed.sent == 1 and set(committed.deliveries) == {mids["u1"]}
    assert [d.user_key for d in await store.decisions("a", "c1", limit=10)] == ["u1"]
    assert await store.count_pending("a", "c1") == 0
    assert await store.user("a", "u0") is None
    (row,) = await store.campaigns("a")
    assert row.sent_total == 1


async def test_sends_decided_under_replaced_settings_are_refused_whole(store: Store) -> None:
    users = await devices(store, 1)
    mid = uuid.uuid4().hex
    sends = [SendRow(user_key="u0", at=NOW, category="marketing", message_id=mid)]
    none_stored = settings_fingerprint(None)
    spec = {"caps": {"min_gap_hours": 4}}
    await store.save_app_settings("a", spec, NOW)
    with pytest.raises(SettingsChanged):
        await store.commit("a", Outcome(sends=sends, settings=none_stored),
                           [message(mid, [("u0-phone", "u0")])])  # fmt: skip
    assert await store.pending("a", "u0-phone", 0, NOW) == []
    committed = await store.commit("a", Outcome(sends=sends, settings=settings_fingerprint(spec)),
                                   [message(mid, [(users["u0"][0], "u0")])])  # fmt: skip
    assert committed.sent == 1


async def test_a_refused_send_logs_its_reason_and_stores_no_message(store: Store) -> None:
    users = await devices(store, 2)
    await send(store, {"u0": ["u0-phone"]}, at=NOW - 1)
    await send(store, {"u0": ["u0-phone"]}, at=NOW - 1)
    mid, committed = await send(store, users, limits=(TIER,), campaign="c1", log=True)
    assert committed.deliveries[mid] == (("u1-phone", 1),)  # the other user still gets it
    assert [p.seq for p in await store.pending("a", "u0-phone", 2, NOW)] == []
    log = {d.user_key: d for d in await store.decisions("a", "c1")}
    assert (log["u0"].reason, log["u0"].detail, log["u0"].message_id) == (
        "capped_tier",
        "basic: 2 per 7 days",
        None,
    )
    assert (log["u1"].reason, log["u1"].message_id) == ("sent", mid)


async def test_a_message_whose_every_send_was_refused_is_not_stored(store: Store) -> None:
    users = await devices(store, 1)
    for _ in range(2):
        await send(store, users)
    mid, committed = await send(store, users, limits=(TIER,))
    assert mid not in committed.deliveries and committed.sent == 0
    assert await store.revoke("a", mid) is None  # unknown: never stored


async def test_a_per_user_limit_counts_only_its_campaigns_sends(store: Store) -> None:
    users = await devices(store, 1)
    once = Limit(1, None, "capped_campaign", "campaign: 1 per user", campaign="c1")
    await send(store, users, campaign="c2", at=NOW - 400 * DAY)
    _, first = await send(store, users, campaign="c1", limits=(once,), at=NOW - 400 * DAY)
    _, again = await send(store, users, campaign="c1", limits=(once,))
    assert first.refused == () and [r.reason for r in again.refused] == ["capped_campaign"]


async def test_a_budget_is_never_exceeded_by_concurrent_commits(store: Store) -> None:
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    users = await devices(store, 10)
    results = await asyncio.gather(
        *(send(store, {u: ds}, campaign="c1", budget=3) for u, ds in users.items())
    )
    assert sum(c.sent for _, c in results) == 3
    assert sorted(c.sent_total for _, c in results if c.sent_total is not None)[-1] == 3
    refused = [r for _, c in results for r in c.refused]
    assert len(refused) == 7 and {r.reason for r in refused} == {"budget_exhausted"}
    (row,) = await store.campaigns("a")
    assert row.sent_total == 3


async def pending_work(store: Store, *due: float) -> None:
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    await store.commit(
        "a",
        Outcome(
            new_pending=[
                PendingSend(app="a", campaign="c1", user_key=f"u{i}", due_at=at)
                for i, at in enumerate(due)
            ]
        ),
    )


async def test_due_work_is_claimed_by_one_scheduler_only(store: Store) -> None:
    await pending_work(store, NOW - 5, NOW - 1, NOW + 60)
    got = await asyncio.gather(*(store.claim_due(f"s{i}", NOW, 30, 100) for i in range(5)))
    claimed = [p.user_key for batch in got for p in batch]
    assert sorted(claimed) == ["u0", "u1"]  # each once; the future one is not due
    assert sum(1 for batch in got if batch) == 1
    assert await store.next_due() == NOW + 30  # the claimed ones wait for their lease


async def test_a_crashed_schedulers_work_is_claimed_again_after_its_lease(store: Store) -> None:
    await pending_work(store, NOW - 5)
    (mine,) = await store.claim_due("crashed", NOW, 30, 100)
    assert await store.claim_due("other", NOW + 29, 30, 100) == []
    (again,) = await store.claim_due("other", NOW + 31, 30, 100)
    assert again.id == mine.id


async def test_a_commit_on_a_lost_claim_is_refused_whole(store: Store) -> None:
    await pending_work(store, NOW - 5)
    await devices(store, 1)
    (work,) = await store.claim_due("slow", NOW, 30, 100)
    await store.claim_due("other", NOW + 31, 30, 100)
    mid = uuid.uuid4().hex
    outcome = Outcome(
        sends=[SendRow(user_key="u0", at=NOW, category="marketing", message_id=mid)],
        done_pending=[work.id],
        claim="slow",
    )
    with pytest.raises(ClaimLost):
        await store.commit("a", outcome, [message(mid, [("u0-phone", "u0")])])
    assert await store.pending("a", "u0-phone", 0, NOW) == []
    # The rightful owner finishes it.
    done = Outcome(done_pending=[work.id], claim="other")
    await store.commit("a", done)
    assert await store.count_pending("a", "c1") == 0


async def audience_run(store: Store) -> PendingSend:
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    await store.commit("a", Outcome(new_pending=[
        PendingSend(app="a", campaign="c1", user_key=None, due_at=NOW - 1)
    ]))  # fmt: skip
    assert await store.run_events("a", "c1") == []  # not under way yet
    (run,) = await store.claim_due("node-a", NOW, 30, 100)
    return run


async def test_a_runs_cursor_moves_with_its_chunks_sends_and_renews_its_claim(
    store: Store,
) -> None:
    run = await audience_run(store)
    users = await devices(store, 2)
    cursor = {"after": "u0", "decided": 1, "of": 2}
    mid = uuid.uuid4().hex
    chunk = Outcome(
        sends=[SendRow(user_key="u0", at=NOW, category="marketing", message_id=mid,
                       campaign="c1")],
        campaign="c1", claim="node-a",
        progress=Progress(pending_id=run.id, event=cursor, claim_until=NOW + 100),
    )  # fmt: skip
    committed = await store.commit("a", chunk, [message(mid, [(users["u0"][0], "u0")])])
    assert committed.sent == 1
    assert await store.run_events("a", "c1") == [cursor]
    # The renewed claim holds past the first lease; after it, whoever claims gets the cursor.
    assert await store.claim_due("node-b", NOW + 31, 30, 100) == []
    (taken,) = await store.claim_due("node-b", NOW + 101, 30, 100)
    assert (taken.id, taken.event) == (run.id, cursor)


async def test_a_chunk_on_a_lost_claim_stores_nothing(store: Store) -> None:
    run = await audience_run(store)
    users = await devices(store, 1)
    await store.claim_due("node-b", NOW + 31, 30, 100)  # node-a stalled past its lease
    mid = uuid.uuid4().hex
    chunk = Outcome(
        sends=[SendRow(user_key="u0", at=NOW, category="marketing", message_id=mid,
                       campaign="c1")],
        campaign="c1", claim="node-a",
        progress=Progress(pending_id=run.id, event={"after": "u0", "decided": 1, "of": 1},
                          claim_until=NOW + 100),
    )  # fmt: skip
    with pytest.raises(ClaimLost):
        await store.commit("a", chunk, [message(mid, [(users["u0"][0], "u0")])])
    assert await store.pending("a", "u0-phone", 0, NOW) == []
    assert await store.run_events("a", "c1") == []
    (row,) = await store.campaigns("a")
    assert row.sent_total == 0


async def test_a_scheduler_takes_back_its_own_leftover_claims_at_once(store: Store) -> None:
    # Its campaign was paused mid-run and resumed: the work need not wait out its own lease.
    run = await audience_run(store)
    assert await store.claim_due("node-b", NOW + 1, 30, 100) == []
    (again,) = await store.claim_due("node-a", NOW + 1, 30, 100)
    assert again.id == run.id


@pytest.mark.parametrize("status", ["paused", "cancelled", "completed", "draft"])
async def test_a_campaign_sends_only_while_its_stored_status_is_running(
    store: Store, status: str
) -> None:
    # Another node changed the status; the sender still believes it running. The commit reads
    # the stored status under its lock: nothing of the outcome is stored, claimed work stays.
    await pending_work(store, NOW - 5)
    users = await devices(store, 2)
    (work,) = await store.claim_due("node-a", NOW, 30, 100)
    await store.set_campaign_status("a", "c1", status, NOW)
    mid = uuid.uuid4().hex
    outcome = Outcome(
        sends=[SendRow(user_key=u, at=NOW, category="marketing", message_id=mid,
                       campaign="c1") for u in users],
        done_pending=[work.id], campaign="c1", claim="node-a",
    )  # fmt: skip
    targets = [(ds[0], u) for u, ds in users.items()]
    with pytest.raises(CampaignInactive) as raised:
        await store.commit("a", outcome, [message(mid, targets)])
    assert raised.value.status == status
    assert await store.pending("a", "u0-phone", 0, NOW) == []
    assert await store.count_pending("a", "c1") == 1
    (row,) = await store.campaigns("a")
    assert row.sent_total == 0
    # Back to running, the same send goes through.
    await store.set_campaign_status("a", "c1", "running", NOW)
    committed = await store.commit("a", outcome, [message(mid, targets)])
    assert committed.sent == 2 and committed.sent_total == 2


async def test_a_pause_racing_a_campaigns_sends_stops_every_send_after_it(store: Store) -> None:
    # Sends and a pause race; whatever order they commit in, no send commits after the pause.
    await store.save_campaign("a", "c1", {"id": "c1"}, "running", NOW)
    users = await devices(store, 30)

    async def one(u: str, ds: list[str]) -> int:
        try:
            _, c = await send(store, {u: ds}, campaign="c1")
        except CampaignInactive:
            return 0
        return c.sent

    sends = [asyncio.ensure_future(one(u, ds)) for u, ds in users.items()]
    await asyncio.sleep(0)
    assert await store.set_campaign_status("a", "c1", "paused", NOW, expect=["running"])
    (at_pause,) = await store.campaigns("a")
    sent = sum(await asyncio.gather(*sends))
    (row,) = await store.campaigns("a")
    assert row.sent_total == sent == at_pause.sent_total
    with pytest.raises(CampaignInactive):
        await send(store, {"u0": ["u0-phone"]}, campaign="c1")


async def test_paused_campaigns_work_is_not_claimed(store: Store) -> None:
    await pending_work(store, NOW - 5)
    await store.set_campaign_status("a", "c1", "paused", NOW)
    assert await store.claim_due("s", NOW, 30, 100) == []
    assert await store.next_due() is None
    await store.set_campaign_status("a", "c1", "running", NOW)
    assert [p.user_key for p in await store.claim_due("s", NOW, 30, 100)] == ["u0"]


async def test_a_status_change_happens_once_however_many_ask_for_it(store: Store) -> None:
    await store.save_campaign("a", "c1", {"id": "c1"}, "draft", NOW)
    changed = await asyncio.gather(*(
        store.set_campaign_status("a", "c1", "running", NOW, expect=["draft", "paused"])
        for _ in range(5)
    ))  # fmt: skip
    assert sorted(changed) == [False, False, False, False, True]
    assert not await store.set_campaign_status("a", "nope", "running", NOW)
    assert await store.set_campaign_status("a", "c1", "cancelled", NOW)  # no expectation
    (row,) = await store.campaigns("a")
    assert row.status == "cancelled"
