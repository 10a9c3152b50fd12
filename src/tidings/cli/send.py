"""``tidings send``: one message to users or devices, now, through the admin API."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tidings.cli.common import (
    Command,
    add_admin_options,
    call_admin,
    env,
    fail,
    plural,
)
from tidings.protocol import kinds
from tidings.words import REASONS

__all__ = ["COMMAND"]


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
    add_admin_options(p)


def _send_payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "app": args.app or env("TIDINGS_APP", "demo"),
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


def _run_send(args: argparse.Namespace) -> int:
    try:
        payload = _send_payload(args)
    except json.JSONDecodeError as exc:
        return fail(f"--data: not valid JSON ({exc.msg})")
    raw = call_admin(args, "/v1/messages", payload)
    if isinstance(raw, int):
        return raw
    if args.json:
        print(raw.decode("utf-8"))
        return 0
    result = json.loads(raw)
    print(
        f"sent {result['message_id']}: {plural(result['devices'], 'device delivery')} "
        f"to {plural(result['users'], 'user')}"
    )
    if result.get("no_device"):
        print(f"  {plural(result['no_device'], 'user')} with no device yet: kept in their inbox"
              " for their first device")  # fmt: skip
    for reason, count in sorted((result.get("skipped") or {}).items()):
        print(f"  skipped {count}: {REASONS.get(reason, reason)} ({reason})")
    return 0


COMMAND = Command(
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
