"""The ``tidings`` command line (also ``python -m tidings``).

Each subcommand is one :class:`Command` in :data:`COMMANDS`: a name, help with examples, a
function that adds its options and a function that runs it and returns the exit code. Runners
import what they need when they run, so ``tidings token`` works with only the core install and
``tidings --help`` stays fast. To add a subcommand, write its two functions and append a
``Command`` (or call :func:`register` from a module that this one imports lazily).

Exit codes: ``0`` success, ``1`` the operation failed (an API error, gateway unreachable),
``2`` bad usage or configuration (including a port already in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from tidings import __version__

__all__ = ["COMMANDS", "Command", "build_parser", "main", "register"]

DEFAULT_ADMIN_URL = "http://127.0.0.1:8766"
DEFAULT_SEND_TIMEOUT_S = 30.0
"""Seconds ``tidings send`` waits for the admin API (the send returns once stored durably)."""

_SERVER_DEPS = frozenset({"fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core"})


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: ``configure`` adds its options, ``run`` returns the exit code."""

    name: str
    help: str
    description: str
    examples: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []


def register(command: Command) -> Command:
    """Add a subcommand (names are unique; the later registration wins)."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name]
    COMMANDS.append(command)
    return command


def _fail(message: str, code: int = 2) -> int:
    print(f"tidings: error: {message}", file=sys.stderr)
    return code


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _missing_server_extra(exc: ModuleNotFoundError) -> int:
    root = (exc.name or "").split(".")[0]
    if root not in _SERVER_DEPS:
        raise exc
    return _fail(
        f"the gateway needs the server extras ({root} is not installed); "
        "install them with: pip install 'tidings[server]'"
    )


# --- tidings gateway ---------------------------------------------------------------------------


def _configure_gateway(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="interface for device WebSockets (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port for device WebSockets (default 8765; 0 = any)")
    p.add_argument("--admin-host", help="interface for the admin HTTP API (default 127.0.0.1)")
    p.add_argument("--admin-port", type=int, help="port for the admin API (default 8766; 0 = any)")
    p.add_argument("--db", metavar="PATH", help="SQLite database file (default tidings.db)")
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
    }
    try:
        config = load_config(path=args.config, overrides=overrides)
    except ConfigError as exc:
        return _fail(f"configuration: {exc.reason}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc)
    if config.uses_dev_defaults:
        print(_dev_warning(config), file=sys.stderr, flush=True)
    try:
        return asyncio.run(_serve_gateway(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


async def _serve_gateway(config: Any) -> int:
    from tidings.protocol.errors import TidingsError
    from tidings.server.admin import AdminServer
    from tidings.server.node import Node

    node = Node(config)
    try:
        await node.start()
    except OSError as exc:
        return _fail(
            f"cannot listen for devices on {config.host}:{config.port}: {exc.strerror or exc}; "
            "choose another with --port (0 picks a free one)"
        )
    except TidingsError as exc:
        return _fail(f"cannot start the gateway: {exc.reason}")
    admin = AdminServer(node, config.admin_host, config.admin_port)
    try:
        await admin.start()
    except OSError as exc:
        await node.stop()
        return _fail(
            f"cannot listen for the admin API on {config.admin_host}:{config.admin_port}: "
            f"{exc.strerror or exc}; choose another with --admin-port (0 picks a free one)"
        )
    apps = ", ".join(a.id for a in config.apps)
    print(
        f"tidings gateway {__version__}: devices on ws://{config.host}:{node.port}, "
        f"admin API on {admin.url} (apps: {apps}; db: {config.db})",
        flush=True,
    )
    print("Press Ctrl-C to stop.", flush=True)
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
        await admin.stop()
        await node.stop()
    print("tidings gateway: stopped", flush=True)
    return 0


# --- tidings token -----------------------------------------------------------------------------


def _configure_token(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="device id the token is for")
    p.add_argument("--user", help="user id the device is signed in as (optional)")
    p.add_argument("--app", help="app id (default: $TIDINGS_APP or demo)")
    p.add_argument(
        "--ttl", type=int, help="seconds until the token expires (default 30 days)", metavar="S"
    )
    p.add_argument(
        "--secret",
        help="app secret to sign with (default: $TIDINGS_APP_SECRET, the app's secret in "
        "--config, or dev-secret for the demo app)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file to read the app's secret from")


def _token_secret(args: argparse.Namespace, app: str) -> str | None:
    if args.secret:
        return str(args.secret)
    if os.environ.get("TIDINGS_APP_SECRET") and _env("TIDINGS_APP", app) == app:
        return os.environ["TIDINGS_APP_SECRET"]
    path = args.config or os.environ.get("TIDINGS_CONFIG")
    if path:
        from tidings.server.config import load_config

        found = load_config(path=path, env={}).app(app)
        return found.secret if found else None
    from tidings.server.config import DEV_APP, DEV_SECRET

    return DEV_SECRET if app == DEV_APP else None


def _run_token(args: argparse.Namespace) -> int:
    from tidings.protocol.errors import ConfigError
    from tidings.protocol.tokens import DEFAULT_TOKEN_TTL, mint_token

    app = args.app or _env("TIDINGS_APP", "demo")
    try:
        secret = _token_secret(args, app)
    except ConfigError as exc:
        return _fail(f"configuration: {exc.reason}")
    if secret is None:
        return _fail(
            f"no secret for app {app!r}: pass --secret, set TIDINGS_APP_SECRET or use --config"
        )
    try:
        token = mint_token(
            secret=secret,
            app=app,
            device=args.device,
            user=args.user,
            ttl=DEFAULT_TOKEN_TTL if args.ttl is None else args.ttl,
        )
    except ValueError as exc:
        return _fail(str(exc))
    print(token)
    return 0


# --- tidings send ------------------------------------------------------------------------------


def _configure_send(p: argparse.ArgumentParser) -> None:
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument(
        "--to-user", action="append", metavar="USER", help="user id to send to (repeatable)"
    )
    to.add_argument(
        "--to-device", action="append", metavar="DEVICE", help="device id to send to (repeatable)"
    )
    p.add_argument("--title", required=True, help="message title")
    p.add_argument("--body", required=True, help="message body")
    p.add_argument("--kind", choices=("banner", "inbox", "both"), default="both")
    p.add_argument("--category", choices=("marketing", "transactional"), default="marketing")
    p.add_argument("--priority", choices=("normal", "urgent"), default="normal")
    p.add_argument("--ttl", type=int, metavar="S", help="seconds until it expires")
    p.add_argument("--collapse-key", help="a newer message with this key replaces older ones")
    p.add_argument("--image", metavar="URL", help="image URL (http or https)")
    p.add_argument(
        "--action",
        nargs=3,
        action="append",
        metavar=("ID", "LABEL", "URL"),
        help="a button: id, label and deep link (repeatable)",
    )
    p.add_argument("--data", metavar="JSON", help="custom data, a JSON object")
    p.add_argument(
        "--expire-after-read", action="store_true", help="remove it from the inbox once read"
    )
    _add_admin_options(p)


def _send_payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "app": args.app or _env("TIDINGS_APP", "demo"),
        "to": {"users": args.to_user} if args.to_user else {"devices": args.to_device},
        "kind": args.kind,
        "title": args.title,
        "body": args.body,
        "category": args.category,
        "priority": args.priority,
    }
    optional = {"ttl": args.ttl, "collapse_key": args.collapse_key, "image": args.image}
    payload.update({k: v for k, v in optional.items() if v is not None})
    if args.action:
        payload["actions"] = [{"id": i, "label": lbl, "url": url} for i, lbl, url in args.action]
    if args.data is not None:
        payload["data"] = json.loads(args.data)
    if args.expire_after_read:
        payload["expire_after_read"] = True
    return payload


def _print_api_error(status: int, raw: bytes, out: TextIO) -> None:
    try:
        error = json.loads(raw)["error"]
        details = [d["message"] for d in error.get("details") or []]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        print(f"tidings: error: the admin API answered HTTP {status}", file=out)
        return
    print(f"tidings: error: {message} (HTTP {status})", file=out)
    for extra in details[1:]:
        print(f"  also: {extra}", file=out)


def _call_admin(args: argparse.Namespace, path: str, payload: dict[str, Any]) -> bytes | int:
    """POST ``payload`` to the admin API; the answer's bytes, or an exit code after an error."""
    base = (args.admin_url or _env("TIDINGS_ADMIN_URL", DEFAULT_ADMIN_URL)).rstrip("/")
    key = args.admin_key or _env("TIDINGS_ADMIN_KEY", "dev-admin-key")
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(payload).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=DEFAULT_SEND_TIMEOUT_S) as response:
            raw: bytes = response.read()
            return raw
    except urllib.error.HTTPError as exc:
        _print_api_error(exc.code, exc.read(), sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return _fail(
                f"cannot reach the admin API at {base} (connection refused); "
                "start a gateway with `tidings gateway` or pass --admin-url",
                1,
            )
        return _fail(f"cannot reach the admin API at {base}: {exc.reason}", 1)
    except (TimeoutError, OSError) as exc:
        return _fail(f"the admin API at {base} did not answer: {exc}", 1)


def _add_admin_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin-url",
        help=f"admin API base URL (default: $TIDINGS_ADMIN_URL or {DEFAULT_ADMIN_URL})",
    )
    p.add_argument(
        "--admin-key", help="the app's admin key (default: $TIDINGS_ADMIN_KEY or dev-admin-key)"
    )
    p.add_argument("--app", help="app id (default: $TIDINGS_APP or demo)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer as is")


