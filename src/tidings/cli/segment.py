"""``tidings segment``: preview a segment written as text (how many users it selects now)."""

from __future__ import annotations

import argparse
import json

from tidings.cli.common import (
    Command,
    add_admin_options,
    app_id,
    call_admin,
    plural,
)

__all__ = ["COMMAND"]


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
    add_admin_options(preview)


def _run_segment(args: argparse.Namespace) -> int:
    payload = {"app": app_id(args), "text": args.text, "sample": args.sample}
    raw = call_admin(args, "/v1/segments/preview", payload)
    if isinstance(raw, int):
        return raw
    if args.json:
        print(raw.decode("utf-8"))
        return 0
    result = json.loads(raw)
    print(f"{plural(result['count'], 'user')} {'matches' if result['count'] == 1 else 'match'}: "
          f"{result['text']}")  # fmt: skip
    for user in result["sample"]:
        print(f"  {user}")
    return 0


COMMAND = Command(
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
