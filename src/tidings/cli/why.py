"""``tidings why``: the decision log of one user for one campaign, in words."""

from __future__ import annotations

import argparse
from typing import Any

from tidings.admin_client import quote
from tidings.cli.common import (
    Command,
    add_admin_options,
    fail,
    get_json,
    print_json,
)
from tidings.words import decision_lines

__all__ = ["COMMAND"]


def _configure_why(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign", help="campaign id")
    p.add_argument("user", help="user id")
    p.add_argument("--limit", type=int, default=5, help="latest decisions to show (default 5)")
    p.add_argument("--tz", default=None, metavar="ZONE",
                   help="show times in this IANA time zone, e.g. Asia/Shanghai, or 'user' for"
                   " the user's own zone (default: your local zone)")  # fmt: skip
    add_admin_options(p)


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
        return fail("--limit must be between 1 and 1000")
    tz = args.tz
    if tz == "user":
        user = get_json(args, f"/v1/users/{quote(args.user)}")
        if isinstance(user, int):
            return user
        tz = user.get("tz") or None
        if tz is None:
            return fail(f"--tz user: {args.user} has no known time zone; give a zone name")
    try:
        zone, zone_name = _why_zone(tz)
    except ValueError as exc:
        return fail(str(exc))
    if args.tz == "user":
        zone_name = f"{tz} (the user's zone)"
    result = get_json(args, f"/v1/campaigns/{quote(args.campaign)}/decisions", user=args.user,
                       limit=args.limit)  # fmt: skip
    if isinstance(result, int):
        return result
    if args.json:
        print_json(result)
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


COMMAND = Command(
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
