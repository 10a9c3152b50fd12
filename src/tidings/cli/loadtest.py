"""``tidings loadtest`` and ``tidings loadtest-worker``: simulated devices against a gateway."""

from __future__ import annotations

import argparse
import os
import sys

from tidings.admin_client import AdminError
from tidings.cli.common import (
    Command,
    fail,
    missing_server_extra,
)

__all__ = ["COMMAND", "WORKER_COMMAND"]


def _configure_loadtest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument(
        "--scenario",
        default="broadcast",
        choices=[
            "broadcast",
            "segment",
            "trigger",
            "caps",
            "reconnect-storm",
            "node-failure",
            "week",
        ],
        help="what to measure (default broadcast)",
    )
    p.add_argument("--baseline", action="store_true",
                   help="also measure a bare websockets broadcast in the same run")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a latency histogram (SVG)")
    p.add_argument("--workers", type=int, default=2, help="device worker processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (reproducible runs)")
    p.add_argument("--no-personas", action="store_true",
                   help="plain devices in UTC without quiet hours, events or clicks")  # fmt: skip
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for deliveries")
    p.add_argument("--nodes", type=int, default=1,
                   help="gateway processes (default 1); more than one form a cluster and need "
                   "--db and --broker")  # fmt: skip
    p.add_argument("--db", metavar="URL",
                   help="postgresql://… for --nodes > 1: a fresh database is made next to it "
                   "for the run and dropped after it")  # fmt: skip
    p.add_argument("--broker", metavar="URL", help="redis://… for --nodes > 1")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="run the devices on workers that join over TCP (tidings loadtest-worker"
                   " --coordinator HOST:PORT, on this or other machines) instead of local"
                   " processes; their clocks are read and their latencies corrected")  # fmt: skip
    p.add_argument("--expect-workers", type=int, default=2, metavar="N",
                   help="with --listen: how many workers to wait for (default 2)")  # fmt: skip
    p.add_argument(
        "--key",
        help="with --listen: the shared key workers join with (default:"
        " $TIDINGS_LOADTEST_KEY, else a new one printed with the worker command)",
    )
    p.add_argument("--device-kind", choices=("sdk", "wire"), default="sdk",
                   help="sdk (default): real SDK devices with personas, for every scenario;"
                   " wire: lean devices speaking the protocol directly (hello, resume, ack,"
                   " dedup; a few KiB each), for broadcast, reconnect-storm and node-failure:"
                   " the fleet costs least, so the latency is the gateway's")  # fmt: skip
    p.add_argument("--days", type=int, default=7,
                   help="simulated days of the week scenario (default 7)")  # fmt: skip
    p.add_argument("--speed", type=float, default=None,
                   help="simulated seconds per real second of the week scenario "
                   "(default: 3600, an hour a second)")  # fmt: skip
    p.add_argument("--gateway-logs", metavar="DIR",
                   help="keep each gateway's log as DIR/node-N.log (default: discarded); read"
                   " them when a run loses messages or stops")  # fmt: skip


def _progress(stage: str, n: int, total: int) -> None:
    """A bar redrawn in place on a terminal; piped or redirected, one line per phase."""
    if not sys.stderr.isatty():
        if n >= total:
            print(f"{stage}: {n}/{total}", file=sys.stderr, flush=True)
        return
    width = 30
    filled = width * n // max(1, total)
    end = "\n" if n >= total else ""
    print(f"\r{stage:<11} [{'#' * filled}{'.' * (width - filled)}] {n:>6}/{total}", end=end,
          file=sys.stderr, flush=True)  # fmt: skip


