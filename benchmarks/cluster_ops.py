"""PostgreSQL round trips and Redis commands per send on a two-node cluster, counted.

Starts two gateway nodes in this process on a fresh PostgreSQL schema and a Redis key prefix,
connects ``--devices`` SDK clients split evenly over them, then sends one message to every
user through the first node and counts what that send cost, and nothing else:

- PostgreSQL: every asyncpg call (``execute``, ``fetch``… each one round trip carrying one
  statement or one batch; ``BEGIN``/``COMMIT`` count too);
- Redis: the server's ``INFO commandstats`` before and after (keep Redis otherwise idle).

    .venv/bin/python benchmarks/cluster_ops.py --devices 1000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from tidings.client_sdk import TidingsClient
from tidings.protocol.tokens import mint_token
from tidings.server.config import AppConfig, GatewayConfig
from tidings.server.node import Node, SendRequest
from tidings.server.storage import PostgresStore

APP = AppConfig(id="bench", secret="bench-secret-0123", admin_key="bench-admin-key-0123")
CALLS = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "copy_records_to_table")


def count_asyncpg(counter: Counter[str]) -> Callable[[], None]:
    """Count asyncpg round trips by method until the returned function is called."""
    cls = asyncpg.connection.Connection
    originals = {name: getattr(cls, name) for name in CALLS}

    def wrap(name: str, fn: Any) -> Any:
        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter[name] += 1
            return await fn(self, *args, **kwargs)

        return counted

    for name, fn in originals.items():
        setattr(cls, name, wrap(name, fn))

    def restore() -> None:
        for name, fn in originals.items():
            setattr(cls, name, fn)

    return restore


async def redis_commands(r: aioredis.Redis) -> Counter[str]:
    info = await r.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


async def main(devices: int, dsn: str, redis_url: str) -> None:
    admin = await asyncpg.connect(dsn)
    r = aioredis.Redis.from_url(redis_url)
    schema, prefix = f"bench_{uuid.uuid4().hex[:10]}", f"bench-{uuid.uuid4().hex[:8]}:"
    await admin.execute(f"CREATE SCHEMA {schema}")
    nodes: list[Node] = []
    clients: list[TidingsClient] = []
    try:
        for name in ("a", "b"):
            cfg = GatewayConfig(port=0, admin_port=0, db=dsn, apps=(APP,), broker=redis_url,
                                node_id=f"bench-{name}", broker_prefix=prefix)  # fmt: skip
            node = Node(cfg, store=PostgresStore(dsn, schema=schema))
            await node.start()
            nodes.append(node)
        for i in range(devices):
            node = nodes[i % 2]
            token = mint_token(secret=APP.secret, app=APP.id, device=f"d{i}", user=f"u{i}")
            client = TidingsClient(url=f"ws://127.0.0.1:{node.port}", token=token,
                                   device_id=f"d{i}")  # fmt: skip
            await client.start()
            clients.append(client)
        await asyncio.gather(*(c.wait_connected(60) for c in clients))
        await asyncio.sleep(2)  # let hellos, routes and announcements settle
        pg: Counter[str] = Counter()
        before = await redis_commands(r)
        restore = count_asyncpg(pg)
        t0 = time.perf_counter()
        try:
            sent = await nodes[0].send(SendRequest(
                app=APP.id, users=tuple(f"u{i}" for i in range(devices)), kind="inbox",
                title="t", body="b", category="transactional",
            ))  # fmt: skip
            await asyncio.sleep(1)  # the publishes leave after the answer
        finally:
            restore()
        took = time.perf_counter() - t0 - 1
        after = await redis_commands(r)
        redis_used = after - before
        redis_used.pop("info", None)
        print(f"devices {devices} (half on each node); one send to all: {took * 1000:.0f} ms,"
              f" {sent.devices} deliveries")  # fmt: skip
        print(f"PostgreSQL round trips: {sum(pg.values())} {dict(pg)}")
        print(f"Redis commands: {sum(redis_used.values())} {dict(redis_used)}")
    finally:
        for c in clients:
            await c.close()
        for node in nodes:
            await node.stop()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
        keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.db, args.broker))
