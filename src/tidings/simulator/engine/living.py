"""Devices that keep living: each persona's daily rhythm, its drift over weeks, and reactions.

Pure and deterministic from (seed, device index, day): the fleet asks :func:`day_sessions` for
a device's sessions of one local day and schedules them on a heap (a device between sessions
costs nothing); a campaign message asks :func:`reaction` whether the device opens the app
because of it and buys. The ground truth checks read the same functions' results from the
devices' activity logs, never from the gateway.

Rhythm: sessions start only inside the persona's active hours (local time, well outside its
quiet hours), by a Poisson draw of its daily rate; a session browses content by interest,
may add to the cart and may buy. Drift: new users settle or churn in their first week (a
churned one sometimes comes back for a few days), dormant users mostly stay away but now and
then return for a short burst, everyone else's rate wanders week by week. Reactions: a message
about one of the persona's interests brings most devices to a session soon (in their active
hours) where many buy; a generic one rarely does. So a campaign's effect is real, and its
holdout is the baseline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from tidings.client_sdk.quiet_hours import zone
from tidings.simulator.engine.personas import DevicePlan, Persona

__all__ = [
    "DAY",
    "RHYTHMS",
    "Reaction",
    "Rhythm",
    "Session",
    "active_window",
    "day_sessions",
    "local_date",
    "react_session",
    "reaction",
]

DAY = 86_400.0

REACTION_WITHIN_S = 3600.0
"""A device that reacts to a message opens the app within this long (inside its active hours)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rhythm:
    """How a persona lives a day: when, how often, what it does in a session."""

    active: tuple[int, int]  # local hours [start, end): every session starts and ends inside
    sessions_per_day: float
    cart_p: float  # chance a session adds to the cart
    buy_p: float  # chance a cart is bought in the same session
    amount: int  # price of what it buys
    react_relevant: float = 0.8  # chance to open the app for a message about an interest
    react_generic: float = 0.1
    buy_relevant: float = 0.7  # chance to buy in that session
    buy_generic: float = 0.2


RHYTHMS: Mapping[str, Rhythm] = {
    "sports_fan": Rhythm(active=(18, 23), sessions_per_day=2.0, cart_p=0.1, buy_p=0.4,
                         amount=99),
    "bargain_hunter": Rhythm(active=(19, 22), sessions_per_day=1.5, cart_p=0.35, buy_p=0.5,
                             amount=59),
    "mother_baby": Rhythm(active=(9, 12), sessions_per_day=1.2, cart_p=0.25, buy_p=0.5,
                          amount=199),
    "new_user": Rhythm(active=(17, 21), sessions_per_day=1.5, cart_p=0.1, buy_p=0.3, amount=39),
    "night_owl": Rhythm(active=(20, 24), sessions_per_day=1.5, cart_p=0.1, buy_p=0.3,
                        amount=49),
    "dormant_user": Rhythm(active=(19, 21), sessions_per_day=1.0, cart_p=0.1, buy_p=0.3,
                           amount=29, react_relevant=0.2, react_generic=0.02),
}  # fmt: skip

SESSION_MAX_S = 600.0
"""Longest session: it starts at least this long before its active window ends."""


@dataclass(frozen=True, slots=True)
class Session:
    """One visit: at ``at`` (unix s) the device opens the app, browses, maybe carts and buys."""

    at: float
    views: tuple[str, ...]  # categories of the articles read
    cart: bool
    buy: bool
    amount: int
    reason: str = "habit"  # or the campaign that brought the device


