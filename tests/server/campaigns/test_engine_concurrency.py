"""Decisions hold under any interleaving: caps, per-user limits, budgets and due work.

Real nodes on real SQLite files; operations are fired together (``asyncio.gather``), and
hypothesis chooses what is fired together. Every invariant is checked from what was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import gateway_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol.frames import Event
from tidings.server.campaigns import engine as engine_module
from tidings.server.campaigns.engine import CLAIM_LEASE_S
from tidings.server.campaigns.variants import in_test_group
from tidings.server.errors import Conflict
from tidings.server.node import Node, SendRequest
from tidings.server.storage import DeviceRow

NOW = 1_700_000_000.0
BACKEND = "~backend"
CAP = 2  # basic tier, new users: 2 marketing messages a week (the lifecycle allows 3)


class Clock:
    """A clock the test moves; every node of a test shares one."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def spec(cid: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": cid, "app": "demo", "name": cid, "kind": "one_off", "segment": 'attr.cohort = "h"',
        "content": {"kind": "inbox", "title": "Hi", "body": "b", "category": "marketing"},
    }  # fmt: skip
    return {**base, **changes}


CAMPAIGNS = [
    spec("c0"),
    spec("c1", frequency={"total_budget": 3}),
    spec("c2", frequency={"per_user_limit": 1}),
    spec("t0", kind="triggered", trigger={"event": "go"},
         frequency={"per_user_limit": 1, "total_budget": 3}),
    spec("t1", kind="triggered", trigger={"event": "go", "delay_s": 60},
         frequency={"per_user_limit": 2}),
]  # fmt: skip
LIMITS = {"c2": 1, "t0": 1, "t1": 2}
BUDGETS = {"c1": 3, "t0": 3}


async def people(node: Node, users: list[str]) -> None:
    for user in users:
        await node.ingest.attributes("demo", user, {"cohort": "h"})
        await node.ingest.device(DeviceRow(app="demo", device_id=f"{user}-phone", user_id=user,
                                           first_seen=NOW, last_seen=NOW))  # fmt: skip


async def track(node: Node, user: str, name: str = "go") -> None:
    event = Event(id=uuid.uuid4().hex, name=name, ts=int(node.clock() * 1000), props={})
    await node.ingest.events("demo", BACKEND, user, [event])


async def check_invariants(node: Node, users: list[str], direct_capped: set[str]) -> None:
    """No cap, limit or budget exceeded, and each one that refused someone was used in full."""
    sends = [s for _, s in await node.store.sends_since(0)]
    assert len({s.message_id for s in sends}) == len(sends), "a message was recorded twice"
    per_user = Counter(s.user_key for s in sends)
    per_pair = Counter((s.user_key, s.campaign) for s in sends)
    per_campaign = Counter(s.campaign for s in sends)
    capped: set[str] = set(direct_capped)
    for c in CAMPAIGNS:
        cid = c["id"]
        log = await node.engine.decisions("demo", cid, limit=10_000)
        reasons = Counter(d.reason for d in log if d.reason != "scheduled")
        assert reasons["sent"] == per_campaign[cid], (cid, reasons)
        if cid in BUDGETS:
            assert per_campaign[cid] <= BUDGETS[cid]
            if reasons["budget_exhausted"]:
                assert per_campaign[cid] == BUDGETS[cid], f"{cid}: budget refused while unused"
        for d in log:
            if d.reason == "capped_campaign":
                assert per_pair[(d.user_key, cid)] == LIMITS[cid], (cid, d)
            if d.reason in ("capped_tier", "capped_lifecycle"):
                capped.add(d.user_key)
        once = 1 if c["kind"] == "one_off" else 10**6  # a one-off runs once, however started
        for user in users:
            assert per_pair[(user, cid)] <= min(once, LIMITS.get(cid, 10**6)), (user, cid)
    for user in users:
        assert per_user[user] <= CAP, (user, per_user[user])
    for user in capped:
        assert per_user[user] == CAP, f"{user} was capped with {per_user[user]} of {CAP}"


OPS = st.one_of(
    st.tuples(st.just("start"), st.sampled_from([c["id"] for c in CAMPAIGNS[:3]])),
    st.tuples(st.just("track"), st.integers(0, 3)),
    st.tuples(st.just("direct"), st.integers(0, 3)),
    st.tuples(st.just("tick"), st.integers(0, 90)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.lists(OPS, min_size=1, max_size=6), min_size=1, max_size=5))
