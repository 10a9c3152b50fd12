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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast

from tidings import __version__
from tidings.admin_client import AdminClient, AdminError, quote
from tidings.protocol import kinds
from tidings.words import REASONS, decision_lines

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


def _count(n: int, noun: str) -> str:
    """``1 user``, ``2 users``, ``1 device delivery``, ``0 device deliveries``."""
    if n == 1:
        return f"{n} {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n} {plural}"


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
        return _fail(f"configuration: {exc.reason}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc)
    if config.uses_dev_defaults:
        print(_dev_warning(config), file=sys.stderr, flush=True)
    try:
        runner = _event_loop(config.event_loop)
    except ModuleNotFoundError:
        return _fail("event_loop uvloop: it is not installed; pip install 'tidings[fast]'"
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
        return _fail(exc.reason)
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
    p.add_argument(
        "--kind",
        choices=kinds.NAMES,
        default="both",
        help="where it shows: "
        + "; ".join(f"{k.name}: {k.description}" for k in kinds.KINDS.values())
        + " (default: both)",
    )
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


def _print_api_error(error: AdminError, out: TextIO) -> None:
    if error.status == 0:  # no answer: the message says what to do
        print(f"tidings: error: {error.reason}", file=out)
        return
    if error.code == "http_error":  # an answer not in the API's shape
        print(f"tidings: error: the admin API answered HTTP {error.status}", file=out)
        return
    # A segment's parse error is its text with a caret under the fault on the next line: the
    # lines after the first are indented as far as the prefix, so the caret stays in place.
    prefix = "tidings: error: "
    first, *rest = error.reason.split("\n")
    lines = [prefix + first, *(" " * len(prefix) + line for line in rest)]
    lines[-1] += f" (HTTP {error.status})"
    print("\n".join(lines), file=out)
    for extra in error.details[1:]:
        print(f"  also: {extra}", file=out)


def _call_admin(
    args: argparse.Namespace,
    path: str,
    payload: Any = None,
    *,
    method: str = "POST",
    query: dict[str, Any] | None = None,
) -> bytes | int:
    """Call the admin API; the answer's bytes, or an exit code after an error.

    ``payload`` (if not None) is sent as the JSON body; ``query`` becomes the query string.
    """
    base = args.admin_url or _env("TIDINGS_ADMIN_URL", DEFAULT_ADMIN_URL)
    key = args.admin_key or _env("TIDINGS_ADMIN_KEY", "dev-admin-key")
    admin = AdminClient(base, key, timeout=DEFAULT_SEND_TIMEOUT_S)
    try:
        return admin.raw(method, path, payload, query=query)
    except AdminError as exc:
        _print_api_error(exc, sys.stderr)
        return 1


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
    payload = {"app": _app(args), "text": args.text, "sample": args.sample}
    raw = _call_admin(args, "/v1/segments/preview", payload)
    if isinstance(raw, int):
        return raw
    if args.json:
        print(raw.decode("utf-8"))
        return 0
    result = json.loads(raw)
    print(f"{_count(result['count'], 'user')} {'matches' if result['count'] == 1 else 'match'}: "
          f"{result['text']}")  # fmt: skip
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
        f"sent {result['message_id']}: {_count(result['devices'], 'device delivery')} "
        f"to {_count(result['users'], 'user')}"
    )
    if result.get("no_device"):
        print(f"  {_count(result['no_device'], 'user')} with no device yet: kept in their inbox"
              " for their first device")  # fmt: skip
    for reason, count in sorted((result.get("skipped") or {}).items()):
        print(f"  skipped {count}: {REASONS.get(reason, reason)} ({reason})")
    return 0


# --- tidings campaign / why / user ------------------------------------------------------------


def _app(args: argparse.Namespace) -> str:
    return str(args.app or _env("TIDINGS_APP", "demo"))


def _when(ts: float | None) -> str:
    from datetime import UTC, datetime

    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _get_json(args: argparse.Namespace, path: str, **query: Any) -> Any:
    """GET ``path`` with ``?app=``; the parsed answer, or an exit code after an error."""
    raw = _call_admin(args, path, method="GET", query={"app": _app(args), **query})
    return raw if isinstance(raw, int) else json.loads(raw)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _configure_campaign(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create",
        help="create a draft from campaign JSON",
        description="Create a campaign (a draft) from its JSON; 'app' defaults to --app. "
        "Errors name the field, templates included.",
    )
    create.add_argument("file", help="campaign JSON file, or - for standard input")
    _add_admin_options(create)
    listing = sub.add_parser("list", help="list the app's campaigns")
    _add_admin_options(listing)
    for name, what in (("show", "print a campaign's JSON"), ("start", "start or resume it"),
                       ("pause", "pause it"), ("cancel", "cancel it, revoking undisplayed "
                                                         "messages"),
                       ("stats", "funnel per variant, comparisons and the winner")):  # fmt: skip
        action = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("id", help="campaign id")
        _add_admin_options(action)


def _campaign_line(c: dict[str, Any]) -> str:
    return f"{c['id']}: {c['status']} ({c['kind']}, sent {c['sent_total']}) - {c['name']}"


_STAGES = ("targeted", "sent", "delivered", "displayed", "clicked", "dismissed", "converted")


_STAGE_WORDS = {"expired": "expired unseen"}
"""How the per-channel funnel names a receipt kind, where the kind alone would mislead."""


def _table(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(indent + "  ".join(cells).rstrip())


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _print_stats(stats: dict[str, Any]) -> None:
    conv = stats.get("conversion")
    goal = ""
    if conv:
        where = " and ".join(f"{w['prop']} {w['op']} {w['value']!r}" for w in conv["where"])
        said = (f"{conv['event']}{' where ' + where if where else ''}, "
                f"within {_duration(conv['window_s'])}")  # fmt: skip
        goal = (f"; conversions: {said} (the app's value event: the campaign names no goal)"
                if conv.get("default") else f" ({said})")  # fmt: skip
    print(f"{stats['campaign']} ({stats['status']}), compared on {stats['metric']}{goal}")
    rows: list[tuple[str, ...]] = [("variant", *_STAGES, "ctr", "conv")]
    arms = {**stats["variants"], "total": stats["total"]}
    for name, f in arms.items():
        rows.append((name, *(str(f[s]) for s in _STAGES), f"{f['ctr']:.1%}",
                     f"{f['conversion_rate']:.1%}"))  # fmt: skip
    _table(rows)
    channels = stats["total"].get("channels") or {}
    if channels:
        print("funnel per channel:")
        for kind, stages in channels.items():
            shown = " -> ".join(f"{_STAGE_WORDS.get(k, k)} {n}" for k, n in stages.items())
            print(f"  {kind}: {shown}")
    control = stats.get("control")
    if control:
        got = (
            ""
            if control["converted"] is None
            else (f", {control['converted']} converted ({_pct(control['conversion_rate'])})")
        )
        print(f"control (held out): {control['users']} users{got}")
    if stats.get("lift"):
        print("lift over control (converted within the window after the send vs held out; "
              "95% CI, Newcombe):")  # fmt: skip
        rows = [("variant", "users", "conv", "rate", "control", "diff", "95% CI", "relative")]
        for x in stats["lift"]:
            rel = "-" if x["relative"] is None else f"{x['relative']:+.1%}"
            rows.append((x["variant"], str(x["users"]), str(x["converted"]), _pct(x["rate"]),
                         _pct(x["control_rate"]), f"{x['difference'] * 100:+.1f} pts",
                         f"[{x['low'] * 100:+.1f}, {x['high'] * 100:+.1f}]", rel))  # fmt: skip
        _table(rows, "  ")
    retention = stats.get("retention") or {}
    groups = list(dict.fromkeys(g for w in retention.values() for g in w))
    if groups:
        print("retention (any event after the send; holdout: after the decision):")
        rows = [("group", *retention)]
        for g in groups:
            cells = []
            for w in retention.values():
                r = w.get(g, {"users": 0, "returned": 0, "waiting": 0, "rate": 0.0})
                cell = f"{_pct(r['rate'])} ({r['returned']}/{r['users']})" if r["users"] else "-"
                if r["waiting"]:
                    cell += f" ({r['waiting']} waiting)"
                cells.append(cell)
            rows.append((g, *cells))
        _table(rows, "  ")
    for c in stats["comparisons"]:
        lift = "n/a" if c["lift"] is None else f"{c['lift']:+.1%}"
        p_value = "n/a" if c["p_value"] is None else f"{c['p_value']:.3g}"
        print(f"{c['variant']}: {c['rate']:.1%} vs {c['baseline_rate']:.1%} "
              f"(lift {lift}, p={p_value})")  # fmt: skip
    v = stats.get("verdict")
    if v and stats["comparisons"]:
        if v["winner"]:
            print(f"winner: {v['winner']} by {v['metric']} - {v['reason']}")
        else:
            print(f"winner: none yet - {v['reason']}")
    r = stats.get("rollout")
    if r:
        if r["phase"] == "testing":
            print(f"roll-out: testing on {r['test_share']:.0%} of the audience; the rest get "
                  f"the winner, or at {_when(r.get('deadline'))} the {r['at_deadline']} "
                  f"{'variant' if r['at_deadline'] == 'best' else 'content'}")  # fmt: skip
        elif r["phase"] == "rolled_out":
            what = r.get("variant") or "the base content"
            print(f"roll-out: rolled out {what} at {_when(r.get('decided_at'))} "
                  f"({r.get('decided_by')}: {r.get('detail')})")  # fmt: skip
        elif r["phase"] == "stopped":
            print(f"roll-out: stopped, {r.get('detail')}")
        else:
            print(f"roll-out: not started (tests on {r['test_share']:.0%} first)")


def _run_campaign(args: argparse.Namespace) -> int:
    action = args.campaign_command
    if action == "create":
        try:
            if args.file == "-":
                spec = json.load(sys.stdin)
            else:
                with open(args.file, encoding="utf-8") as f:
                    spec = json.load(f)
        except OSError as exc:
            return _fail(f"{args.file}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            return _fail(f"{args.file}: not valid JSON ({exc.msg}, line {exc.lineno})")
        if isinstance(spec, dict):
            spec.setdefault("app", _app(args))
        raw = _call_admin(args, "/v1/campaigns", spec)
    elif action == "list":
        raw = _call_admin(args, "/v1/campaigns", method="GET", query={"app": _app(args)})
    elif action in ("show", "stats"):
        path = f"/v1/campaigns/{quote(args.id)}" + ("/stats" if action == "stats" else "")
        raw = _call_admin(args, path, method="GET", query={"app": _app(args)})
    else:
        raw = _call_admin(
            args, f"/v1/campaigns/{quote(args.id)}/{action}", query={"app": _app(args)}
        )
    if isinstance(raw, int):
        return raw
    result = json.loads(raw)
    if args.json or action == "show":
        _print_json(result)
    elif action == "list":
        for c in result["campaigns"]:
            print(_campaign_line(c))
        if not result["campaigns"]:
            print("no campaigns")
    elif action == "stats":
        _print_stats(result)
    else:
        extra = f", revoked {result['revoked']} undisplayed" if action == "cancel" else ""
        if result.get("no_device"):
            extra += f", {result['no_device']} user(s) with no device yet (kept in their inbox)"
        if result.get("skipped", {}).get("no_device"):
            extra += f", skipped {result['skipped']['no_device']} with no device (banner only)"
        print(_campaign_line(result) + extra)
    return 0


def _configure_why(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign", help="campaign id")
    p.add_argument("user", help="user id")
    p.add_argument("--limit", type=int, default=5, help="latest decisions to show (default 5)")
    p.add_argument("--tz", default=None, metavar="ZONE",
                   help="show times in this IANA time zone, e.g. Asia/Shanghai, or 'user' for"
                   " the user's own zone (default: your local zone)")  # fmt: skip
    _add_admin_options(p)


def _why_zone(name: str | None) -> tuple[Any, str]:
    """The zone ``tidings why`` shows times in, and how the header names it."""
    from datetime import datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name is not None:
        try:
            return ZoneInfo(name), f"{name} (--tz)"
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"--tz: unknown time zone {name!r} (use an IANA name like "
                             "'Asia/Shanghai')") from None  # fmt: skip
    local = datetime.now().astimezone().tzinfo
    return local, f"{datetime.now().astimezone().tzname()} (your local zone; --tz to change)"


def _run_why(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        return _fail("--limit must be between 1 and 1000")
    tz = args.tz
    if tz == "user":
        user = _get_json(args, f"/v1/users/{quote(args.user)}")
        if isinstance(user, int):
            return user
        tz = user.get("tz") or None
        if tz is None:
            return _fail(f"--tz user: {args.user} has no known time zone; give a zone name")
    try:
        zone, zone_name = _why_zone(tz)
    except ValueError as exc:
        return _fail(str(exc))
    if args.tz == "user":
        zone_name = f"{tz} (the user's zone)"
    result = _get_json(args, f"/v1/campaigns/{quote(args.campaign)}/decisions", user=args.user,
                       limit=args.limit)  # fmt: skip
    if isinstance(result, int):
        return result
    if args.json:
        _print_json(result)
        return 0
    if not result["decisions"]:
        print(f"{args.user}: no decisions for {args.campaign} (the user was not in its "
              "audience when it ran, or it has not run yet)")  # fmt: skip
        return 0
    print(f"{args.user} and campaign {args.campaign}: decisions newest first, each with what "
          f"happened after; times in {zone_name}")  # fmt: skip
    for d in result["decisions"]:
        print("\n".join(decision_lines(d, zone)))
    return 0


def _configure_user(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    for name, what in (("show", "print the user's live profile"),
                       ("export", "print everything stored about the user (JSON)"),
                       ("erase", "erase the user: profile, events, messages, queues")):  # fmt: skip
        action = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("id", help="user id")
        _add_admin_options(action)
    put = sub.add_parser("set", help="merge attributes into the profile",
                         description="Merge attributes: each value is parsed as JSON when it "
                         "parses (18, true, null removes), else taken as a string.")  # fmt: skip
    put.add_argument("id", help="user id")
    put.add_argument("attrs", nargs="+", metavar="KEY=VALUE", help="attributes to set")
    _add_admin_options(put)


def _parse_attrs(pairs: Sequence[str]) -> dict[str, Any] | str:
    attrs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            return f"{pair!r}: expected KEY=VALUE"
        try:
            attrs[key] = json.loads(value)
        except json.JSONDecodeError:
            attrs[key] = value
    return attrs


def _print_profile(p: dict[str, Any]) -> None:
    hours = p.pop("active_hours")
    for key, value in p.items():
        shown = _when(value) if key in ("first_seen", "last_seen", "last_purchase") else value
        if isinstance(shown, dict | list):
            shown = json.dumps(shown, ensure_ascii=False)
        print(f"{key + ':':<16}{shown}")
    print(f"{'active_hours:':<16}{' '.join(str(h) for h in hours)}")


def _run_user(args: argparse.Namespace) -> int:
    action, path = args.user_command, f"/v1/users/{quote(args.id)}"
    if action == "set":
        attrs = _parse_attrs(args.attrs)
        if isinstance(attrs, str):
            return _fail(attrs)
        raw = _call_admin(args, path, {"app": _app(args), "attrs": attrs}, method="PATCH")
    elif action == "erase":
        raw = _call_admin(args, path, method="DELETE", query={"app": _app(args)})
    else:
        suffix = "/export" if action == "export" else ""
        raw = _call_admin(args, path + suffix, method="GET", query={"app": _app(args)})
    if isinstance(raw, int):
        return raw
    if action == "erase":
        print(f"erased {args.id}")
    elif args.json or action == "export":
        _print_json(json.loads(raw))
    else:
        _print_profile(json.loads(raw))
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
register(
    Command(
        name="campaign",
        help="create, list, run and measure campaigns",
        description="Campaigns through the admin API: create a draft from JSON (the shape is "
        "in the README), list, show, start, pause, cancel, and stats (a funnel per variant "
        "with significance tests and the winner).",
        examples="""
            tidings campaign create spring-sale.json
            cat spring-sale.json | tidings campaign create -
            tidings campaign list
            tidings campaign start spring-sale
            tidings campaign stats spring-sale
            tidings campaign cancel spring-sale --json
        """,
        configure=_configure_campaign,
        run=_run_campaign,
    )
)
register(
    Command(
        name="why",
        help="why a user did or did not get a campaign's message",
        description="Print the latest decisions of a campaign for one user, newest first: "
        "the reason code and what it means (sent, scheduled, not in segment and which "
        "condition failed, not triggered yet, opted out, capped (which cap), holdout, budget "
        "exhausted, outside the send window...), and for a message sent what happened to it "
        "after: delivered, displayed, clicked, dismissed, expired unseen, read, deleted. "
        "Times are ISO 8601 with milliseconds in your local time zone (--tz to choose).",
        examples="""
            tidings why spring-sale user-42
            tidings why spring-sale user-42 --limit 20 --json
            tidings why spring-sale user-42 --tz Asia/Shanghai
            tidings why spring-sale user-42 --tz user
        """,
        configure=_configure_why,
        run=_run_why,
    )
)
register(
    Command(
        name="user",
        help="read, update, export or erase a user's profile",
        description="User profiles through the admin API: show the live profile (attributes, "
        "tags, lifecycle, tier, consent...), set attributes, export everything stored, erase.",
        examples="""
            tidings user show user-42
            tidings user set user-42 first_name=Ada age=36 vip=true region=null
            tidings user export user-42 > user-42.json
            tidings user erase user-42
        """,
        configure=_configure_user,
        run=_run_user,
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
        return _fail("--devices and --workers must be at least 1")
    try:
        from tidings.simulator.engine import run_loadtest, write_svg
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc)
    coordinator = None
    if args.listen:
        from tidings.simulator.engine.fleet import Coordinator

        try:
            host, port = _host_port(args.listen, "--listen")
        except ValueError as exc:
            return _fail(str(exc))
        if args.expect_workers < 1:
            return _fail("--expect-workers must be at least 1")
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
                              coordinator=coordinator)  # fmt: skip
    except ValueError as exc:
        return _fail(str(exc))
    except (RuntimeError, OSError, AdminError) as exc:  # the gateway stopped answering
        return _fail(f"the load test stopped: {exc}", 1)
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
            tidings loadtest --devices 2000 --scenario caps
            tidings loadtest --devices 10000 --scenario week --days 14 --speed 3600
            tidings loadtest --devices 2000 --nodes 3 --scenario node-failure \\
                --db postgresql://postgres@127.0.0.1:5432/postgres --broker redis://127.0.0.1:6379/0
        """,
        configure=_configure_loadtest,
        run=_run_loadtest,
    )
)


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
        return _fail(str(exc))
    key = args.key or os.environ.get("TIDINGS_LOADTEST_KEY")
    if not key:
        return _fail("--key: give the key the coordinator printed (or set TIDINGS_LOADTEST_KEY)")
    try:
        from tidings.simulator.engine.fleet import run_remote_worker
    except ModuleNotFoundError as exc:
        return _missing_server_extra(exc)
    from multiprocessing import AuthenticationError

    try:
        run_remote_worker(host, port, key.encode(), wait_s=args.wait)
    except AuthenticationError:
        return _fail("the coordinator refused this worker: its --key is another one", 1)
    except OSError as exc:
        return _fail(f"could not join the coordinator at {args.coordinator}: {exc}", 1)
    except EOFError:
        return _fail("the coordinator ended the connection before the run did", 1)
    return 0


register(
    Command(
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
)


def _configure_sim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="device worker processes (default 2)")
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per real second (default 60: an hour a minute; 1: real time;"
        " 3600: an hour a second)",
    )
    p.add_argument(
        "--start",
        choices=("morning", "now"),
        default="morning",
        help="when simulated time starts: morning (default) is the next 01:00 UTC, 09:00 in"
        " Shanghai, when most personas are awake and out of their quiet hours; now is the real"
        " time",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the devices' lives")


def _run_sim(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.workers < 1:
        return _fail("--devices and --workers must be at least 1")
    from tidings.protocol.simtime import check_speed

    try:
        check_speed(args.speed)
    except ValueError as exc:
        return _fail(f"--{exc}")
    try:
        from tidings.simulator.app import make_app
        from tidings.simulator.engine.sim import SimEngine
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "textual":
            return _fail("tidings sim needs the simulator extra: pip install 'tidings[simulator]'")
        return _missing_server_extra(exc)
    engine = SimEngine(args.devices, args.workers, speed=args.speed, seed=args.seed,
                       morning=args.start == "morning")  # fmt: skip
    make_app(engine=engine).run()
    return 0


register(
    Command(
        name="sim",
        help="run the simulator TUI: a gateway and N simulated devices on this machine",
        description="Start a gateway on SQLite and N real SDK devices in worker processes, and "
        "show a live dashboard (devices connected, events and deliveries per second, latency "
        "percentiles and sparklines), a device browser with search whose device view shows the "
        "device's inbox as its SDK holds it, its quiet hours and the decision log, campaigns "
        "with their funnels (s start, p pause, x cancel), and a composer with a live audience "
        "preview of the segment text. Keys: F1 dashboard, F2 devices, F3 campaigns, F4 "
        "composer (also 1-4, d, c), F5 or ctrl+r create and start, F6 send to all, q quit (ctrl+q "
        "in the composer); the "
        "mouse works too. The gateway runs on a simulated clock that the devices follow "
        "(--speed; F7 pause/resume, F8 1x, F9 60x, F10 3600x; GET/PUT /v1/clock moves it from "
        "outside), and every device lives its persona's days: sessions in its active hours, "
        "carts, purchases, reactions to messages.",
        examples="""
            tidings sim
            tidings sim --devices 5000 --workers 2
            tidings sim --speed 3600          # an hour of the devices' lives a second
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
    try:
        code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tidings user show u | head``): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1  # what Python itself answers to EPIPE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