@dataclass(frozen=True, slots=True)
class Reaction:
    """What a device does about one message: a session at ``at``, or nothing (``at`` None)."""

    at: float | None
    buy: bool


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def active_window(persona: Persona, local_day: dt.date) -> tuple[float, float]:
    """(start, end) unix seconds of the persona's active hours on ``local_day`` in its zone."""
    rhythm = RHYTHMS[persona.name]
    tz = zone(persona.tz)
    start = dt.datetime.combine(local_day, dt.time(rhythm.active[0]), tz)
    end_day = local_day + dt.timedelta(days=rhythm.active[1] // 24)
    end = dt.datetime.combine(end_day, dt.time(rhythm.active[1] % 24), tz)
    return start.timestamp(), end.timestamp()


def local_date(persona: Persona, at: float) -> dt.date:
    """The date on the persona's wall clock at unix time ``at``."""
    return dt.datetime.fromtimestamp(at, zone(persona.tz)).date()


def _engagement(seed: int, plan: DevicePlan, day: int) -> float:
    """Multiplier of the persona's daily rate on day ``day`` of the run (0 = stays away)."""
    name = plan.persona.name
    fate = _rng(seed, plan.index, "fate")
    if name == "new_user":
        churn_day = fate.randint(2, 6) if fate.random() < 0.4 else None
        if churn_day is None or day < churn_day:
            return 1.0
        return 1.0 if _returning(seed, plan.index, day, 0.03) else 0.0
    if name == "dormant_user":
        return 1.0 if _returning(seed, plan.index, day, 0.04) else 0.0
    return 0.6 + 0.8 * _rng(seed, plan.index, "week", day // 7).random()


def _returning(seed: int, index: int, day: int, chance: float, burst: int = 3) -> bool:
    """True when a device away from the app is back on ``day``: a return of ``burst`` days
    begins on any day with probability ``chance``."""
    return any(_rng(seed, index, "return", d).random() < chance
               for d in range(max(0, day - burst + 1), day + 1))  # fmt: skip


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _views(rng: random.Random, persona: Persona, plan: DevicePlan) -> tuple[str, ...]:
    topics = sorted(persona.interests) or ["news"]
    return tuple(rng.choice(topics) for _ in range(rng.randint(1, 3)))


def day_sessions(seed: int, plan: DevicePlan, first_day: dt.date, day: int) -> list[Session]:
    """The habitual sessions of device ``plan`` on local day ``first_day + day``."""
    persona, rhythm = plan.persona, RHYTHMS[plan.persona.name]
    rng = _rng(seed, plan.index, "day", day)
    n = min(4, _poisson(rng, rhythm.sessions_per_day * _engagement(seed, plan, day)))
    start, end = active_window(persona, first_day + dt.timedelta(days=day))
    out = []
    for _ in range(n):
        at = start + rng.random() * (end - start - SESSION_MAX_S)
        cart = rng.random() < rhythm.cart_p
        buy = cart and rng.random() < rhythm.buy_p
        out.append(Session(at, _views(rng, persona, plan), cart, buy, rhythm.amount))
    return sorted(out, key=lambda s: s.at)


def reaction(
    seed: int, plan: DevicePlan, campaign: str, topic: object, received_at: float
) -> Reaction:
    """Whether a message of ``campaign`` about ``topic`` brings the device to the app, and when.

    A reacting device comes within :data:`REACTION_WITHIN_S` if it is in its active hours, or
    early in its next active window otherwise.
    """
    persona, rhythm = plan.persona, RHYTHMS[plan.persona.name]
    rng = _rng(seed, plan.index, "react", campaign)
    relevant = topic in persona.interests
    if rng.random() >= (rhythm.react_relevant if relevant else rhythm.react_generic):
        return Reaction(None, False)
    buy = rng.random() < (rhythm.buy_relevant if relevant else rhythm.buy_generic)
    delay = rng.random() * REACTION_WITHIN_S
    today = local_date(persona, received_at)
    for offset in (-1, 0, 1, 2):  # a window may have begun the local day before (night owls)
        start, end = active_window(persona, today + dt.timedelta(days=offset))
        last = end - SESSION_MAX_S
        if last > received_at:
            return Reaction(min(max(received_at, start) + delay, last), buy)
    return Reaction(None, False)  # pragma: no cover - some window of the next days is open


def react_session(plan: DevicePlan, r: Reaction, campaign: str) -> Session:
    """The session a reaction brings: the device reads the message's topic and maybe buys."""
    assert r.at is not None
    rhythm = RHYTHMS[plan.persona.name]
    topics = sorted(plan.persona.interests) or ["news"]
    return Session(r.at, (topics[0],), r.buy, r.buy, rhythm.amount, reason=campaign)
