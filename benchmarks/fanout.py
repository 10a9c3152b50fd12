"""Fan-out latency: Tidings gateway + real SDK clients vs. a bare websockets broadcast.

Both halves run in the same harness and the same run: N devices spread over worker processes
connect on loopback; one message is sent to all of them; every device records
``receive time - sent_at`` (sent_at is stamped by the server when it starts writing the
fan-out). The bare baseline is a minimal ``websockets`` server that broadcasts one identical
frame, of the same size as Tidings' deliver frame, to the same number of raw clients.

Usage::

    .venv/bin/python benchmarks/fanout.py --devices 2000
    .venv/bin/python benchmarks/fanout.py --devices 10000 --workers 2 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

import msgpack

DEFAULT_DEVICES = 2_000
DEFAULT_WORKERS = 2
CONNECT_CONCURRENCY = 200  # per worker: bounded ramp, no SYN flood
RESULT_TIMEOUT_S = 60.0


def raise_nofile() -> None:
    """Lift the soft open-files limit to the hard limit: each device is one socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL if it takes more than 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print("  (gateway did not stop within 30 s; killed)", flush=True)
        proc.kill()
        proc.wait()


def start_gateway(db: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start ``tidings gateway`` on free ports with ``db``; return it once /healthz answers."""
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-m", "tidings", "gateway", "--port", str(port)]
    cmd += ["--admin-port", str(admin), "--db", db]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            _http_json(f"http://127.0.0.1:{admin}/healthz")
            return proc, port, admin
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError("the gateway did not start within 20 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of a list of milliseconds (nearest-rank)."""
    if not samples_ms:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    data = sorted(samples_ms)

    def rank(p: float) -> float:
        return data[min(len(data) - 1, max(0, round(p / 100 * len(data)) - 1))]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": data[-1]}


# --- workers ------------------------------------------------------------------------------------


async def _bare_device(url: str, ready: asyncio.Event, latencies: list[float]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        ready.set()
        data = await ws.recv()
        now = time.time()
        sent_at = msgpack.unpackb(data)["msg"]["sent_at"]
        latencies.append(now * 1000 - sent_at)


async def _raw_device(url: str, index: int, ready: asyncio.Event, latencies: list[float]) -> None:
    """A bare protocol client: hello, then ack the first delivery (no SDK logic)."""
    from tidings.protocol import SUBPROTOCOL
    from tidings.protocol.codec import decode_server, encode
    from tidings.protocol.frames import Ack, Deliver, Hello
    from tidings.protocol.tokens import mint_token
    from websockets.asyncio.client import connect

    token = mint_token(secret="dev-secret", app="demo", device=f"d{index}", user=f"u{index}")
    async with connect(url, subprotocols=[SUBPROTOCOL], compression=None, ping_interval=None) as ws:  # type: ignore[list-item]
        await ws.send(encode(Hello(token=token)))
        await ws.recv()  # welcome
        ready.set()
        while True:
            frame = decode_server(await ws.recv())
            if isinstance(frame, Deliver):
                latencies.append(time.time() * 1000 - frame.msg.sent_at)
                await ws.send(encode(Ack(seq=frame.seq)))
                return


async def _tidings_device(
    url: str, index: int, ready: asyncio.Event, latencies: list[float], done: asyncio.Event
) -> Any:
    from tidings.client_sdk import TidingsClient
    from tidings.protocol.tokens import mint_token

    token = mint_token(secret="dev-secret", app="demo", device=f"d{index}", user=f"u{index}")
    client = TidingsClient(url=url, token=token, device_id=f"d{index}", store_path=None)

    def on_message(msg: Any, received_at: float) -> None:
        latencies.append(received_at * 1000 - msg.sent_at)
        done.set()

    client.on_message(on_message)
    await client.start()
    await client.wait_connected(timeout=60)
    ready.set()
    return client


async def _worker_main(
    kind: str, url: str, indexes: list[int], to_parent: Any, from_parent: Any
) -> None:
    raise_nofile()
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    latencies: list[float] = []
    readies = [asyncio.Event() for _ in indexes]
    dones = [asyncio.Event() for _ in indexes]
    tasks: list[asyncio.Task[Any]] = []
    t0 = time.perf_counter()

    async def start_one(pos: int, index: int) -> Any:
        async with sem:
            if kind in ("bare", "raw"):
                coro = (
                    _bare_device(url, readies[pos], latencies)
                    if kind == "bare"
                    else _raw_device(url, index, readies[pos], latencies)
                )
                tasks.append(asyncio.create_task(coro))
                await readies[pos].wait()
                return None
            return await _tidings_device(url, index, readies[pos], latencies, dones[pos])

    clients = await asyncio.gather(*(start_one(p, i) for p, i in enumerate(indexes)))
    to_parent.send(("connected", len(indexes), time.perf_counter() - t0))
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    expected = len(indexes)
    while len(latencies) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - polls with a deadline
        await asyncio.sleep(0.05)
    to_parent.send(("latencies", latencies))
    await asyncio.to_thread(from_parent.recv)  # parent says when to disconnect
    for task in tasks:
        task.cancel()
    for client in clients:
        if client is not None:
            await client.close()


def _worker(kind: str, url: str, indexes: list[int], to_parent: Any, from_parent: Any) -> None:
    asyncio.run(_worker_main(kind, url, indexes, to_parent, from_parent))


# --- the bare server --------------------------------------------------------------------------


async def _bare_server(port: int, control_port: int, n: int, frame_size: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    raise_nofile()
    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        while len(conns) < n:  # noqa: ASYNC110 - polls until every client is in
            await asyncio.sleep(0.01)
        sent_at = int(time.time() * 1000)
        msg = {"id": "m" * 32, "kind": "banner", "title": "t", "body": "", "sent_at": sent_at}
        body = msgpack.packb({"t": "deliver", "seq": 1, "msg": msg})
        pad = max(0, frame_size - len(body))
        msg["body"] = "x" * pad
        frame = msgpack.packb({"t": "deliver", "seq": 1, "msg": msg})
        broadcast(conns, frame)
        writer.write(b"sent\n")
        await writer.drain()
        writer.close()

    async with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096
    ):
        server = await asyncio.start_server(control, "127.0.0.1", control_port)
        async with server:
            await asyncio.Future()


def _run_bare_server(port: int, control_port: int, n: int, frame_size: int) -> None:
    asyncio.run(_bare_server(port, control_port, n, frame_size))


# --- orchestration ------------------------------------------------------------------------------


def _spawn_workers(kind: str, url: str, n: int, workers: int) -> list[tuple[Any, Any, Any]]:
    ctx = mp.get_context("spawn")
    out = []
    for w in range(workers):
        indexes = list(range(w, n, workers))
        parent_recv, child_send = ctx.Pipe(duplex=False)
        child_recv, parent_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker, args=(kind, url, indexes, child_send, child_recv), daemon=True
        )
        proc.start()
        out.append((proc, parent_recv, parent_send))
    return out


def _wait_connected(procs: list[tuple[Any, Any, Any]], n: int) -> float:
    t0 = time.perf_counter()
    for _proc, recv, _send in procs:
        msg = recv.recv()
        assert msg[0] == "connected", msg
    elapsed = time.perf_counter() - t0
    print(f"  {n} devices connected in {elapsed:.2f} s ({n / elapsed:,.0f}/s)", flush=True)
    return elapsed


def _collect(procs: list[tuple[Any, Any, Any]]) -> list[float]:
    latencies: list[float] = []
    for _proc, recv, _send in procs:
        msg = recv.recv()
        latencies.extend(msg[1])
    for proc, _recv, send in procs:
        send.send("stop")
        proc.join(timeout=30)
    return latencies


def _http_json(url: str, body: dict[str, Any] | None = None, key: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def run_tidings(n: int, workers: int, client: str = "tidings") -> dict[str, Any]:
    """Start a gateway subprocess, connect n SDK devices, send one message to all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        gateway, port, admin = start_gateway(f"{tmp}/bench.db")
        try:
            procs = _spawn_workers(client, f"ws://127.0.0.1:{port}", n, workers)
            connect_s = _wait_connected(procs, n)
            users = [f"u{i}" for i in range(n)]
            t0 = time.perf_counter()
            result = _http_json(
                f"http://127.0.0.1:{admin}/v1/messages",
                {
                    "app": "demo",
                    "to": {"users": users},
                    "kind": "banner",
                    "title": "Flash sale",
                    "body": "Half price on everything until midnight",
                    "category": "transactional",
                },
                key="dev-admin-key",
            )
            api_ms = (time.perf_counter() - t0) * 1000
            latencies = _collect(procs)
        finally:
            stop_process(gateway)
    return {
        "connect_s": connect_s,
        "api_ms": api_ms,
        "devices_targeted": result.get("devices"),
        "latency_ms": percentiles(latencies),
        "received": len(latencies),
    }


def run_bare(n: int, workers: int, frame_size: int) -> dict[str, Any]:
    """A bare websockets broadcast of one frame of ``frame_size`` bytes to n raw clients."""
    port, control_port = free_port(), free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(
        target=_run_bare_server, args=(port, control_port, n, frame_size), daemon=True
    )
    server.start()
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", control_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        procs = _spawn_workers("bare", f"ws://127.0.0.1:{port}", n, workers)
        connect_s = _wait_connected(procs, n)
        with socket.create_connection(("127.0.0.1", control_port), timeout=120) as ctl:
            ctl.sendall(b"go\n")
            ctl.recv(16)
        latencies = _collect(procs)
    finally:
        server.terminate()
        server.join(timeout=10)
    return {
        "connect_s": connect_s,
        "latency_ms": percentiles(latencies),
        "received": len(latencies),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--frame-size", type=int, default=260, help="bytes of the bare frame")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--client",
        choices=["tidings", "raw"],
        default="tidings",
        help="devices: the real SDK (default) or a bare protocol client",
    )
    args = parser.parse_args(argv)
    raise_nofile()
    print(f"Tidings: {args.devices} SDK devices over {args.workers} worker processes", flush=True)
    tid = run_tidings(args.devices, args.workers, args.client)
    print(f"Bare websockets broadcast: {args.devices} raw clients", flush=True)
    bare = run_bare(args.devices, args.workers, args.frame_size)
    ratio = tid["latency_ms"]["p99"] / bare["latency_ms"]["p99"]
    print()
    print(f"{'':22}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  received  connect")
    for name, r in (("tidings", tid), ("bare websockets", bare)):
        lat = r["latency_ms"]
        print(
            f"{name:22}{lat['p50']:9.1f}{lat['p95']:9.1f}{lat['p99']:9.1f}{lat['max']:9.1f}"
            f"  {r['received']:>8}  {r['connect_s']:6.2f} s"
        )
    print(
        f"\np99 ratio tidings / bare = {ratio:.2f}   (admin API call took {tid['api_ms']:.0f} ms)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"devices": args.devices, "tidings": tid, "baseline": bare, "ratio_p99": ratio},
                f,
                indent=2,
            )
    lost = args.devices - tid["received"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
