"""Behaviour-event ingest: events per second into the gateway, persisted, de-duplicated.

Devices in worker processes send ``events`` frames (100 events each) to a gateway subprocess
and count the ``ok`` answers, which the gateway sends only after the group commit. At the end
the harness counts the rows in the database to check nothing was lost. The gateway runs from a
config file with the app's event quotas lifted (see :data:`QUOTA`); a refused batch ends the run.

With ``--tag-rules N`` the gateway first gets N tag rules on the event the devices send, so
every event also updates the sender's profile and slides N tag windows (the engine's live path).

``--durability full|relaxed|both`` runs the gateway with that ``TIDINGS_DURABILITY`` (``both``:
one gateway of each, alternating for ``--rounds``, in the same run) and prints the ratio.
``--sends N`` then also fires N direct sends (``POST /v1/messages`` to one user each, answered
202 once committed) from ``--concurrency`` threads at each gateway and reports sends/s; and
``--serial N`` (default 2000) times N store writes awaited one by one in this process, one
commit each: the raw cost of a commit (and its fsync) without the group commit's help.

Usage::

    .venv/bin/python benchmarks/ingest.py --devices 200 --seconds 10 [--tag-rules 3]
    .venv/bin/python benchmarks/ingest.py --durability both --rounds 3 --sends 2000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tidings.simulator.engine import GatewayProcess, raise_nofile

WINDOW = 4  # frames in flight per device
QUOTA = 10**9
"""Events per minute per device and per app for the benchmark's app: it measures throughput,
so it lifts the quotas (a security limit, 600 a minute per device by default)."""


async def _device(url: str, index: int, until: float, counts: list[int]) -> None:
    from websockets.asyncio.client import connect

    from tidings.protocol import SUBPROTOCOL
    from tidings.protocol.codec import decode_server, encode
    from tidings.protocol.frames import Error, Event, Events, Hello, Ok
    from tidings.protocol.tokens import mint_token

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
            elif isinstance(frame, Error) and frame.rid is not None:
                raise SystemExit(f"device d{index}: the gateway refused a batch: {frame}")


def _worker(url: str, indexes: list[int], seconds: float, out: Any) -> None:
    async def main() -> None:
        raise_nofile()
        counts = [0]
        until = time.monotonic() + seconds
        await asyncio.gather(*(_device(url, i, until, counts) for i in indexes))
        out.send(counts[0])

    asyncio.run(main())


def _ingest(gateway: GatewayProcess, args: argparse.Namespace) -> tuple[int, float]:
    """Run the devices against ``gateway``; return (events acknowledged, seconds)."""
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    t0 = time.perf_counter()
    for w in range(args.workers):
        recv, send = ctx.Pipe(duplex=False)
        idx = list(range(w, args.devices, args.workers))
        p = ctx.Process(target=_worker, args=(gateway.url, idx, args.seconds, send))
        p.start()
        pipes.append(recv)
        procs.append(p)
    acked = sum(r.recv() for r in pipes)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return acked, elapsed


def _send_burst(
    gateway: GatewayProcess, sends: int, concurrency: int, users: int
) -> dict[str, float]:
    """``sends`` direct sends from ``concurrency`` threads: sends/s and 202 latency (ms)."""

    def send(i: int) -> float:
        body = {"app": "demo", "to": {"users": [f"u{i % users}"]}, "kind": "inbox",
                "title": "Receipt", "body": f"Order {i}", "category": "transactional"}  # fmt: skip
        t = time.perf_counter()
        gateway.admin("POST", "/v1/messages", body)
        return (time.perf_counter() - t) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = sorted(pool.map(send, range(sends)))
    elapsed = time.perf_counter() - t0
    return {
        "rate": sends / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


async def _serial_writes(db: str, mode: str, n: int) -> float:
    """``n`` store writes one after another in this process, each awaited: one commit (and
    with ``full`` one fsync) per write, the case the group commit cannot help. Writes/s."""
    from tidings.server.storage import DeviceRow, SqliteStore

    store = SqliteStore(db, durability=mode)
    await store.open()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await store.upsert_device(DeviceRow(app="bench", device_id=f"s{i}", user_id=None,
                platform="", app_version="", locale="", tz="", sdk_version="",
                first_seen=0, last_seen=0))  # fmt: skip
        return n / (time.perf_counter() - t0)
    finally:
        await store.close()


def _run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    """One gateway with ``mode`` durability: the ingest, then the optional send burst."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db = f"{tmp}/ingest.db"
        config = f"{tmp}/ingest.toml"
        with open(config, "w", encoding="utf-8") as f:
            f.write(f'[[apps]]\nid = "demo"\nsecret = "dev-secret"\nadmin_key = "dev-admin-key"\n'
                    f"device_events_per_min = {QUOTA}\napp_events_per_min = {QUOTA}\n")  # fmt: skip
        # The gateway subprocess inherits both.
        os.environ["TIDINGS_CONFIG"] = config
        os.environ["TIDINGS_DURABILITY"] = mode
        gateway = GatewayProcess(db)
        gateway.start()
        try:
            for i in range(args.tag_rules):
                rule = {"event": "view_content", "threshold": {"count": 3 + i},
                        "window_s": 604800,
                        "where": [{"prop": "category", "op": "eq", "value": "sports"}]}  # fmt: skip
                gateway.admin("PUT", f"/v1/tag-rules/fan{i}?app=demo", rule)
            acked, elapsed = _ingest(gateway, args)
            burst = (
                _send_burst(gateway, args.sends, args.concurrency, args.devices)
                if args.sends
                else {}
            )
        finally:
            gateway.stop()
        stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone()[0]
        serial = (
            asyncio.run(_serial_writes(f"{tmp}/serial.db", mode, args.serial))
            if args.serial
            else 0.0
        )
    rate = acked / elapsed
    print(
        f"[{mode}] {args.devices} devices, {args.seconds:.0f} s: {acked:,} events acked,"
        f" {stored:,} stored; ingest rate: {rate:,.0f} events/s (persisted before ok)"
    )
    if burst:
        print(f"[{mode}] {args.sends:,} direct sends from {args.concurrency} threads: "
              f"{burst['rate']:,.0f} sends/s, 202 p50 {burst['p50']:.1f} ms, "
              f"p99 {burst['p99']:.1f} ms")  # fmt: skip
    if serial:
        print(f"[{mode}] {args.serial:,} serial store writes (one commit each): {serial:,.0f} /s,"
              f" {1000 / serial:.2f} ms each")  # fmt: skip
    if stored < acked:
        print(f"[{mode}] LOST: {acked - stored:,} acknowledged events are not stored")
    return {
        "ingest": rate,
        "lost": float(acked - stored),
        "serial": serial,
        **{f"send_{k}": v for k, v in burst.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tag-rules", type=int, default=0, help="tag rules on the sent event")
    parser.add_argument("--durability", choices=("full", "relaxed", "both"), default="full",
                        help="the gateway's durability (both: one of each, same run)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="runs per durability mode")
    parser.add_argument("--sends", type=int, default=0, help="direct sends after the ingest")
    parser.add_argument("--serial", type=int, default=2000, help="serial in-process store writes")
    parser.add_argument("--concurrency", type=int, default=32, help="threads for --sends")
    parser.add_argument("--dir", help="where the database lives (default: the temp directory)")
    args = parser.parse_args()

    modes = ["full", "relaxed"] if args.durability == "both" else [args.durability]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # alternate, so that drift on the machine hits both modes alike
            results[mode].append(_run(mode, args))
    if len(modes) == 2 or args.rounds > 1:
        print("median over rounds:")
        medians = {}
        for mode, runs in results.items():
            medians[mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            line = f"  {mode:<8} ingest {medians[mode]['ingest']:,.0f} events/s"
            if "send_rate" in medians[mode]:
                line += f", direct sends {medians[mode]['send_rate']:,.0f} /s"
            if medians[mode]["serial"]:
                line += f", serial store writes {medians[mode]['serial']:,.0f} /s"
            print(line)
        if len(modes) == 2:
            full, relaxed = medians["full"], medians["relaxed"]
            line = f"  full / relaxed: ingest {full['ingest'] / relaxed['ingest']:.2f}"
            if "send_rate" in full:
                line += f", direct sends {full['send_rate'] / relaxed['send_rate']:.2f}"
            if full["serial"] and relaxed["serial"]:
                line += f", serial store writes {full['serial'] / relaxed['serial']:.2f}"
            print(line)
    lost = any(r["lost"] > 0 for runs in results.values() for r in runs)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