def _configure_segment(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="segment_command", metavar="ACTION", required=True)
    preview = sub.add_parser(
        "preview",
        help="count the users a segment selects now, with a sample",
        description="Parse a segment in its text form and ask the admin API how many users it "
        "selects now. A parse error points at the column.",
    )
    preview.add_argument("text", help="segment text, e.g. 'tag:sports_fan and attr.age >= 18'")
    preview.add_argument("--sample", type=int, default=10, help="user ids to show (max 100)")
    _add_admin_options(preview)


def _run_segment(args: argparse.Namespace) -> int:
    payload = {"app": args.app or _env("TIDINGS_APP", "demo"), "text": args.text,
               "sample": args.sample}  # fmt: skip
    raw = _call_admin(args, "/v1/segments/preview", payload)
    if isinstance(raw, int):
        return raw
    if args.json:
        print(raw.decode("utf-8"))
        return 0
    result = json.loads(raw)
    print(f"{result['count']} users match: {result['text']}")
    for user in result["sample"]:
        print(f"  {user}")
    return 0


def _run_send(args: argparse.Namespace) -> int:
    try:
        payload = _send_payload(args)
    except json.JSONDecodeError as exc:
        return _fail(f"--data: not valid JSON ({exc.msg})")
    raw = _call_admin(args, "/v1/messages", payload)
    if isinstance(raw, int):
        return raw
    if args.json:
        print(raw.decode("utf-8"))
        return 0
    result = json.loads(raw)
    print(
        f"sent {result['message_id']}: {result['devices']} device deliveries "
        f"to {result['users']} users"
    )
    for reason, count in sorted((result.get("skipped") or {}).items()):
        print(f"  skipped {count}: {reason}")
    return 0


