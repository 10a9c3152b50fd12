"""The ``week`` load-test scenario: campaigns over simulated days, checked against ground truth.

The gateway runs on the simulated clock; the devices follow it and live their personas' days
(:mod:`tidings.simulator.engine.living`). Day 0 starts at the first UTC midnight after the
gateway started; everyone connects then (first seen), and these campaigns run:

- ``week-cart`` (from day 0): abandoned cart, ``add_to_cart`` unless ``purchase`` within
  :data:`CART_WAIT_S`, one reminder per user, transactional;
- ``week-ab`` (day 0, 02:00 UTC): an A/B test with a holdout (:data:`AB_CONTROL`) about a sale,
  to the bargain hunters and the mothers, who care about sales: its lift is measured;
- ``week-morning`` (day 0, 12:00 UTC): at 10:00 on each user's own clock, to everyone;
- ``week-best`` (day 1, 12:00 UTC): at each user's best hour (``best_time``), to everyone;
- ``week-daily-N`` (day N >= 2, 12:00 UTC): a deal of the day to everyone.

Every marketing campaign is capped by the gateway's tier and lifecycle caps. The checks use
only the devices' own logs (what they did and what they received) and the gateway's published
rules (see :mod:`tidings.simulator.engine.truth`):

- ``over_cap``: a marketing message that broke a cap of every state the user was in around
  its send time; ``missed``: a user who should have got a message (not capped) and did not;
  ``not_in_audience``: one who got it outside the audience; ``duplicate_campaign_message``;
- ``shown_in_quiet_hours`` (the devices judge every banner they show);
- ``off_local_time``: a 10:00 send outside 10:00 plus the slack; ``off_best_time``: a best-time
  send outside the hour where the device was most active;
- ``lifecycle_mismatch`` / ``tier_mismatch``: users whose stage or tier at the end differs
  from the one their life implies (every user's counts, and each sampled user's profile);
- ``no_lift``: the A/B test's treated users did not buy more than its holdout.

The slack (:func:`slack_s`) is what one scheduler round and a delivery take at the run's speed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tidings.admin_client import AdminClient, quote
from tidings.server.campaigns.engine import TICK_S
from tidings.server.campaigns.model import CONTROL
from tidings.server.campaigns.sendtime import DEFAULT_SEND_HOUR
from tidings.simulator.engine.fleet import CampaignReceipt, DeviceReport, Fleet, read_clock
from tidings.simulator.engine.living import DAY
from tidings.simulator.engine.personas import DevicePlan, plan
from tidings.simulator.engine.truth import (
    Life,
    abandoned,
    best_hour_at,
    cap_full,
    lift,
    local_minutes,
    over_cap,
)

__all__ = [
    "AB_CONTROL",
    "AB_SEGMENT",
    "CART_WAIT_S",
    "DEFAULT_SPEED",
    "EVERYONE",
    "MORNING",
    "WeekRun",
    "first_midnight",
    "slack_s",
]

DEFAULT_SPEED = 3600.0
"""Simulated seconds per real second of the week scenario: an hour a second."""

CART_WAIT_S = 4 * 3600
"""Simulated seconds an abandoned cart waits for a purchase before the reminder."""

AB_SEGMENT = 'attr.persona = "bargain_hunter" or attr.persona = "mother_baby"'
AB_PERSONAS = frozenset({"bargain_hunter", "mother_baby"})
AB_CONTROL = 0.3
"""Holdout share of the A/B test."""
AB_TOPIC = "sale"

EVERYONE = "attr.age >= 13"
"""Every simulated user (every plan's age is at least 13)."""

MORNING = "10:00"
LIFT_WINDOW_S = 2 * DAY
"""Purchases within this long after the A/B test count as converted."""

PROFILE_SAMPLE = 300
"""Users whose profile is read one by one at the end (all users are counted by stage)."""

DAILY_TOPICS = ("sports", "baby", "gaming", "coupon", "welcome", "news")
_MS = 1000.0


def slack_s(speed: float) -> float:
    """Simulated seconds a send may lag its due time: a scheduler round (``TICK_S``) and one
    batch of due sends decided, stored and delivered (about 2 s of real time on the 2-core
    machine for the 5,000 users of one time zone due at the same minute)."""
    return max(600.0, (TICK_S + 2.0) * speed)


def first_midnight(now: float) -> float:
    """The first UTC midnight after ``now``: day 0 of the run."""
    return (math.floor(now / DAY) + 1) * DAY


@dataclass(slots=True)
class _Campaign:
    id: str
    created: float  # simulated time just before it started
    kind: str  # "cart" | "ab" | "morning" | "best" | "daily"


@dataclass(slots=True)
class WeekRun:
    """Drives the scenario's simulated days and judges them."""

    admin: AdminClient
    fleet: Fleet
    devices: int
    seed: int
    days: int
    speed: float
    epoch: float
    progress: Callable[[str, int, int], None] | None = None
    campaigns: list[_Campaign] = field(default_factory=list)
    end: float = 0.0
    real_s: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)

    # --- driving --------------------------------------------------------------------------

    def now(self) -> float:
        return read_clock(self.admin).now

    def _clock(self, change: dict[str, Any]) -> None:
        self.admin.call("PUT", "/v1/clock", change)
        self.fleet.set_clock(read_clock(self.admin))

    def _until(self, at: float) -> None:
        while (now := self.now()) < at:
            time.sleep(min(0.2, max(0.005, (at - now) / self.speed)))

    def _start(self, spec: dict[str, Any], kind: str) -> None:
        created = self.now()
        self.admin.call("POST", "/v1/campaigns", {"app": "demo", **spec})
        self.admin.call("POST", f"/v1/campaigns/{spec['id']}/start?app=demo")
        self.campaigns.append(_Campaign(spec["id"], created, kind))

    def before_connect(self) -> None:
        """Day 0 at midnight, paused: the cart reminder runs from the start."""
        self._start({
            "id": "week-cart", "name": "Abandoned cart", "kind": "triggered",
            "trigger": {"event": "add_to_cart", "delay_s": CART_WAIT_S,
                        "unless": {"event": "purchase", "within_s": CART_WAIT_S}},
            "content": {"kind": "banner", "title": "Still thinking?",
                        "body": "Your basket is waiting", "category": "transactional",
                        "data": {"topic": "cart"}},
            "frequency": {"per_user_limit": 1},
        }, "cart")  # fmt: skip

    def run(self) -> None:
        """Let the days pass at ``speed``, starting each campaign at its time; pause at the end."""
        t0 = time.perf_counter()
        self._clock({"speed": self.speed, "paused": False})
        plan_: list[tuple[float, Callable[[], None]]] = [
            (self.epoch + 2 * 3600, self._ab), (self.epoch + 12 * 3600, self._morning),
            (self.epoch + DAY + 12 * 3600, self._best),
        ]  # fmt: skip
        plan_ += [(self.epoch + d * DAY + 12 * 3600, partial(self._daily, d))
                  for d in range(2, self.days)]  # fmt: skip
        for at, start in plan_:
            if at < self.epoch + self.days * DAY:
                self._until(at)
                start()
                self._report_progress()
        end = self.epoch + self.days * DAY
        while self.now() < end:
            self._until(min(end, self.now() + DAY / 4))
            self._report_progress()
        self._clock({"paused": True})
        self.real_s = time.perf_counter() - t0
        self.end = self.now()

    def _report_progress(self) -> None:
        if self.progress is not None:
            hours = int(min(self.days * 24, (self.now() - self.epoch) // 3600))
            self.progress("hours", hours, self.days * 24)

    def _ab(self) -> None:
        self._start({
            "id": "week-ab", "name": "Sale A/B", "kind": "one_off", "segment": AB_SEGMENT,
            "content": {"kind": "banner", "title": "Sale: half price", "body": "Today only",
                        "category": "marketing", "data": {"topic": AB_TOPIC}},
            "variants": [{"name": "a", "weight": 1},
                         {"name": "b", "weight": 1, "content": {"title": "Half price today"}}],
            "control_share": AB_CONTROL,
            "frequency": {"per_user_limit": 1},
        }, "ab")  # fmt: skip

    def _morning(self) -> None:
        self._start({
            "id": "week-morning", "name": "Good morning", "kind": "scheduled",
            "schedule": {"local_time": MORNING}, "segment": EVERYONE,
            "content": {"kind": "banner", "title": "Good morning", "body": "News of the day",
                        "category": "marketing", "data": {"topic": "news"}},
            "frequency": {"per_user_limit": 1},
        }, "morning")  # fmt: skip

    def _best(self) -> None:
        self._start({
            "id": "week-best", "name": "At your best hour", "kind": "one_off",
            "segment": EVERYONE, "send_time": {"policy": "best_time"},
            "content": {"kind": "banner", "title": "Picked for you", "body": "Just now",
                        "category": "marketing", "data": {"topic": "welcome"}},
            "frequency": {"per_user_limit": 1},
        }, "best")  # fmt: skip

    def _daily(self, day: int) -> None:
        topic = DAILY_TOPICS[day % len(DAILY_TOPICS)]
        self._start({
            "id": f"week-daily-{day}", "name": f"Deal of day {day}", "kind": "one_off",
            "segment": EVERYONE,
            "content": {"kind": "banner", "title": f"Deal of day {day}", "body": "Today only",
                        "category": "marketing", "data": {"topic": topic}},
            "frequency": {"per_user_limit": 1},
        }, "daily")  # fmt: skip

    # --- judging --------------------------------------------------------------------------

    def judge(
        self, report: DeviceReport, violations: dict[str, int], extra: dict[str, Any]
    ) -> tuple[list[float], float, float, int]:
        """Check the run against the devices' lives; return (latencies, precision, recall,
        audience) and fill ``violations`` and ``extra``."""
        plans = {p.user: p for p in (plan(self.seed, i) for i in range(self.devices))}
        lives = _lives(report, plans, self.end)
        slack = slack_s(self.speed)
        mine = [r for r in report.campaign if r.campaign.startswith("week-")]
        by_campaign: dict[str, list[CampaignReceipt]] = {}
        for r in mine:
            by_campaign.setdefault(r.campaign, []).append(r)
        sends: dict[str, list[tuple[float, str]]] = {}  # user -> (sent at, campaign)
        for r in sorted(mine, key=lambda r: r.sent_ms or 0.0):
            if r.category == "marketing" and r.sent_ms:
                sends.setdefault(r.user, []).append((r.sent_ms / _MS, r.campaign))

        bad: dict[str, int] = {}
        _count_duplicates(mine, bad)
        over = 0
        for user, sent in sends.items():
            times = [t for t, _ in sent]
            for t, cid in sent:
                if over_cap(lives[user], times, t, slack):
                    over += 1
                    if over <= 3:
                        c = next(c for c in self.campaigns if c.id == cid)
                        extra.setdefault("over_cap_examples", []).append(
                            self._explain(c, user, plans, lives, sends) | {"sent_day": t}
                        )
        _put(bad, "over_cap", over)
        tp = fp = fn = 0
        per: dict[str, dict[str, Any]] = {}
        for c in self.campaigns:
            got = {r.user for r in by_campaign.get(c.id, [])}
            expected, unsure = self._expected(c, plans, lives, sends, slack)
            hit = len(got & expected)
            wrong = len(got - expected - unsure)
            missed = len(expected - got)
            if c.kind == "ab":  # who is in the holdout is the gateway's draw: count it
                missed = max(0, missed - self._holdout(c.id))
            tp, fp, fn = tp + hit, fp + wrong, fn + missed
            per[c.id] = {"expected": len(expected), "received": len(got),
                         "capped_or_unsure": len(unsure), "not_in_audience": wrong,
                         "missed": missed}  # fmt: skip
            _put(bad, "not_in_audience", wrong)
            _put(bad, "missed", missed)
            if missed and c.kind != "ab":
                extra.setdefault("missed_examples", []).extend(
                    self._explain(c, u, plans, lives, sends) for u in sorted(expected - got)[:3]
                )
            if c.kind == "morning":
                _put(bad, "off_local_time", self._off_local(by_campaign.get(c.id, []), plans,
                                                            slack))  # fmt: skip
            if c.kind == "best":
                _put(bad, "off_best_time", self._off_best(c, by_campaign.get(c.id, []), plans,
                                                          lives, slack))  # fmt: skip
            if c.kind == "ab":
                extra["ab_lift"] = self._lift(c, got, expected, report, bad)
        self._transitions(lives, plans, bad, extra)
        violations.update(bad)
        if self.examples:
            extra["examples"] = self.examples
        extra["campaigns"] = per
        extra["slack_s"] = slack
        extra["simulated_days"] = self.days
        extra["real_s"] = round(self.real_s, 1)
        extra["simulated_days_per_min"] = round(self.days / (self.real_s / 60), 2)
        extra["sessions"] = sum(len(a.sessions) for a in report.activity.values())
        extra["purchases"] = sum(len(a.purchases) for a in report.activity.values())
        extra["carts"] = sum(len(a.carts) for a in report.activity.values())
        latencies = [(r.received_ms - r.sent_ms) / self.speed for r in mine if r.sent_ms]
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        return latencies, precision, recall, tp + fn

    def _expected(
        self, c: _Campaign, plans: dict[str, DevicePlan], lives: dict[str, Life],
        sends: dict[str, list[tuple[float, str]]], slack: float,
    ) -> tuple[set[str], set[str]]:  # fmt: skip
        """(users who must get ``c``, users who may or may not) from the lives alone."""
        if c.kind == "cart":
            return self._cart_expected(lives, slack)
        audience = (
            {u for u, p in plans.items() if p.persona.name in AB_PERSONAS}
            if c.kind == "ab"
            else set(plans)
        )
        capped = set()
        for user in audience:
            dues = self._dues(c, plans[user], lives[user], slack)
            others = [t for t, cid in sends.get(user, []) if cid != c.id]
            if any(cap_full(lives[user], others, due, slack) for due in dues):
                capped.add(user)
        if c.kind != "ab":  # sends falling due after the end are not there yet
            late = {
                u
                for u in audience - capped
                if max(self._dues(c, plans[u], lives[u], slack)) > self.end - slack
            }
            capped |= late
        return audience - capped, capped

    def _explain(
        self, c: _Campaign, user: str, plans: dict[str, DevicePlan], lives: dict[str, Life],
        sends: dict[str, list[tuple[float, str]]],
    ) -> dict[str, Any]:  # fmt: skip
        """Why ``user`` was expected to get ``c``: their state and sends around its due time."""
        life = lives[user]
        due = self._dues(c, plans[user], life, slack_s(self.speed))[0]

        def day(t: float) -> float:
            return round((t - self.epoch) / DAY, 3)

        return {
            "campaign": c.id, "user": user, "persona": plans[user].persona.name,
            "due_day": day(due),
            "states": [(day(t), str(life.profile_at(t).lifecycle), str(life.profile_at(t).tier))
                       for t in (due - 6 * 3600, due, due + 6 * 3600)],
            "sends": [(day(t), cid) for t, cid in sends.get(user, [])],
            "seen": [day(t) for t in life.seen][-4:],
        }  # fmt: skip

    def _dues(self, c: _Campaign, p: DevicePlan, life: Life, slack: float) -> list[float]:
        """When the gateway may decide ``c`` for this user (each to within the slack)."""
        if c.kind == "morning":
            return [_next_local(c.created, p.persona.tz, 10 * 60)]
        if c.kind == "best":
            return [_next_local(c.created, p.persona.tz, hour * 60, under_way=True)
                    for hour in _best_hours(life, p.persona.tz, c.created, slack)]  # fmt: skip
        return [c.created]

    def _cart_expected(self, lives: dict[str, Life], slack: float) -> tuple[set[str], set[str]]:
        expected, unsure = set(), set()
        for user, life in lives.items():
            carts = list(life.carts)
            bought = [at for at, _ in life.purchases]
            sure = [c for c in abandoned(carts, bought, CART_WAIT_S + slack)
                    if c + CART_WAIT_S + slack <= self.end]  # fmt: skip
            maybe = set(abandoned(carts, bought, CART_WAIT_S - slack)) - set(sure)
            if sure:
                expected.add(user)
            elif maybe:
                unsure.add(user)
        return expected, unsure

    def _holdout(self, campaign: str) -> int:
        stats = self.admin.call("GET", f"/v1/campaigns/{quote(campaign)}/stats?app=demo")
        holdout = (stats.get("variants") or {}).get(CONTROL) or {}
        return int(holdout.get("targeted", 0))

    def _off_local(
        self, got: list[CampaignReceipt], plans: dict[str, DevicePlan], slack: float
    ) -> int:
        start = 10 * 60
        return sum(
            1 for r in got if r.sent_ms
            and not 0 <= (local_minutes(r.sent_ms / _MS, plans[r.user].persona.tz) - start)
            % 1440 <= slack / 60
        )  # fmt: skip

    def _off_best(
        self, c: _Campaign, got: list[CampaignReceipt], plans: dict[str, DevicePlan],
        lives: dict[str, Life], slack: float,
    ) -> int:  # fmt: skip
        off = 0
        for r in got:
            if not r.sent_ms:
                continue
            tz = plans[r.user].persona.tz
            hours = _best_hours(lives[r.user], tz, c.created, slack)
            minute = local_minutes(r.sent_ms / _MS, tz)
            if not any(0 <= (minute - h * 60) % 1440 <= 60 + slack / 60 for h in hours):
                off += 1
                if off <= 3:
                    self.examples.append({
                        "check": "off_best_time", "user": r.user, "tz": tz,
                        "sent_local": f"{minute // 60:02d}:{minute % 60:02d}",
                        "best_hours": sorted(hours), "created_day": (c.created - self.epoch) / DAY,
                        "sessions": [((at - self.epoch) / DAY, n)
                                     for at, n in lives[r.user].sessions
                                     if at < c.created + slack][:40],
                    })  # fmt: skip
        return off

    def _lift(
        self, c: _Campaign, got: set[str], audience: set[str], report: DeviceReport,
        bad: dict[str, int],
    ) -> dict[str, Any]:  # fmt: skip
        bought = {u: [at for at, _ in a.purchases] for u, a in report.activity.items()}
        control = audience - got
        treated_rate, control_rate = lift(got & audience, control, bought, c.created,
                                          LIFT_WINDOW_S)  # fmt: skip
        if not treated_rate > control_rate:
            bad["no_lift"] = 1
        return {"treated": len(got & audience), "holdout": len(control),
                "treated_conversion": round(treated_rate, 3),
                "holdout_conversion": round(control_rate, 3),
                "lift": round(treated_rate - control_rate, 3)}  # fmt: skip

    def _transitions(
        self, lives: dict[str, Life], plans: dict[str, DevicePlan], bad: dict[str, int],
        extra: dict[str, Any],
    ) -> None:  # fmt: skip
        """Stage and tier of every user at the end against the gateway's, and how they moved."""
        expected: dict[str, dict[str, int]] = {"lifecycle": {}, "tier": {}}
        moves: dict[str, int] = {}
        at_end = {}
        for user, life in lives.items():
            start, end = life.profile_at(self.epoch + 1), life.profile_at(self.end)
            at_end[user] = end
            for kind, value in (("lifecycle", str(end.lifecycle)), ("tier", str(end.tier))):
                expected[kind][value] = expected[kind].get(value, 0) + 1
            if start.lifecycle != end.lifecycle:
                key = f"{start.lifecycle}->{end.lifecycle}"
                moves[key] = moves.get(key, 0) + 1
        actual: dict[str, dict[str, int]] = {"lifecycle": {}, "tier": {}}
        for kind in actual:
            for value in set(expected[kind]) | {"new", "active", "dormant", "churned",
                                                "high_value", "potential", "basic"}:  # fmt: skip
                if kind == "tier" and value in ("new", "active", "churned"):
                    continue
                if kind == "lifecycle" and value in ("high_value", "potential", "basic"):
                    continue
                n = int(self.admin.call("POST", "/v1/segments/preview", {
                    "app": "demo", "text": f"{kind} = {value}", "sample": 0})["count"])  # fmt: skip
                if n or expected[kind].get(value):
                    actual[kind][value] = n
        for kind in ("lifecycle", "tier"):
            diff = sum(abs(actual[kind].get(v, 0) - expected[kind].get(v, 0))
                       for v in set(actual[kind]) | set(expected[kind])) // 2  # fmt: skip
            _put(bad, f"{kind}_mismatch", diff)
        users = sorted(lives, key=lambda u: int(u[1:]))
        step = max(1, len(users) // PROFILE_SAMPLE)
        wrong = {"lifecycle": 0, "tier": 0}
        for user in users[::step]:
            got = self.admin.call("GET", f"/v1/users/{user}?app=demo")
            wrong["lifecycle"] += got["lifecycle"] != str(at_end[user].lifecycle)
            wrong["tier"] += got["tier"] != str(at_end[user].tier)
        for kind, n in wrong.items():
            _put(bad, f"{kind}_mismatch", max(bad.get(f"{kind}_mismatch", 0), n))
        extra["distribution"] = actual
        extra["expected_distribution"] = expected
        extra["lifecycle_moves"] = moves


def _lives(report: DeviceReport, plans: dict[str, DevicePlan], end: float) -> dict[str, Life]:
    """Every user's life from their device's log. A device learns of the pause at the end a
    moment after the gateway: what it did in that moment the gateway took as done at ``end``
    (it never takes an event from its future), and so does the checker."""
    out = {}
    for user in plans:
        activity = report.activity.get(user)
        hellos = [min(t, end) for t in report.connected_at.get(user, [])]
        sessions = tuple((min(at, end), n) for at, _, n in activity.sessions) if activity else ()
        seen = tuple(sorted([*hellos, *(at for at, _ in sessions)]))
        out[user] = Life(
            user, seen, sessions,
            tuple((min(at, end), a) for at, a in activity.purchases) if activity else (),
            tuple(min(at, end) for at in activity.carts) if activity else (),
        )  # fmt: skip
    return out


def _best_hours(life: Life, tz: str, created: float, slack: float) -> set[int]:
    """Every best hour the gateway may have seen for this user while it decided a best-time
    campaign started at ``created``: the device's events of the slack around it may or may
    not have reached it yet."""
    times = [created - slack, created + slack]
    times += [at + 1e-3 for at, _ in life.sessions if created - slack <= at <= created + slack]
    return {best_hour_at(life, tz, t, DEFAULT_SEND_HOUR) for t in times}


def _next_local(after: float, tz: str, minute: int, *, under_way: bool = False) -> float:
    """The next ``minute`` of the day on ``tz``'s clock after ``after`` (``under_way``: the
    current hour counts when ``minute`` starts it and it is not over)."""
    from tidings.client_sdk.quiet_hours import zone

    local = dt.datetime.fromtimestamp(after, zone(tz))
    start = local.replace(hour=minute // 60, minute=minute % 60, second=0, microsecond=0)
    if under_way and start <= local < start + dt.timedelta(hours=1):
        return after
    if start <= local:
        start += dt.timedelta(days=1)
    return start.timestamp()


def _count_duplicates(receipts: list[CampaignReceipt], bad: dict[str, int]) -> None:
    ids: dict[tuple[str, str], set[str]] = {}
    for r in receipts:
        ids.setdefault((r.user, r.campaign), set()).add(r.message_id)
    _put(bad, "duplicate_campaign_message", sum(len(v) - 1 for v in ids.values()))


def _put(bad: dict[str, int], key: str, n: int) -> None:
    if n:
        bad[key] = bad.get(key, 0) + n
