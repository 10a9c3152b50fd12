"""Settings changed through one node of a cluster are in force on the other at once.

Uses the two-node cluster of ``test_cluster`` (real PostgreSQL and Redis; skipped, or failed
under CI, when they are unreachable).
"""

from __future__ import annotations

import uuid

import test_cluster
from helpers import APP_A
from test_cluster import eventually

from tidings.protocol.frames import Event
from tidings.server.node import Node

cluster = test_cluster.cluster
"""Two started nodes of one cluster."""


def profile_of(node: Node, user: str) -> tuple[int, str] | None:
    p = node.engine.audience.profile(APP_A.id, user)
    return None if p is None else (p.purchase_count, str(p.tier))


async def test_settings_put_on_one_node_take_effect_on_the_other(cluster: list[Node]) -> None:
    a, b = cluster
    paid = Event(id=uuid.uuid4().hex, name="order_paid", ts=int(a.clock() * 1000),
                 props={"total": 2000})  # fmt: skip
    await a.ingest.events(APP_A.id, None, "big-buyer", [paid])
    await eventually(lambda: profile_of(b, "big-buyer") == (0, "basic"))
    spec = {"value_event": {"name": "order_paid", "amount": "total"}, "categories": ["news"],
            "caps": {"lifecycle": {"active": {"limit": 6, "days": 7}}}}  # fmt: skip
    await a.engine.set_settings(APP_A.id, spec)
    await eventually(lambda: b.engine.policy(APP_A.id) == a.engine.policy(APP_A.id))
    assert b.engine.policy(APP_A.id).categories == ("marketing", "transactional", "news")
    await eventually(lambda: profile_of(b, "big-buyer") == (1, "high_value"))
    await b.engine.set_settings(APP_A.id, None)
    await eventually(lambda: a.engine.policy(APP_A.id) == APP_A.policy)
    await eventually(lambda: profile_of(a, "big-buyer") == (0, "basic"))
