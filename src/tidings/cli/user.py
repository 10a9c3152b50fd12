"""``tidings user``: show, change, export or erase one user's profile."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from tidings.admin_client import quote
from tidings.cli.common import (
    Command,
    add_admin_options,
    app_id,
    call_admin,
    fail,
    print_json,
    when,
)

__all__ = ["COMMAND"]


def _configure_user(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    for name, what in (("show", "print the user's live profile"),
                       ("export", "print everything stored about the user (JSON)"),
                       ("erase", "erase the user: profile, events, messages, queues")):  # fmt: skip
        action = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("id", help="user id")
        add_admin_options(action)
    put = sub.add_parser("set", help="merge attributes into the profile",
                         description="Merge attributes: each value is parsed as JSON when it "
                         "parses (18, true, null removes), else taken as a string.")  # fmt: skip
    put.add_argument("id", help="user id")
    put.add_argument("attrs", nargs="+", metavar="KEY=VALUE", help="attributes to set")
    add_admin_options(put)


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
        shown = when(value) if key in ("first_seen", "last_seen", "last_purchase") else value
        if isinstance(shown, dict | list):
            shown = json.dumps(shown, ensure_ascii=False)
        print(f"{key + ':':<16}{shown}")
    print(f"{'active_hours:':<16}{' '.join(str(h) for h in hours)}")


def _run_user(args: argparse.Namespace) -> int:
    action, path = args.user_command, f"/v1/users/{quote(args.id)}"
    if action == "set":
        attrs = _parse_attrs(args.attrs)
        if isinstance(attrs, str):
            return fail(attrs)
        raw = call_admin(args, path, {"app": app_id(args), "attrs": attrs}, method="PATCH")
    elif action == "erase":
        raw = call_admin(args, path, method="DELETE", query={"app": app_id(args)})
    else:
        suffix = "/export" if action == "export" else ""
        raw = call_admin(args, path + suffix, method="GET", query={"app": app_id(args)})
    if isinstance(raw, int):
        return raw
    if action == "erase":
        print(f"erased {args.id}")
    elif args.json or action == "export":
        print_json(json.loads(raw))
    else:
        _print_profile(json.loads(raw))
    return 0


COMMAND = Command(
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
