"""Is the load tester honest? Its ratio to the bare baseline against an independent fleet's.

The load test reports the gateway's broadcast latency as a ratio to a bare ``websockets``
server's, both measured by its own lean devices. An independent client fleet, written from
PROTOCOL.md in JavaScript (``benchmarks/node_fleet/fleet.mjs``, split over as many Node.js
processes as the load test has workers, each delivery timed from ``sent_at`` to its read off
the socket), measures the same two servers on the same machine, one after the other:

1. ``tidings loadtest --device-kind wire --scenario broadcast --baseline``: its wire p99 of the
   gateway and of the bare server, and their ratio;
2. the Node.js fleet against ``tidings gateway`` (fresh SQLite file, one broadcast through the
   admin API, as the load test sends it), then against the same bare server (one frame of the
   load test's size).

Prints both ratios and how far apart they are (the target is within 15 %). Needs Node.js and
``npm install`` in ``benchmarks/node_fleet``.

Usage::

    (cd benchmarks/node_fleet && npm install)
    .venv/bin/python benchmarks/independent_fleet.py --devices 10000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tidings.protocol.tokens import mint_token
from tidings.server.config import DEV_APP, DEV_SECRET
from tidings.simulator.engine.baseline import BareServer
from tidings.simulator.engine.loadtest import GatewayProcess, _broadcast
from tidings.simulator.engine.report import percentiles

FLEET = Path(__file__).parent / "node_fleet" / "fleet.mjs"
FRAME_SIZE = 260
"""Bytes of the bare server's frame: the load test's default (about a broadcast's deliver)."""


def load_test(devices: int) -> dict[str, float]:
    """The load test's own figures for one broadcast to ``devices`` lean devices, and for the
    bare baseline of the same run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "tidings", "loadtest", "--devices", str(devices),
                        "--device-kind", "wire", "--scenario", "broadcast", "--baseline",
                        "--json", str(out)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        report = json.loads(out.read_text())
    return {"p99": report["latency_ms"]["wire"]["p99"],
            "bare_p99": report["baseline"]["latency_ms"]["p99"]}  # fmt: skip


def node_fleet(devices: int, processes: int) -> dict[str, float]:
    """The independent fleet's p99 for one broadcast to ``devices`` clients of the gateway,
    and of the bare server."""
    with tempfile.TemporaryDirectory() as tmp:
        gateway = GatewayProcess(str(Path(tmp) / "gw.db"))
        gateway.start()
        try:
            slices = []
            for k in range(processes):
                listed = Path(tmp) / f"tokens{k}.json"
                listed.write_text(json.dumps([
                    mint_token(secret=DEV_SECRET, app=DEV_APP, device=f"d{i}", user=f"u{i}")
                    for i in range(k, devices, processes)
                ]))  # fmt: skip
                slices.append(str(listed))
            ours = _measure(gateway.url, slices, lambda: _broadcast(gateway, devices))
        finally:
            gateway.stop()
        bare = BareServer(FRAME_SIZE)
        bare.start()
        try:
            counts = [len(range(k, devices, processes)) for k in range(processes)]
            theirs = _measure(bare.url, [f"bare:{n}" for n in counts],
                              lambda: bare.broadcast(devices))  # fmt: skip
        finally:
            bare.stop()
    return {"p99": ours, "bare_p99": theirs}


def _measure(url: str, slices: list[str], send: Callable[[], object]) -> float:
    """Connect one Node.js process per slice, ``send`` one message to all, return the p99."""
    with tempfile.TemporaryDirectory() as tmp:
        fleets = []
        try:
            for k, clients in enumerate(slices):
                out = Path(tmp) / f"out{k}.json"
                command = ["node", str(FLEET), url, clients, "1", str(out)]
                fleets.append((subprocess.Popen(command, stdout=subprocess.PIPE, text=True), out))
            for fleet, _ in fleets:
                assert fleet.stdout is not None
                line = fleet.stdout.readline().split()
                if not line or line[0] != "ready":
                    raise SystemExit(f"the node fleet did not connect: {line}")
            time.sleep(2.0)  # the load test settles before it sends, too
            send()
            latencies: list[float] = []
            for fleet, out in fleets:
                fleet.wait(timeout=180)
                latencies += json.loads(out.read_text())["latencies_ms"]
        finally:
            for fleet, _ in fleets:
                fleet.kill()
    return percentiles(latencies)["p99"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1, help="pairs of runs")
    parser.add_argument("--processes", type=int, default=2,
                        help="Node.js processes of the independent fleet (the load test's "
                        "default --workers is 2)")  # fmt: skip
    args = parser.parse_args()
    if not FLEET.with_name("node_modules").exists():
        raise SystemExit("run `npm install` in benchmarks/node_fleet first")
    for run in range(args.runs):
        ours = load_test(args.devices)
        theirs = node_fleet(args.devices, args.processes)
        ratio_ours = ours["p99"] / ours["bare_p99"]
        ratio_theirs = theirs["p99"] / theirs["bare_p99"]
        print(f"run {run + 1}: {args.devices:,} devices, one broadcast, p99 gateway / bare")
        print(f"  tidings loadtest (wire devices)       {ours['p99']:7.1f} / "
              f"{ours['bare_p99']:7.1f} ms = {ratio_ours:.2f}")  # fmt: skip
        print(f"  node fleet ({args.processes} processes, independent) {theirs['p99']:7.1f} / "
              f"{theirs['bare_p99']:7.1f} ms = {ratio_theirs:.2f}")  # fmt: skip
        print(
            f"  the load test's ratio is {abs(ratio_ours / ratio_theirs - 1):.0%} "
            f"{'above' if ratio_ours > ratio_theirs else 'below'} the independent one"
        )


if __name__ == "__main__":
    main()
