"""Behaviour-event ingest: events per second into the gateway, persisted, de-duplicated.

Devices in worker processes send ``events`` frames (100 events each) to a gateway subprocess
and count the ``ok`` answers, which the gateway sends only after the group commit. At the end
the harness counts the rows in the database to check nothing was lost.

With ``--tag-rules N`` the gateway first gets N tag rules on the event the devices send, so
every event also updates the sender's profile and slides N tag windows (the engine's live path).

Usage::

    .venv/bin/python benchmarks/ingest.py --devices 200 --seconds 10 [--tag-rules 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from typing import Any

from tidings.simulator.engine import GatewayProcess, raise_nofile

WINDOW = 4  # frames in flight per device


async def _device(url: str, index: int, until: float, counts: list[int]) -> None:
    from tidings.protocol import SUBPROTOCOL
    from tidings.protocol.codec import decode_server, encode
    from tidings.protocol.frames import Event, Events, Hello, Ok
    from tidings.protocol.tokens import mint_token
    from websockets.asyncio.client import connect

    token = mint_token(secret="dev-secret", app="demo", device=f"d{index}", user=f"u{index}")
    async with connect(url, subprotocols=[SUBPROTOCOL], compression=None) as ws:  # type: ignore[list-item]
        await ws.send(encode(Hello(token=token)))
        await ws.recv()
        rid = 0
        in_flight = 0
        props = {"category": "sports", "item": "ball", "price": 19.9}
        while True:
            while in_flight < WINDOW and time.monotonic() < until:
                rid += 1
                ts = int(time.time() * 1000)
                events = tuple(
                    Event(id=f"{rid}-{i}", name="view_content", ts=ts, props=props)
                    for i in range(100)
                )
                await ws.send(encode(Events(rid=rid, events=events)))
                in_flight += 1
            if in_flight == 0:
                return
            frame = decode_server(await ws.recv())
            if isinstance(frame, Ok):
                in_flight -= 1
                counts[0] += 100


def _worker(url: str, indexes: list[int], seconds: float, out: Any) -> None:
    async def main() -> None:
        raise_nofile()
        counts = [0]
        until = time.monotonic() + seconds
        await asyncio.gather(*(_device(url, i, until, counts) for i in indexes))
        out.send(counts[0])

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tag-rules", type=int, default=0, help="tag rules on the sent event")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/ingest.db"
        gateway = GatewayProcess(db)
        gateway.start()
        port = gateway.port
        try:
            for i in range(args.tag_rules):
                rule = {"event": "view_content", "threshold": {"count": 3 + i},
                        "window_s": 604800,
                        "where": [{"prop": "category", "op": "eq", "value": "sports"}]}  # fmt: skip
                gateway.admin("PUT", f"/v1/tag-rules/fan{i}?app=demo", rule)
            ctx = mp.get_context("spawn")
            pipes, procs = [], []
            t0 = time.perf_counter()
            for w in range(args.workers):
                recv, send = ctx.Pipe(duplex=False)
                idx = list(range(w, args.devices, args.workers))
                p = ctx.Process(
                    target=_worker, args=(f"ws://127.0.0.1:{port}", idx, args.seconds, send)
                )
                p.start()
                pipes.append(recv)
                procs.append(p)
            acked = sum(r.recv() for r in pipes)
            elapsed = time.perf_counter() - t0
            for p in procs:
                p.join()
        finally:
            gateway.stop()
        stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    print(f"{args.devices} devices, {args.seconds:.0f} s: {acked:,} events acknowledged, "
          f"{stored:,} stored")  # fmt: skip
    print(f"ingest rate: {acked / elapsed:,.0f} events/s (persisted before ok)")
    return 0 if stored >= acked else 1


if __name__ == "__main__":
    sys.exit(main())