# --- the parser --------------------------------------------------------------------------------

register(
    Command(
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
)
register(
    Command(
        name="token",
        help="mint a device token (for development and tests)",
        description="Print a signed device token for the gateway's handshake. In production "
        "your app's backend mints tokens with the app secret (tidings.protocol.tokens).",
        examples="""
            tidings token --device phone-1
            tidings token --device phone-1 --user alice --ttl 3600
            tidings token --app shop --secret "$SHOP_SECRET" --device d1
        """,
        configure=_configure_token,
        run=_run_token,
    )
)
register(
    Command(
        name="send",
        help="send a message now through the admin API",
        description="Send one message to users or devices through a running gateway's admin "
        "API. Prints the message id once the message is stored; on a rejected request prints "
        "the API's error, which names the bad field, and exits 1.",
        examples="""
            tidings send --to-user alice --title "Hello" --body "Welcome aboard"
            tidings send --to-device phone-1 --kind inbox --title "Receipt" \\
                --body "Order 42 shipped" --category transactional
            tidings send --to-user a --to-user b --title Sale --body "20% off" \\
                --action shop Shop app://sale --admin-url http://gw:8766 --admin-key KEY
        """,
        configure=_configure_send,
        run=_run_send,
    )
)


register(
    Command(
        name="segment",
        help="work with segments (preview the audience of a segment text)",
        description="Segments select users by attributes, tags, lifecycle, tier, events, "
        "last seen, locale, time zone, platform and app version.",
        examples="""
            tidings segment preview 'attr.region = "CN-SH" and attr.age >= 18'
            tidings segment preview 'lifecycle in (active, new) and platform = ios' --sample 20
        """,
        configure=_configure_segment,
        run=_run_segment,
    )
)


def _configure_demo(p: argparse.ArgumentParser) -> None:
    from tidings import demo

    demo.configure(p)


def _run_demo(args: argparse.Namespace) -> int:
    from tidings import demo

    return demo.run(args)


register(
    Command(
        name="demo",
        help="run a gateway with one example device that shows banners and its inbox",
        description="Start an embedded gateway and admin API on SQLite with the development "
        "app, and one real SDK device whose banners and inbox are printed in this terminal. "
        "Send it messages from another terminal with `tidings send`.",
        examples="""
            tidings demo
            tidings demo --quiet-hours 22:00-08:00
            tidings demo --port 0 --admin-port 0 --seconds 30
        """,
        configure=_configure_demo,
        run=_run_demo,
    )
)


def _configure_loadtest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument(
        "--scenario",
        default="broadcast",
        choices=["broadcast", "segment", "trigger", "reconnect-storm"],
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


def _progress(stage: str, n: int, total: int) -> None:
    width = 30
    filled = width * n // max(1, total)
    end = "\n" if n >= total else ""
    print(f"\r{stage:<11} [{'#' * filled}{'.' * (width - filled)}] {n:>6}/{total}", end=end,
          file=sys.stderr, flush=True)  # fmt: skip


def _run_loadtest(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.workers < 1:
        return _fail("--devices and --workers must be at least 1")
    try:
        from tidings.simulator.engine import run_loadtest, write_svg
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc)
    try:
        report = run_loadtest(devices=args.devices, scenario=args.scenario,
                              baseline=args.baseline, workers=args.workers,
                              timeout=args.timeout, progress=_progress, seed=args.seed,
                              personas=not args.no_personas)  # fmt: skip
    except ValueError as exc:
        return _fail(str(exc))
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


register(
    Command(
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
        """,
        configure=_configure_loadtest,
        run=_run_loadtest,
    )
)


def _configure_sim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="device worker processes (default 2)")


def _run_sim(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.workers < 1:
        return _fail("--devices and --workers must be at least 1")
    try:
        from tidings.simulator.app import make_app
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "textual":
            return _fail("tidings sim needs the simulator extra: pip install 'tidings[simulator]'")
        return _missing_server_extra(exc)
    make_app(devices=args.devices, workers=args.workers).run()
    return 0


register(
    Command(
        name="sim",
        help="run the simulator TUI: a gateway and N simulated devices on this machine",
        description="Start a gateway on SQLite and N real SDK devices in worker processes, and "
        "show a live dashboard (devices connected, deliveries per second, latency percentiles "
        "and a sparkline), a composer that sends to every device, and a device browser whose "
        "device view shows that device's inbox as its SDK holds it. Keys: c compose, d devices, "
        "q quit; the mouse works too.",
        examples="""
            tidings sim
            tidings sim --devices 5000 --workers 2
        """,
        configure=_configure_sim,
        run=_run_sim,
    )
)


def build_parser() -> argparse.ArgumentParser:
    """The ``tidings`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Tidings: self-hosted in-app messaging. Run a subcommand with --help for "
        "its options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=textwrap.fill(command.description, width=78),
            epilog="examples:\n" + textwrap.indent(textwrap.dedent(command.examples).strip(), "  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args._run
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