def test_interleaved_starts_events_direct_sends_and_ticks_never_break_a_cap(
    tmp_path_factory: pytest.TempPathFactory, rounds: list[list[tuple[str, Any]]]
) -> None:
    asyncio.run(_interleave(tmp_path_factory.mktemp("mix"), rounds))


async def _interleave(folder: Path, rounds: list[list[tuple[str, Any]]]) -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    clock = Clock()
    node = Node(gateway_config(folder / "t.db"), clock=clock)
    await node.start()
    try:
        users = [f"u{i}" for i in range(4)]
        await people(node, users)
        for c in CAMPAIGNS:
            await node.engine.save(c)
        for triggered in ("t0", "t1"):
            await node.engine.start_campaign("demo", triggered)
        direct_capped: set[str] = set()

        async def run(op: tuple[str, Any]) -> None:
            what, arg = op
            if what == "start":
                with contextlib.suppress(Conflict):  # started already: the API answers 409
                    await node.engine.start_campaign("demo", arg)
            elif what == "track":
                await track(node, users[arg])
            elif what == "direct":
                result = await node.send(
                    SendRequest(app="demo", users=(users[arg],), kind="inbox", title="t", body="b")
                )
                if result.skipped:
                    assert set(result.skipped) <= {"capped_tier", "capped_lifecycle"}
                    direct_capped.add(users[arg])
            else:
                clock.now += arg
                await node.engine.tick()

        for group in rounds:
            await asyncio.gather(*(run(op) for op in group))
        clock.now += 120  # every delayed trigger falls due
        await node.engine.tick()
        await check_invariants(node, users, direct_capped)
    finally:
        await node.stop()
    assert not errors, errors


async def test_two_schedulers_sharing_one_store_send_each_due_message_once(
    tmp_path: Path,
) -> None:
    clock = Clock()
    first = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await first.start()
    second = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    try:
        users = [f"u{i}" for i in range(30)]
        await people(first, users)
        later = spec("later", kind="triggered", trigger={"event": "go", "delay_s": 3600},
                     content={"kind": "inbox", "title": "t", "body": "b",
                              "category": "transactional"})  # fmt: skip
        await first.engine.save(later)
        await first.engine.start_campaign("demo", "later")
        for user in users:
            await track(first, user)
        await second.start()  # knows the campaign and the users from the store
        clock.now += 3601
        await asyncio.gather(*(n.engine.tick() for n in (first, second, first, second)))
        sends = Counter(s.user_key for _, s in await first.store.sends_since(0))
        assert sends == Counter(users)
        sent = [d for d in await first.engine.decisions("demo", "later", limit=1000)
                if d.reason == "sent"]  # fmt: skip
        assert len(sent) == len(users)
    finally:
        await second.stop()
        await first.stop()


async def test_work_claimed_by_a_scheduler_that_died_runs_after_its_lease(
    tmp_path: Path,
) -> None:
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        await people(node, ["u0"])
        await node.engine.save(spec("later", kind="triggered",
                                    trigger={"event": "go", "delay_s": 60}))  # fmt: skip
        await node.engine.start_campaign("demo", "later")
        await track(node, "u0")
        clock.now += 61
        (claimed,) = await node.store.claim_due("a-node-that-dies", clock.now, CLAIM_LEASE_S, 10)
        await node.engine.tick()
        assert await node.store.sends_since(0) == []  # not ours while the lease runs
        clock.now += CLAIM_LEASE_S
        await node.engine.tick()
        ((_, send),) = await node.store.sends_since(0)
        assert send.user_key == "u0" and send.campaign == "later"
        assert await node.store.count_pending("demo", "later") == 0
        assert claimed.user_key == "u0"
    finally:
        await node.stop()


class Died(Exception):
    """The node died here (its process would be gone; its claims stay in the store)."""


async def test_an_audience_is_committed_in_chunks_and_resumed_after_a_crash_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "AUDIENCE_CHUNK", 4)
    clock = Clock()
    first = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await first.start()
    users = [f"u{i:02}" for i in range(10)]
    commit = first.store.commit
    commits: list[int] = []

    async def dies_at_the_third_chunk(app: str, outcome: Any, *a: Any, **kw: Any) -> Any:
        if outcome.campaign == "big":
            commits.append(len(outcome.sends))
            if len(commits) == 3:
                raise Died
        return await commit(app, outcome, *a, **kw)

    try:
        await people(first, users)
        await first.engine.save(spec("big"))
        first.store.commit = dies_at_the_third_chunk  # type: ignore[method-assign]
        with pytest.raises(Died):
            await first.engine.start_campaign("demo", "big")
        assert commits == [4, 4, 2]
        sent = Counter(s.user_key for _, s in await first.store.sends_since(0))
        assert sent == Counter(users[:8])  # two chunks stored, each with its sends
        assert (await first.engine.stats("demo", "big"))["deciding"] == {"decided": 8, "of": 10}
    finally:
        await first.stop()
    second = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await second.start()
    try:
        await second.engine.tick()
        assert len(await second.store.sends_since(0)) == 8  # the dead node's lease still runs
        clock.now += CLAIM_LEASE_S + 1
        await second.engine.tick()
        sent = Counter(s.user_key for _, s in await second.store.sends_since(0))
        assert sent == Counter(users)  # the last two, once; nobody twice
        log = await second.engine.decisions("demo", "big", limit=100)
        assert Counter(d.user_key for d in log) == Counter(users)
        stats = await second.engine.stats("demo", "big")
        assert "deciding" not in stats and stats["status"] == "completed"
    finally:
        await second.stop()


