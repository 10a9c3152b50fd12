"""What the subcommands share: the :class:`Command` shape, errors and exit codes, the admin
API options and client, and the renderers of tables, times and shares."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from tidings.admin_client import AdminClient, AdminError

__all__ = [
    "DEFAULT_ADMIN_URL",
    "DEFAULT_SEND_TIMEOUT_S",
    "Command",
    "add_admin_options",
    "app_id",
    "call_admin",
    "duration",
    "env",
    "fail",
    "get_json",
    "missing_server_extra",
    "pct",
    "plural",
    "print_api_error",
    "print_json",
    "table",
    "when",
]

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


def plural(n: int, noun: str) -> str:
    """``1 user``, ``2 users``, ``1 device delivery``, ``0 device deliveries``."""
    if n == 1:
        return f"{n} {noun}"
    word = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n} {word}"


def fail(message: str, code: int = 2) -> int:
    print(f"tidings: error: {message}", file=sys.stderr)
    return code


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def missing_server_extra(exc: ModuleNotFoundError) -> int:
    root = (exc.name or "").split(".")[0]
    if root not in _SERVER_DEPS:
        raise exc
    return fail(
        f"the gateway needs the server extras ({root} is not installed); "
        "install them with: pip install 'tidings[server]'"
    )


def print_api_error(error: AdminError, out: TextIO) -> None:
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


def call_admin(
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
    base = args.admin_url or env("TIDINGS_ADMIN_URL", DEFAULT_ADMIN_URL)
    key = args.admin_key or env("TIDINGS_ADMIN_KEY", "dev-admin-key")
    admin = AdminClient(base, key, timeout=DEFAULT_SEND_TIMEOUT_S)
    try:
        return admin.raw(method, path, payload, query=query)
    except AdminError as exc:
        print_api_error(exc, sys.stderr)
        return 1


def add_admin_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin-url",
        help=f"admin API base URL (default: $TIDINGS_ADMIN_URL or {DEFAULT_ADMIN_URL})",
    )
    p.add_argument(
        "--admin-key", help="the app's admin key (default: $TIDINGS_ADMIN_KEY or dev-admin-key)"
    )
    p.add_argument("--app", help="app id (default: $TIDINGS_APP or demo)")
    p.add_argument("--json", action="store_true", help="print the API's JSON answer as is")


def app_id(args: argparse.Namespace) -> str:
    return str(args.app or env("TIDINGS_APP", "demo"))


def when(ts: float | None) -> str:
    from datetime import UTC, datetime

    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def get_json(args: argparse.Namespace, path: str, **query: Any) -> Any:
    """GET ``path`` with ``?app=``; the parsed answer, or an exit code after an error."""
    raw = call_admin(args, path, method="GET", query={"app": app_id(args), **query})
    return raw if isinstance(raw, int) else json.loads(raw)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(indent + "  ".join(cells).rstrip())


def duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
