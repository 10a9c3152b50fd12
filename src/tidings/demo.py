"""``tidings demo``: an embedded gateway plus one example device rendering in the terminal.

Everything runs on one event loop: the gateway node and its admin API on SQLite, and a real
:class:`~tidings.client_sdk.TidingsClient` connected to it over loopback, whose banners and inbox
are printed by the SDK's terminal renderer. Messages sent with ``tidings send`` from another
terminal show up here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server extra is imported when the demo runs
    from tidings.client_sdk import QuietHours
    from tidings.server.app import Running

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    """Options of ``tidings demo``."""
    p.add_argument("--port", type=int, default=8765, help="device WebSocket port (default 8765)")
    p.add_argument("--admin-port", type=int, default=8766, help="admin API port (default 8766)")
    p.add_argument("--db", default="tidings-demo.db", help="SQLite file (default tidings-demo.db)")
    p.add_argument("--user", default="demo-user", help="user id of the example device")
    p.add_argument("--device", default="demo-phone", help="device id of the example device")
    p.add_argument(
        "--quiet-hours",
        metavar="START-END",
        help='on-device quiet hours in the device\'s time zone, e.g. "22:00-08:00"',
    )
    p.add_argument(
        "--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (or ``--seconds``)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError:
        print("tidings demo needs the server extra: pip install 'tidings[server]'", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130


async def _demo(args: argparse.Namespace) -> int:
    from tidings.client_sdk import QuietHours
    from tidings.protocol.errors import TidingsError
    from tidings.server.app import CannotServe, serve
    from tidings.server.config import load_config

    try:
        config = load_config(overrides={"port": args.port, "admin_port": args.admin_port,
                                        "db": args.db})  # fmt: skip
        quiet = None
        if args.quiet_hours:
            start, _, end = args.quiet_hours.partition("-")
            quiet = QuietHours(start, end)
    except TidingsError as exc:
        print(f"tidings demo: {exc.reason}", file=sys.stderr)
        return 2
    try:
        async with serve(config) as running:
            await _device(args, running, quiet)
    except CannotServe as exc:
        print(f"tidings demo: {exc.reason}", file=sys.stderr)
        return 2
    return 0


async def _device(args: argparse.Namespace, running: Running, quiet: QuietHours | None) -> None:
    """One SDK device on the running gateway, printing what it gets, until Ctrl-C."""
    from tidings.client_sdk import TerminalRenderer, TidingsClient
    from tidings.protocol.tokens import mint_token
    from tidings.server.config import DEV_ADMIN_KEY, DEV_APP, DEV_SECRET
    from tidings.server.node import SendRequest

    node, admin = running.node, running.admin
    assert admin is not None
    token = mint_token(secret=DEV_SECRET, app=DEV_APP, device=args.device, user=args.user)
    client = TidingsClient(url=f"ws://127.0.0.1:{node.port}", token=token,
                           device_id=args.device, quiet_hours=quiet)  # fmt: skip
    TerminalRenderer().attach(client)
    print(
        f"Tidings demo: gateway on ws://127.0.0.1:{node.port}, admin API on {admin.url} "
        f"(development keys; db {node.config.db}).\n"
        f"Device {args.device!r} of user {args.user!r} is connected. From another terminal try:\n\n"
        f"  .venv/bin/tidings send --admin-url {admin.url} --admin-key {DEV_ADMIN_KEY} "
        f'--to-user {args.user} --title "Hello" --body "Sent from the CLI"\n\n'
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with client:
            await client.wait_connected(timeout=10)
            await node.send(SendRequest(app=DEV_APP, users=(args.user,), kind="both",
                                        title="Welcome to Tidings",
                                        body="Banners show here; the inbox keeps them.",
                                        category="transactional"))  # fmt: skip
            waiter: Any = stop.wait()
            if args.seconds is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, args.seconds)
            else:
                await waiter
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
