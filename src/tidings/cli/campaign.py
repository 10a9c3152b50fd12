"""``tidings campaign``: create, list, show, start, pause, cancel campaigns and read their stats."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tidings.admin_client import quote
from tidings.cli.common import (
    Command,
    add_admin_options,
    app_id,
    call_admin,
    duration,
    fail,
    pct,
    print_json,
    table,
    when,
)

__all__ = ["COMMAND"]


def _configure_campaign(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create",
        help="create a draft from campaign JSON",
        description="Create a campaign (a draft) from its JSON; 'app' defaults to --app. "
        "Errors name the field, templates included.",
    )
    create.add_argument("file", help="campaign JSON file, or - for standard input")
    add_admin_options(create)
    listing = sub.add_parser("list", help="list the app's campaigns")
    add_admin_options(listing)
    for name, what in (("show", "print a campaign's JSON"), ("start", "start or resume it"),
                       ("pause", "pause it"), ("cancel", "cancel it, revoking undisplayed "
                                                         "messages"),
                       ("stats", "funnel per variant, comparisons and the winner")):  # fmt: skip
        action = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("id", help="campaign id")
        add_admin_options(action)


def _campaign_line(c: dict[str, Any]) -> str:
    return f"{c['id']}: {c['status']} ({c['kind']}, sent {c['sent_total']}) - {c['name']}"


_STAGES = ("targeted", "sent", "delivered", "displayed", "clicked", "dismissed", "converted")


_STAGE_WORDS = {"expired": "expired unseen"}
"""How the per-channel funnel names a receipt kind, where the kind alone would mislead."""


def _print_stats(stats: dict[str, Any]) -> None:
    conv = stats.get("conversion")
    goal = ""
    if conv:
        where = " and ".join(f"{w['prop']} {w['op']} {w['value']!r}" for w in conv["where"])
        said = (f"{conv['event']}{' where ' + where if where else ''}, "
                f"within {duration(conv['window_s'])}")  # fmt: skip
        goal = (f"; conversions: {said} (the app's value event: the campaign names no goal)"
                if conv.get("default") else f" ({said})")  # fmt: skip
    print(f"{stats['campaign']} ({stats['status']}), compared on {stats['metric']}{goal}")
    rows: list[tuple[str, ...]] = [("variant", *_STAGES, "ctr", "conv")]
    arms = {**stats["variants"], "total": stats["total"]}
    for name, f in arms.items():
        rows.append((name, *(str(f[s]) for s in _STAGES), f"{f['ctr']:.1%}",
                     f"{f['conversion_rate']:.1%}"))  # fmt: skip
    table(rows)
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
            else (f", {control['converted']} converted ({pct(control['conversion_rate'])})")
        )
        print(f"control (held out): {control['users']} users{got}")
    if stats.get("lift"):
        print("lift over control (converted within the window after the send vs held out; "
              "95% CI, Newcombe):")  # fmt: skip
        rows = [("variant", "users", "conv", "rate", "control", "diff", "95% CI", "relative")]
        for x in stats["lift"]:
            rel = "-" if x["relative"] is None else f"{x['relative']:+.1%}"
            rows.append((x["variant"], str(x["users"]), str(x["converted"]), pct(x["rate"]),
                         pct(x["control_rate"]), f"{x['difference'] * 100:+.1f} pts",
                         f"[{x['low'] * 100:+.1f}, {x['high'] * 100:+.1f}]", rel))  # fmt: skip
        table(rows, "  ")
    retention = stats.get("retention") or {}
    groups = list(dict.fromkeys(g for w in retention.values() for g in w))
    if groups:
        print("retention (any event after the send; holdout: after the decision):")
        rows = [("group", *retention)]
        for g in groups:
            cells = []
            for w in retention.values():
                r = w.get(g, {"users": 0, "returned": 0, "waiting": 0, "rate": 0.0})
                cell = f"{pct(r['rate'])} ({r['returned']}/{r['users']})" if r["users"] else "-"
                if r["waiting"]:
                    cell += f" ({r['waiting']} waiting)"
                cells.append(cell)
            rows.append((g, *cells))
        table(rows, "  ")
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
                  f"the winner, or at {when(r.get('deadline'))} the {r['at_deadline']} "
                  f"{'variant' if r['at_deadline'] == 'best' else 'content'}")  # fmt: skip
        elif r["phase"] == "rolled_out":
            what = r.get("variant") or "the base content"
            print(f"roll-out: rolled out {what} at {when(r.get('decided_at'))} "
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
            return fail(f"{args.file}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            return fail(f"{args.file}: not valid JSON ({exc.msg}, line {exc.lineno})")
        if isinstance(spec, dict):
            spec.setdefault("app", app_id(args))
        raw = call_admin(args, "/v1/campaigns", spec)
    elif action == "list":
        raw = call_admin(args, "/v1/campaigns", method="GET", query={"app": app_id(args)})
    elif action in ("show", "stats"):
        path = f"/v1/campaigns/{quote(args.id)}" + ("/stats" if action == "stats" else "")
        raw = call_admin(args, path, method="GET", query={"app": app_id(args)})
    else:
        raw = call_admin(
            args, f"/v1/campaigns/{quote(args.id)}/{action}", query={"app": app_id(args)}
        )
    if isinstance(raw, int):
        return raw
    result = json.loads(raw)
    if args.json or action == "show":
        print_json(result)
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


COMMAND = Command(
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
