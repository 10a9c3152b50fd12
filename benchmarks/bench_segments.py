"""Segment resolution: the profile index vs. evaluating every profile.

Builds N synthetic profiles (seeded, so runs compare), indexes them, then resolves several
segments repeatedly and prints per-query p50/max, the audience size, and the time of the naive
full scan (``evaluate`` on every profile) for the same segment. The SPEC §8 target is a
3-condition segment over 100,000 profiles in < 200 ms.

Usage::

    .venv/bin/python benchmarks/bench_segments.py
    .venv/bin/python benchmarks/bench_segments.py -n 200000 --repeat 50
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from tidings.server.targeting.index import ProfileIndex
from tidings.server.targeting.lifecycle import Lifecycle, Tier
from tidings.server.targeting.profiles import Profile
from tidings.server.targeting.segments import Event, evaluate, parse

DEFAULT_N = 100_000
DEFAULT_REPEAT = 20
NOW = 1_700_000_000.0
DAY = 86_400

SEGMENTS = [
    'tag:sports_fan and lifecycle = active and attr.region = "CN-SH"',
    "(tag:sports_fan or tag:takeout_regular) and consent:marketing and platform = ios",
    "lifecycle in (active, new) and attr.gender = f and attr.age between 18 and 30",
    'tier = high_value and last_seen within 3d and app_version >= "2.3"',
    "tag:mother_baby and event purchase count >= 2 within 30d where category = shoes",
    "not tag:sports_fan and not lifecycle = churned",
]


def make_profiles(n: int, seed: int) -> list[Profile]:
    """Return ``n`` varied profiles."""
    rng = random.Random(seed)
    regions = ["CN-SH", "CN-BJ", "CN-GD", "CN-ZJ", "CN-SC", "US-CA", "DE-BE", "JP-13"]
    tags = ["sports_fan", "takeout_regular", "bargain_hunter", "mother_baby", "night_owl"]
    stages = list(Lifecycle)
    tiers = list(Tier)
    profiles = []
    for i in range(n):
        profiles.append(
            Profile(
                app="shop",
                user_id=f"user-{i}",
                attrs={
                    "region": rng.choice(regions),
                    "gender": rng.choice("mf"),
                    "age": rng.randint(14, 70),
                    "email": f"user{i}@example.com",  # high cardinality: not equality-indexed
                },
                tags=frozenset(t for t in tags if rng.random() < 0.2),
                lifecycle=rng.choice(stages),
                tier=rng.choice(tiers),
                consent={"marketing": rng.random() > 0.1},
                first_seen=NOW - 200 * DAY,
                last_seen=NOW - rng.random() * 40 * DAY,
                tz=rng.choice(["Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
                locale=rng.choice(["zh-CN", "en-US", "de-DE"]),
                platform=rng.choice(["ios", "android", "web"]),
                app_version=rng.choice(["2.1", "2.2.5", "2.3", "2.3.1", "2.10"]),
            )
        )
    return profiles


def fake_events(user_id: str, node: Event, now: float) -> float:
    """A stand-in event store: a cheap deterministic count per user."""
    return float(ord(user_id[-1]) % 4)


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=DEFAULT_N, help="number of profiles")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="resolutions per segment")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    t0 = time.perf_counter()
    profiles = make_profiles(args.n, args.seed)
    t1 = time.perf_counter()
    index = ProfileIndex("shop")
    for p in profiles:
        index.upsert(p)
    t2 = time.perf_counter()
    print(f"profiles: {args.n:,}  generate {t1 - t0:.2f} s  index build {t2 - t1:.2f} s")
    print(f"{'segment':<82} {'users':>7} {'p50 ms':>8} {'max ms':>8} {'scan ms':>8}")
    for text in SEGMENTS:
        tree = parse(text)
        times = []
        result: set[str] = set()
        for _ in range(args.repeat):
            s = time.perf_counter()
            result = index.resolve(tree, NOW, fake_events)
            times.append((time.perf_counter() - s) * 1000)
        s = time.perf_counter()
        naive = {p.user_id for p in profiles if evaluate(tree, p, NOW, fake_events)}
        scan_ms = (time.perf_counter() - s) * 1000
        assert naive == result, text
        print(
            f"{text:<82} {len(result):>7} {statistics.median(times):>8.1f} "
            f"{max(times):>8.1f} {scan_ms:>8.1f}"
        )


if __name__ == "__main__":
    main()
