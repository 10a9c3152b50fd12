"""A one-off segment campaign to a million users on PostgreSQL: time, memory, transactions.

Puts N users (a profile and one device each; the devices are not connected) in a fresh
schema with plain SQL, starts a node on it (which loads the profiles into its audience), then
starts a marketing inbox campaign whose segment matches everyone and times the start call,
which decides for the whole audience in chunks (``AUDIENCE_CHUNK`` users per commit). Prints
the time to load and to decide, the node's peak RSS, and each chunk commit's duration and
size (rows written, WAL bytes).

Usage::

    .venv/bin/python benchmarks/million_campaign.py                 # 1,000,000 users
    .venv/bin/python benchmarks/million_campaign.py --users 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
import uuid
from typing import Any

import asyncpg

from tidings.server.campaigns.engine import AUDIENCE_CHUNK
from tidings.server.config import AppConfig, GatewayConfig
from tidings.server.node import Node
from tidings.server.storage import Outcome, PostgresStore

DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
APP = AppConfig(id="demo", secret="s" * 32, admin_key="k" * 32)
NOW = 1_790_000_000.0


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fill(admin: asyncpg.Connection, schema: str, users: int) -> None:
    await admin.execute(
        f"INSERT INTO {schema}.users (app, user_key, attrs, first_seen, last_seen)"
        " SELECT 'demo', 'u' || lpad(i::text, 7, '0'),"
        """ '{"cohort": "all", "plan": "basic"}', $2, $2 FROM generate_series(1, $1) i""",
        users,
        NOW,
    )
    await admin.execute(
        f"INSERT INTO {schema}.devices (app, device_id, user_id, first_seen, last_seen)"
        " SELECT 'demo', 'd' || lpad(i::text, 7, '0'), 'u' || lpad(i::text, 7, '0'), $2, $2"
        " FROM generate_series(1, $1) i",
        users,
        NOW,
    )
    await admin.execute(f"ANALYZE {schema}.users")
    await admin.execute(f"ANALYZE {schema}.devices")


async def main(users: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(DSN, schema=schema)
    node: Node | None = None
    try:
        await store.open()
        start = time.perf_counter()
        await fill(admin, schema, users)
        print(f"{users:,} users and devices written in {time.perf_counter() - start:.1f} s")
        before = rss_mib()
        config = GatewayConfig(port=0, admin_port=0, db=DSN, apps=(APP,))
        node = Node(config, store=store)
        start = time.perf_counter()
        await node.start()
        loaded = time.perf_counter() - start
        print(f"node started (profiles loaded) in {loaded:.1f} s; RSS {before:.0f} ->"
              f" {rss_mib():.0f} MiB")  # fmt: skip

        commits: list[tuple[float, int, int]] = []  # (seconds, sends, WAL bytes)
        commit = store.commit

        async def timed(app: str, outcome: Outcome, *a: Any, **kw: Any) -> Any:
            lsn = await admin.fetchval("SELECT pg_current_wal_insert_lsn()")
            t = time.perf_counter()
            out = await commit(app, outcome, *a, **kw)
            took = time.perf_counter() - t
            wal = await admin.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn
            )
            commits.append((took, len(outcome.sends), int(wal)))
            return out

        store.commit = timed  # type: ignore[method-assign]
        await node.engine.save({
            "id": "everyone", "app": "demo", "name": "Everyone", "kind": "one_off",
            "segment": 'attr.cohort = "all"',
            "content": {"kind": "inbox", "title": "Hello {{ user.plan | default('there') }}",
                        "body": "Something new for you", "category": "marketing"},
        })  # fmt: skip
        start = time.perf_counter()
        await node.engine.start_campaign("demo", "everyone")
        took = time.perf_counter() - start
        sent = await admin.fetchval(f"SELECT count(*) FROM {schema}.sends")
        deliveries = await admin.fetchval(f"SELECT count(*) FROM {schema}.deliveries")
        decided = await admin.fetchval(f"SELECT count(*) FROM {schema}.decisions")
        campaign, _ = node.engine.campaign("demo", "everyone")
        chunks = [c for c in commits if c[1]]
        secs = sorted(c[0] for c in chunks)
        print(f"campaign decided for {decided:,} users in {took:.1f} s"
              f" ({decided / took:,.0f} users/s): {sent:,} sends, {deliveries:,} deliveries,"
              f" status {campaign.status}")  # fmt: skip
        print(f"{len(chunks)} chunk commits of up to {AUDIENCE_CHUNK:,} users:"
              f" median {statistics.median(secs) * 1000:.0f} ms, max {secs[-1] * 1000:.0f} ms;"
              f" WAL per commit median {statistics.median(c[2] for c in chunks) / 2**20:.1f} MiB,"
              f" max {max(c[2] for c in chunks) / 2**20:.1f} MiB")  # fmt: skip
        print(f"peak RSS of the node's process: {peak_mib():.0f} MiB")
    finally:
        if node is not None:
            await node.stop()
        else:
            await store.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users in the segment")
    asyncio.run(main(parser.parse_args().users))
