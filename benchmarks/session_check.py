"""What one node's check of its sessions against PostgreSQL costs, once a second.

Each node of a cluster compares its live sessions with the store every second
(:meth:`Sessions.check_sessions`: one query per 5,000 sessions, the comparison made by the server).
This puts N devices in a fresh schema and times a whole check round over N sessions that are
up to date (the common case: nothing comes back).

Usage::

    .venv/bin/python benchmarks/session_check.py
    .venv/bin/python benchmarks/session_check.py --sessions 10000 --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import asyncpg

from tidings.server.gateway.sessions import CHECK_BATCH
from tidings.server.storage import PostgresStore

DSN = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"


async def main(sessions: int, rounds: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(DSN)
    await admin.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(DSN, schema=schema)
    try:
        await store.open()
        await admin.execute(
            f"INSERT INTO {schema}.devices (app, device_id, user_id, first_seen, last_seen,"
            " last_seq, session_epoch) SELECT 'demo', 'd' || i, 'u' || i, 0, 0, 5, 1"
            " FROM generate_series(1, $1) i",
            sessions,
        )
        await admin.execute(f"ANALYZE {schema}.devices")
        live = [(f"d{i}", 5, 1) for i in range(1, sessions + 1)]
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for k in range(0, sessions, CHECK_BATCH):
                assert await store.check_sessions("demo", live[k : k + CHECK_BATCH]) == []
            times.append(time.perf_counter() - start)
        print(f"check of {sessions:,} sessions ({-(-sessions // CHECK_BATCH)} queries): "
              f"median {statistics.median(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms over {rounds} rounds")  # fmt: skip
    finally:
        await store.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.rounds))