async def test_a_campaign_paused_between_chunks_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "AUDIENCE_CHUNK", 3)
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    commit = node.store.commit
    users = [f"u{i}" for i in range(7)]

    async def paused_elsewhere_after_one_chunk(app: str, outcome: Any, *a: Any, **kw: Any) -> Any:
        if outcome.progress is not None and outcome.progress.event["decided"] == 6:
            # Another node paused it: this node has not heard; the store knows.
            await node.store.set_campaign_status(app, "big", "paused", clock.now)
        return await commit(app, outcome, *a, **kw)

    try:
        await people(node, users)
        await node.engine.save(spec("big"))
        node.store.commit = paused_elsewhere_after_one_chunk  # type: ignore[method-assign]
        await node.engine.start_campaign("demo", "big")
        assert len(await node.store.sends_since(0)) == 3
        campaign, _ = node.engine.campaign("demo", "big")
        assert campaign.status == "paused"  # read again when the store refused the chunk
        node.store.commit = commit  # type: ignore[method-assign]
        await node.engine.start_campaign("demo", "big")  # resume: no wait for its own lease
        sent = Counter(s.user_key for _, s in await node.store.sends_since(0))
        assert sent == Counter(users)
    finally:
        await node.stop()


async def test_direct_sends_before_a_restart_count_toward_caps_after_it(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        await people(node, ["u0"])
        for _ in range(2):
            direct = SendRequest(app="demo", users=("u0",), kind="inbox", title="t", body="b")
            assert (await node.send(direct)).users == 1
    finally:
        await node.stop()
    clock.now += 3600
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        await node.engine.save(spec("after-restart"))
        await node.engine.start_campaign("demo", "after-restart")
        (why,) = await node.engine.decisions("demo", "after-restart")
        assert (why.reason, why.detail) == ("capped_tier", "basic: 2 per 7 days")
    finally:
        await node.stop()


def rollout_spec(cid: str, at_deadline: str) -> dict[str, Any]:
    return spec(cid, variants=[{"name": "a"}, {"name": "b", "content": {"title": "B"}}],
                rollout={"test_share": 0.3, "decide_after_s": 3600, "check_every_s": 600,
                         "at_deadline": at_deadline})  # fmt: skip


async def test_two_schedulers_roll_out_to_the_rest_once_through_consent_at_send_time(
    tmp_path: Path,
) -> None:
    clock = Clock()
    first = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await first.start()
    second = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    try:
        users = [f"u{i}" for i in range(40)]
        await people(first, users)
        await first.engine.save(rollout_spec("roll", "best"))
        await first.engine.start_campaign("demo", "roll")
        test = [u for u in users if in_test_group("roll", u, 0.3)]
        rest = [u for u in users if u not in test]
        assert 0 < len(test) < len(users)
        sent = Counter(s.user_key for _, s in await first.store.sends_since(0))
        assert sent == Counter(test)
        (why,) = await first.engine.decisions("demo", "roll", rest[0])
        assert why.reason == "scheduled" and "roll-out" in why.detail
        opted = rest[1]  # says no to marketing while the test runs
        await first.ingest.consent("demo", opted, {"marketing": False})
        await second.start()

        clock.now += 600  # the first check: too few displays, check again later
        await asyncio.gather(first.engine.tick(), second.engine.tick())
        assert len(await first.store.sends_since(0)) == len(test)
        assert (await first.engine.stats("demo", "roll"))["rollout"]["phase"] == "testing"

        clock.now += 3600  # past the deadline: nothing significant, so the best observed
        await asyncio.gather(*(n.engine.tick() for n in (first, second, first, second)))
        sent = Counter(s.user_key for _, s in await first.store.sends_since(0))
        assert sent == Counter(u for u in users if u != opted)
        variants = {s.user_key: s.variant for _, s in await first.store.sends_since(0)}
        assert {variants[u] for u in rest if u != opted} == {"a"}  # a tie: the first variant
        assert (await first.engine.decisions("demo", "roll", opted))[0].reason == "opted_out"
        for node in (first, second):
            r = (await node.engine.stats("demo", "roll"))["rollout"]
            assert (r["phase"], r["variant"], r["decided_by"]) == ("rolled_out", "a", "deadline")
        (stored,) = [c for c in await first.store.campaigns("demo") if c.id == "roll"]
        assert stored.status == "completed"  # by whichever node sent to the rest
    finally:
        await second.stop()
        await first.stop()


async def test_a_rollout_may_send_the_base_content_when_nothing_won(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        users = [f"u{i}" for i in range(20)]
        await people(node, users)
        await node.engine.save(rollout_spec("base", "base"))
        await node.engine.start_campaign("demo", "base")
        clock.now += 3601
        await node.engine.tick()
        rest = {u for u in users if not in_test_group("base", u, 0.3)}
        sends = [s for _, s in await node.store.sends_since(0)]
        assert {s.user_key for s in sends if s.variant is None} == rest
        stats = await node.engine.stats("demo", "base")
        assert stats["rollout"]["variant"] is None and "base content" in stats["rollout"]["detail"]
        assert set(stats["variants"]) == {"a", "b", "default"}
        assert stats["verdict"]["reason"].startswith("needs")  # the base is no arm of the test
    finally:
        await node.stop()


async def test_a_triggered_rollout_serves_the_rest_only_after_the_decision(tmp_path: Path) -> None:
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        users = [f"u{i}" for i in range(20)]
        await people(node, users)
        await node.engine.save(spec(
            "trig", kind="triggered", trigger={"event": "go"},
            variants=[{"name": "a"}, {"name": "b", "content": {"title": "B"}}],
            rollout={"test_share": 0.5, "decide_after_s": 600, "at_deadline": "base"},
        ))  # fmt: skip
        await node.engine.start_campaign("demo", "trig")
        test = next(u for u in users if in_test_group("trig", u, 0.5))
        rest = [u for u in users if not in_test_group("trig", u, 0.5)][:2]
        for user in (test, rest[0]):
            await track(node, user)
        assert [s.user_key for _, s in await node.store.sends_since(0)] == [test]
        (waiting,) = await node.engine.decisions("demo", "trig", rest[0])
        assert waiting.reason == "scheduled" and "roll-out" in waiting.detail
        clock.now += 601  # the deadline: nothing won, so the base content
        await node.engine.tick()
        stats = await node.engine.stats("demo", "trig")
        assert (stats["rollout"]["phase"], stats["rollout"]["variant"]) == ("rolled_out", None)
        assert stats["status"] == "running"  # a triggered campaign keeps running
        await track(node, rest[1])
        sends = {s.user_key: s.variant for _, s in await node.store.sends_since(0)}
        assert set(sends) == {test, rest[1]} and sends[rest[1]] is None
    finally:
        await node.stop()


async def test_a_rollout_decided_just_before_a_crash_is_sent_by_its_check_after_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    users = [f"u{i}" for i in range(20)]
    try:
        await people(node, users)
        await node.engine.save(rollout_spec("crash", "best"))
        await node.engine.start_campaign("demo", "crash")
        clock.now += 600
        # A scheduler claims the check, stores its decision for b, and dies before sending.
        (check,) = await node.store.claim_due("dies", clock.now, CLAIM_LEASE_S, 10)
        testing = (await node.store.rollout_states("demo"))["crash"]
        decided = testing | {
            "phase": "rolled_out", "variant": "b", "decided_by": "winner", "detail": "b won",
            "decided_at": clock.now, "row": check.id,
        }  # fmt: skip
        assert await node.store.swap_rollout("demo", "crash", testing, decided) == decided
    finally:
        await node.stop()
    clock.now += CLAIM_LEASE_S
    node = Node(gateway_config(tmp_path / "t.db"), clock=clock)
    await node.start()
    try:
        await node.engine.tick()
        rest = {u for u in users if not in_test_group("crash", u, 0.3)}
        sends = [s for _, s in await node.store.sends_since(0)]
        assert {s.user_key for s in sends if s.variant == "b" and s.user_key in rest} == rest
        assert len(sends) == len(users)
        assert (await node.engine.stats("demo", "crash"))["rollout"]["decided_by"] == "winner"
    finally:
        await node.stop()
