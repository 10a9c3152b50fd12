"""Gateway memory per idle connection: RSS with N welcomed, idle devices minus RSS with none.
With ``--idle S``, also the gateway's CPU over S seconds of those devices doing nothing: what
keeping them alive costs (its pings every ``--heartbeat`` seconds; the devices send none).

Usage::

    .venv/bin/python benchmarks/idle_memory.py --devices 5000
    .venv/bin/python benchmarks/idle_memory.py --devices 10000 --heartbeat 5 --idle 20
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from typing import Any

from tidings.simulator.engine import GatewayProcess, raise_nofile
from tidings.simulator.engine.fleet import DEFAULT_RAMP, rss_mib


def _worker(url: str, indexes: list[int], ready: Any, stop: Any) -> None:
    async def main() -> None:
        from websockets.asyncio.client import connect

        from tidings.protocol import SUBPROTOCOL
        from tidings.protocol.codec import encode
        from tidings.protocol.frames import Hello
        from tidings.protocol.tokens import mint_token

        raise_nofile()
        sem = asyncio.Semaphore(DEFAULT_RAMP)
        conns = []

        async def one(i: int) -> None:
            async with sem:
                token = mint_token(secret="dev-secret", app="demo", device=f"d{i}", user=f"u{i}")
                ws = await connect(url, subprotocols=[SUBPROTOCOL], compression=None,  # type: ignore[list-item]
                                   ping_interval=None)  # fmt: skip
                await ws.send(encode(Hello(token=token)))
                await ws.recv()
                conns.append(ws)

        await asyncio.gather(*(one(i) for i in indexes))
        ready.send(len(conns))
        await asyncio.to_thread(stop.recv)
        for ws in conns:
            await ws.close()

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--heartbeat", type=float, default=25.0,
                        help="the gateway's heartbeat_s (default 25, as shipped)")  # fmt: skip
    parser.add_argument("--idle", type=float, default=0.0,
                        help="seconds of idle to read the gateway's CPU over"
                        " (default: none)")  # fmt: skip
    args = parser.parse_args()
    raise_nofile()
    os.environ["TIDINGS_HEARTBEAT_S"] = str(args.heartbeat)
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(f"{tmp}/m.db")
        gateway.start()
        port = gateway.port
        try:
            # Warm the paths once (imports, first connection) before the baseline reading.
            ctx = mp.get_context("spawn")
            before = rss_mib(gateway.proc.pid) * 1024
            procs, readies, stops = [], [], []
            for w in range(args.workers):
                r_recv, r_send = ctx.Pipe(duplex=False)
                s_recv, s_send = ctx.Pipe(duplex=False)
                idx = list(range(w, args.devices, args.workers))
                p = ctx.Process(
                    target=_worker, args=(f"ws://127.0.0.1:{port}", idx, r_send, s_recv)
                )
                p.start()
                procs.append(p)
                readies.append(r_recv)
                stops.append(s_send)
            n = sum(r.recv() for r in readies)
            time.sleep(1.0)
            after = rss_mib(gateway.proc.pid) * 1024
            cpu0 = gateway.cpu_seconds()
            time.sleep(args.idle)
            idle_cpu = gateway.cpu_seconds() - cpu0
            for s in stops:
                s.send("stop")
            for p in procs:
                p.join(timeout=60)
        finally:
            gateway.stop()
    per = (after - before) / n
    print(f"{n} idle devices: gateway RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB, "
          f"{per:.1f} KiB per connection")  # fmt: skip
    if args.idle:
        print(f"idle {args.idle:.0f} s, heartbeat {args.heartbeat:g} s: gateway CPU "
              f"{idle_cpu:.2f} s ({100 * idle_cpu / args.idle:.1f} % of a core), "
              f"{1e6 * idle_cpu / (n * args.idle / args.heartbeat):.1f} us per ping")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
