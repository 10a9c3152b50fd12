"""How stale one node's view may be: a change stored on node B, until node A has applied it.

Two nodes on one fresh PostgreSQL schema and Redis key prefix (this process, one event loop).
Node B stores a profile attribute (the write returns once the change is in the feed); the
clock stops when node A's view has the profile. Writes are spread out so that they fall at
every point of A's 0.25 s read cycle.

Usage::

    .venv/bin/python benchmarks/feed_lag.py
    .venv/bin/python benchmarks/feed_lag.py --writes 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg
import redis.asyncio as aioredis

from tidings.server.config import AppConfig, GatewayConfig
from tidings.server.node import Node
from tidings.server.storage import PostgresStore

DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
REDIS = os.environ.get("TIDINGS_TEST_REDIS") or "redis://127.0.0.1:6379/0"
APP = AppConfig(id="demo", secret="s" * 32, admin_key="k" * 32)


async def main(writes: int) -> None:
    schema, prefix = f"bench_{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}:"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {schema}")
    nodes: list[Node] = []
    try:
        for name in "ab":
            config = GatewayConfig(port=0, admin_port=0, db=DSN, apps=(APP,), broker=REDIS,
                                   node_id=f"bench-{name}", broker_prefix=prefix)  # fmt: skip
            node = Node(config, store=PostgresStore(DSN, schema=schema, pool_size=4))
            await node.start()
            nodes.append(node)
        a, b = nodes
        lags = []
        for i in range(writes):
            await b.ingest.attributes("demo", f"u{i}", {"n": i})
            stored = time.perf_counter()
            # Polling node A's view is the measurement (1 ms resolution).
            while a.engine.audience.profile("demo", f"u{i}") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - stored)
            await asyncio.sleep(0.037 * (i % 7))
        lags.sort()
        print(f"{writes} changes: view lag median {statistics.median(lags) * 1000:.0f} ms,"
              f" p95 {lags[int(len(lags) * 0.95) - 1] * 1000:.0f} ms,"
              f" max {lags[-1] * 1000:.0f} ms")  # fmt: skip
    finally:
        for node in nodes:
            await node.stop()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
        r = aioredis.Redis.from_url(REDIS)
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100, help="changes to time")
    asyncio.run(main(parser.parse_args().writes))