def _run_loadtest(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.workers < 1:
        return fail("--devices and --workers must be at least 1")
    try:
        from tidings.simulator.engine import run_loadtest, write_svg
    except ModuleNotFoundError as exc:
        return missing_server_extra(exc)
    coordinator = None
    if args.listen:
        from tidings.simulator.engine.fleet import Coordinator

        try:
            host, port = _host_port(args.listen, "--listen")
        except ValueError as exc:
            return fail(str(exc))
        if args.expect_workers < 1:
            return fail("--expect-workers must be at least 1")
        key = args.key or os.environ.get("TIDINGS_LOADTEST_KEY")
        if not key:
            import secrets

            key = secrets.token_hex(16)
            join = f"tidings loadtest-worker --coordinator {args.listen} --key {key}"
            print(f"start {args.expect_workers} worker(s) with: {join}", file=sys.stderr,
                  flush=True)  # fmt: skip
        coordinator = Coordinator(host, port, args.expect_workers, key.encode())
    try:
        report = run_loadtest(devices=args.devices, scenario=args.scenario,
                              baseline=args.baseline, workers=args.workers,
                              timeout=args.timeout, progress=_progress, seed=args.seed,
                              personas=not args.no_personas, nodes=args.nodes,
                              db=args.db, broker=args.broker, days=args.days,
                              speed=args.speed, device_kind=args.device_kind,
                              coordinator=coordinator,
                              gateway_logs=args.gateway_logs)  # fmt: skip
    except ValueError as exc:
        return fail(str(exc))
    except (RuntimeError, OSError, AdminError) as exc:  # the gateway stopped answering
        return fail(f"the load test stopped: {exc}", 1)
    print(report.table())
    if args.json:
        report.write_json(args.json)
    if args.plot:
        series = {"tidings": report.latencies_ms}
        if report.baseline_latencies_ms is not None:
            series["bare websockets"] = report.baseline_latencies_ms
        write_svg(args.plot, series)
    if report.lost or report.violations:
        print("FAILED: messages were lost or rules violated", file=sys.stderr)
        return 1
    return 0


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option}: HOST:PORT, e.g. 127.0.0.1:7300, got {text!r}")
    return host, int(port)


def _configure_loadtest_worker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                   help="the tidings loadtest --listen address to join")  # fmt: skip
    p.add_argument("--key", help="the key the coordinator printed (default:"
                   " $TIDINGS_LOADTEST_KEY)")  # fmt: skip
    p.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to keep trying to reach the coordinator (default 120)",
    )


def _run_loadtest_worker(args: argparse.Namespace) -> int:
    try:
        host, port = _host_port(args.coordinator, "--coordinator")
    except ValueError as exc:
        return fail(str(exc))
    key = args.key or os.environ.get("TIDINGS_LOADTEST_KEY")
    if not key:
        return fail("--key: give the key the coordinator printed (or set TIDINGS_LOADTEST_KEY)")
    try:
        from tidings.simulator.engine.fleet import run_remote_worker
    except ModuleNotFoundError as exc:
        return missing_server_extra(exc)
    from multiprocessing import AuthenticationError

    try:
        run_remote_worker(host, port, key.encode(), wait_s=args.wait)
    except AuthenticationError:
        return fail("the coordinator refused this worker: its --key is another one", 1)
    except OSError as exc:
        return fail(f"could not join the coordinator at {args.coordinator}: {exc}", 1)
    except EOFError:
        return fail("the coordinator ended the connection before the run did", 1)
    return 0


COMMAND = Command(
    name="loadtest",
    help="connect N simulated devices and measure fan-out, with an optional bare baseline",
    description="Start a gateway process and N real SDK devices in worker processes, run a "
    "scenario and print connect rate, fan-out latency percentiles (server send to device "
    "receive), delivery ratio, precision/recall, violations, gateway CPU and RSS. Exits 1 "
    "when a message was lost or a rule was violated.",
    examples="""
        tidings loadtest --devices 2000 --baseline
        tidings loadtest --devices 10000 --scenario broadcast --baseline --json out.json
        tidings loadtest --devices 5000 --scenario reconnect-storm --plot latency.svg
        tidings loadtest --devices 2000 --scenario caps
        tidings loadtest --devices 10000 --scenario week --days 14 --speed 3600
        tidings loadtest --devices 2000 --nodes 3 --scenario node-failure \\
            --db postgresql://postgres@127.0.0.1:5432/postgres --broker redis://127.0.0.1:6379/0
    """,
    configure=_configure_loadtest,
    run=_run_loadtest,
)


WORKER_COMMAND = Command(
    name="loadtest-worker",
    help="run a share of a load test's devices for a coordinator (tidings loadtest --listen)",
    description="Join a coordinator over TCP, let it read this machine's clock, and run "
    "the devices it assigns until the run ends; start one per machine (or per core).",
    examples="""
        tidings loadtest --devices 20000 --device-kind wire --listen 0.0.0.0:7300 \
            --expect-workers 2 --key s3cret
        tidings loadtest-worker --coordinator 10.0.0.5:7300 --key s3cret
    """,
    configure=_configure_loadtest_worker,
    run=_run_loadtest_worker,
)
