"""``tidings gateway``: the WebSocket gateway and its admin API, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any, cast

from tidings import __version__
from tidings.cli.common import (
    Command,
    fail,
    missing_server_extra,
)

__all__ = ["COMMAND"]


def _configure_gateway(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface for device WebSockets (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for device WebSockets (default 8765; 0 = any)")
    p.add_argument("--admin-host", help="interface for the admin HTTP API (default 127.0.0.1)")
    p.add_argument("--admin-port", type=int, help="port for the admin API (default 8766; 0 = any)")
    p.add_argument(
        "--db",
        metavar="PATH|URL",
        help="SQLite database file (default tidings.db), or postgresql://USER@HOST:PORT/DB for "
        "a cluster of gateways",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="redis://HOST:PORT/N: run as one node of a cluster (every node with the same --db "
        "and --broker); needs --db postgresql://…",
    )
    p.add_argument("--node-id", metavar="NAME", help="this node's name (default host:pid)")
    p.add_argument(
        "--durability",
        choices=("full", "relaxed"),
        help="full (default): fsync every commit before answering, so what was answered "
        "survives a power loss; relaxed: faster, survives a gateway crash but a power loss "
        "may lose the last commits",
    )
    p.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        help="asyncio (default) or uvloop (pip install 'tidings[fast]'); uvloop measured no "
        "faster here (BENCHMARKS.md, Event loop)",
    )
    p.add_argument(
        "--clock",
        choices=("system", "simulated"),
        help="system (default): real time; simulated: time the admin API can speed up, pause "
        "and move forward (GET/PUT /v1/clock), for development apps only (dev = true)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration file (default: $TIDINGS_CONFIG); flags override it",
    )


def _dev_warning(config: Any) -> str:
    from tidings.server.config import DEV_ADMIN_KEY, DEV_SECRET

    weak = [a.id for a in config.apps if a.secret == DEV_SECRET or a.admin_key == DEV_ADMIN_KEY]
    lines = [
        "WARNING: DEVELOPMENT DEFAULTS IN USE - do not expose this gateway.",
        f"App(s) {', '.join(repr(a) for a in weak)}: the published development app secret",
        f"{DEV_SECRET!r} and/or admin key {DEV_ADMIN_KEY!r} are in use, so",
        "anyone who reads the docs can mint device tokens and send messages.",
        "",
        "Set real values, for example:",
        "  export TIDINGS_APP=shop",
        "  export TIDINGS_APP_SECRET=$(openssl rand -hex 32)",
        "  export TIDINGS_ADMIN_KEY=$(openssl rand -hex 32)",
        "or list [[apps]] with id, secret and admin_key in a TOML file (--config FILE).",
    ]
    width = max(len(line) for line in lines) + 4
    bar = "!" * width
    body = [f"! {line.ljust(width - 4)} !" for line in lines]
    return "\n".join([bar, *body, bar])


def _run_gateway(args: argparse.Namespace) -> int:
    from tidings.protocol.errors import ConfigError
    from tidings.server.config import load_config

    overrides = {
        "host": args.host,
        "port": args.port,
        "admin_host": args.admin_host,
        "admin_port": args.admin_port,
        "db": args.db,
        "durability": args.durability,
        "broker": args.broker,
        "node_id": args.node_id,
        "clock": args.clock,
        "event_loop": args.event_loop,
    }
    try:
        config = load_config(path=args.config, overrides=overrides)
    except ConfigError as exc:
        return fail(f"configuration: {exc.reason}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        return missing_server_extra(exc)
    if config.uses_dev_defaults:
        print(_dev_warning(config), file=sys.stderr, flush=True)
    try:
        runner = _event_loop(config.event_loop)
    except ModuleNotFoundError:
        return fail("event_loop uvloop: it is not installed; pip install 'tidings[fast]'"
                     " (or leave --event-loop out)")  # fmt: skip
    try:
        return runner(_serve_gateway(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


async def _serve_gateway(config: Any) -> int:
    from tidings.server.app import CannotServe, serve
    from tidings.server.heap import HeapKeeper

    try:
        async with serve(config) as running:
            print(running.banner(__version__), flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            heap = HeapKeeper()  # after start-up: the loaded state is frozen at once
            heap.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
                print("tidings gateway: shutting down (Ctrl-C again to force)", flush=True)
                heap.stop()
    except CannotServe as exc:
        return fail(exc.reason)
    print("tidings gateway: stopped", flush=True)
    return 0


def _event_loop(choice: str) -> Callable[[Any], int]:
    """How the gateway runs its coroutine: on asyncio's own loop, or on uvloop.

    Raises:
        ModuleNotFoundError: ``uvloop`` was asked for and is not installed.
    """
    if choice == "uvloop":
        import importlib

        uvloop = importlib.import_module("uvloop")  # the optional ``fast`` extra
        return cast(Callable[[Any], int], uvloop.run)
    return asyncio.run


COMMAND = Command(
    name="gateway",
    help="run the WebSocket gateway and its admin API",
    description="Run the device WebSocket gateway and the admin HTTP API on one event loop "
    "until SIGINT or SIGTERM, then shut down gracefully (go-away to devices, flush the "
    "store). Settings: flags > TIDINGS_* environment > TOML file > defaults.",
    examples="""
        tidings gateway
        tidings gateway --port 9000 --admin-port 9001 --db /var/lib/tidings/tidings.db
        TIDINGS_APP=shop TIDINGS_APP_SECRET=... TIDINGS_ADMIN_KEY=... tidings gateway
        tidings gateway --config tidings.toml
    """,
    configure=_configure_gateway,
    run=_run_gateway,
)
