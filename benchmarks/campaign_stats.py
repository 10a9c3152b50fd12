"""Campaign stats on a large SQLite store: how long the report of one campaign takes.

Builds a store with U users who each logged E events over D days (seeded), and a campaign with
an A/B test, a holdout and a conversion goal sent to every user outside the holdout, with
displays, clicks and conversions; then times each read the report makes and the report itself
(:meth:`CampaignEngine.stats` does exactly these reads).

Usage::

    .venv/bin/python benchmarks/campaign_stats.py
    .venv/bin/python benchmarks/campaign_stats.py --users 10000 --events 60 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from tidings.server.campaigns.model import Campaign
from tidings.server.campaigns.stats import RETENTION_WINDOWS, Cohort, campaign_stats
from tidings.server.storage import SqliteStore

APP = "demo"
CID = "ab-sale"
T0 = 1_780_000_000.0
DAY = 86_400.0
NAMES = ("app_open", "view_item", "add_to_cart", "search", "paid")


def _campaign() -> Campaign:
    return Campaign.from_json({
        "id": CID, "app": APP, "name": "A/B sale", "kind": "one_off", "status": "completed",
        "content": {"kind": "banner", "title": "Sale", "body": "20% off"},
        "variants": [{"name": "a"}, {"name": "b"}], "control_share": 0.3,
        "conversion": {"event": "paid"},
    })  # fmt: skip


def build(db: Path, users: int, events: int, days: float, seed: int) -> None:
    """Fill a migrated store at ``db`` with the synthetic app (plain SQL, for speed)."""
    rnd = random.Random(seed)
    con = sqlite3.connect(db)
    spec = json.dumps(_campaign().to_json())
    con.execute("INSERT INTO campaigns (app, id, spec, status, sent_total, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?)",
                (APP, CID, spec, "completed", 0, T0, T0))  # fmt: skip
    ev: list[tuple[Any, ...]] = []
    sends, decisions, messages, receipts, deliveries = [], [], [], [], []
    for u in range(users):
        user = f"u{u}"
        for k in range(events):
            ts = T0 + rnd.random() * days * DAY
            ev.append((APP, f"d{u}", f"e{k}", user, rnd.choice(NAMES), ts, "{}", ts))
        at = T0 + DAY + rnd.random() * 60
        if rnd.random() < 0.3:
            decisions.append((APP, CID, user, at, "holdout", "", "control", None))
            continue
        variant, mid = rnd.choice("ab"), f"m{u}"
        sends.append((APP, user, at, "marketing", CID, variant, mid))
        decisions.append((APP, CID, user, at, "sent", "", variant, mid))
        messages.append((APP, mid, CID, variant, "banner", "marketing", "normal", None, at,
                         at + DAY, b"", 0))  # fmt: skip
        deliveries.append((APP, f"d{u}", 1, mid, None, 1))
        if rnd.random() < 0.6:
            receipts.append((APP, mid, f"d{u}", "displayed", None, at + 5))
            if rnd.random() < 0.2:
                receipts.append((APP, mid, f"d{u}", "clicked", None, at + 9))
    con.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)", ev)
    con.executemany(
        "INSERT INTO sends (app, user_key, at, category, campaign, variant, message_id)"
        " VALUES (?,?,?,?,?,?,?)", sends)  # fmt: skip
    con.executemany(
        "INSERT INTO decisions (app, campaign, user_key, at, reason, detail, variant,"
        " message_id) VALUES (?,?,?,?,?,?,?,?)", decisions)  # fmt: skip
    con.executemany(
        "INSERT INTO messages (app, id, campaign, variant, kind, category, priority,"
        " collapse_key, created_at, expires_at, wire, revoked) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        messages)  # fmt: skip
    con.executemany(
        "INSERT INTO deliveries (app, device_id, seq, message_id, collapse_key, state)"
        " VALUES (?,?,?,?,?,?)", deliveries)  # fmt: skip
    con.executemany(
        "INSERT INTO receipts (app, message_id, device_id, kind, action, ts)"
        " VALUES (?,?,?,?,?,?)", receipts)  # fmt: skip
    con.commit()
    con.close()


async def measure(db: Path, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of each read of the report, and of the whole report."""
    store = SqliteStore(str(db))
    await store.open()
    c = _campaign()
    best: dict[str, float] = {}

    def keep(name: str, t0: float) -> None:
        best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)

    try:
        for _ in range(repeat):
            start = t0 = time.perf_counter()
            counts = await store.funnel_counts(APP, CID)
            keep("funnel_counts", t0)
            t0 = time.perf_counter()
            channels = await store.channel_counts(APP, CID)
            keep("channel_counts", t0)
            t0 = time.perf_counter()
            rows = await store.cohorts(APP, CID, max(RETENTION_WINDOWS.values()))
            cohorts = [Cohort(*r) for r in rows]
            keep("cohorts", t0)
            t0 = time.perf_counter()
            assert c.conversion is not None
            since = min(x.start for x in cohorts)
            found = await store.events_since(APP, since, name=c.conversion.event)
            events = [(e.user_key, e.ts, e.props) for e in found]
            keep("conversion events", t0)
            t0 = time.perf_counter()
            report = campaign_stats(c, counts, channels, cohorts, events, now=T0 + 30 * DAY)
            keep("campaign_stats", t0)
            keep("whole report", start)
        best["converted"] = float(report["total"]["converted"])
    finally:
        await store.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=60, help="events per user")
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stats.db"
        asyncio.run(_migrate(db))
        t0 = time.perf_counter()
        build(db, args.users, args.events, args.days, args.seed)
        print(f"built {args.users:,} users x {args.events} events in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        for name, value in asyncio.run(measure(db, args.repeat)).items():
            unit = "" if name == "converted" else " s"
            print(f"{name:>18}: {value:.3f}{unit}" if unit else f"{name:>18}: {value:,.0f}")


async def _migrate(db: Path) -> None:
    store = SqliteStore(str(db))
    await store.open()
    await store.close()


if __name__ == "__main__":
    main()
