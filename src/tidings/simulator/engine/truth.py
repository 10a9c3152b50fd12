"""Ground truth: what should have happened, from the simulator's own knowledge of each device.

Pure functions: the fleet records what each device showed and when; these decide whether a rule
was broken, and how well an actual audience matches the expected one. Expected audiences and
renderings come from the devices' plans (:func:`tidings.simulator.engine.personas.plan`), never
from the server: the simulator computes who *should* get a campaign from what it made each
device do, and compares that with who *did*.

Over weeks (:class:`Life`), the inputs are the devices' own logs of what they did (sessions,
purchases, connections); the *rules* are the gateway's: lifecycle and tier through its
:func:`~tidings.server.targeting.profiles.reclassify` and thresholds, caps through its
:func:`~tidings.server.campaigns.capping.limits_for`, so the checks follow any change of the
defaults instead of repeating their numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from tidings.client_sdk import QuietHours
from tidings.client_sdk.quiet_hours import zone
from tidings.server.campaigns.capping import limits_for
from tidings.server.storage import Limit
from tidings.server.targeting.profiles import Profile, reclassify
from tidings.simulator.engine.personas import DevicePlan

__all__ = [
    "NEW_BASIC_WEEKLY_CAP",
    "Accuracy",
    "CountRule",
    "Life",
    "abandoned",
    "accuracy",
    "best_hour_at",
    "cap_full",
    "cart_audience",
    "count_violations",
    "greeting",
    "lift",
    "local_minutes",
    "marketing_limits",
    "never_bought",
    "over_cap",
    "segment_audience",
    "shown_in_quiet_hours",
]


def shown_in_quiet_hours(
    quiet: QuietHours | None, device_tz: str, shown_at: float, *, urgent_transactional: bool
) -> bool:
    """True when a banner was shown inside the device's quiet hours without a right to."""
    if quiet is None or urgent_transactional:
        return False
    return quiet.is_quiet(shown_at, device_tz)


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Targeting accuracy of one message or campaign."""

    precision: float
    recall: float
    false_positives: int
    false_negatives: int


def accuracy(expected: Set[str], actual: Set[str]) -> Accuracy:
    """Precision and recall of ``actual`` recipients against ``expected`` ones (1.0 if empty)."""
    hit = len(expected & actual)
    return Accuracy(
        precision=hit / len(actual) if actual else 1.0,
        recall=hit / len(expected) if expected else 1.0,
        false_positives=len(actual - expected),
        false_negatives=len(expected - actual),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CountRule:
    """A behaviour tag: at least ``at_least`` ``event`` events whose ``prop`` equals ``value``.

    The simulator's own reading of a tag rule; :meth:`to_json` is the same rule for the server.
    """

    name: str
    event: str
    prop: str
    value: str
    at_least: int
    window_s: int = 7 * 86_400

    def holds(self, events: Iterable[tuple[str, Mapping[str, object]]]) -> bool:
        """True when ``events`` (all inside the window) earn the tag."""
        n = sum(1 for name, props in events if name == self.event
                and props.get(self.prop) == self.value)  # fmt: skip
        return n >= self.at_least

    def to_json(self) -> dict[str, Any]:
        """The rule in the admin API's tag-rule form."""
        return {
            "name": self.name, "event": self.event,
            "where": [{"prop": self.prop, "op": "eq", "value": self.value}],
            "threshold": {"count": self.at_least}, "window_s": self.window_s,
        }  # fmt: skip


def segment_audience(plans: Iterable[DevicePlan], rule: CountRule, min_age: int) -> set[str]:
    """Users who hold ``rule``'s tag and are at least ``min_age``: ``tag:R and attr.age >= A``."""
    return {
        p.user for p in plans
        if rule.holds(p.events) and isinstance(age := p.attrs.get("age"), int) and age >= min_age
    }  # fmt: skip


def cart_audience(plans: Iterable[DevicePlan]) -> set[str]:
    """Users who added to their cart and did not buy (the abandoned-cart trigger's audience)."""
    return {p.user for p in plans if p.cart == "abandon"}


def greeting(plan: DevicePlan) -> str:
    """``Hi {{ user.first_name | default("there") }}`` as it must read on this device."""
    name = plan.attrs.get("first_name", "there")
    return f"Hi {name}"


NEW_BASIC_WEEKLY_CAP = 2
"""Marketing messages a week for a user who never bought: basic users get at most 2 a week
(SPEC §5). Every simulated user is new this week (first seen when the fleet connects), and the
``new`` stage has no cap of its own by default, so the basic tier's cap binds
(:func:`~tidings.server.campaigns.capping.marketing_cap`)."""


def never_bought(plans: Iterable[DevicePlan]) -> set[str]:
    """Users whose plan has no ``purchase`` event: ``basic`` tier for the whole run."""
    return {p.user for p in plans if all(name != "purchase" for name, _ in p.events)}


def count_violations(
    received: Iterable[tuple[str, str, str]], expected: Mapping[str, int]
) -> tuple[int, int]:
    """(messages over, messages short): each user's distinct messages against ``expected``.

    ``received`` holds (user, campaign, message id); a user missing from ``expected`` should
    have got nothing. The same message id twice is a duplicate (counted elsewhere).
    """
    got: dict[str, set[str]] = {}
    for user, _, message_id in received:
        got.setdefault(user, set()).add(message_id)
    over = sum(max(0, len(ids) - expected.get(user, 0)) for user, ids in got.items())
    short = sum(max(0, n - len(got.get(user, ()))) for user, n in expected.items())
    return over, short


# --- weeks: lifecycle, tiers and caps from what each device did -------------------------------


@dataclass(frozen=True, slots=True)
class Life:
    """One user's life as their device lived it (the device's own log, never the gateway's).

    ``seen``: every time the user was seen (connections and sessions), sorted; ``sessions``:
    (time, events tracked) of each session; ``purchases``: (time, amount); ``carts``: times
    something was added to the cart.
    """

    user: str
    seen: tuple[float, ...]
    sessions: tuple[tuple[float, int], ...] = ()
    purchases: tuple[tuple[float, float], ...] = ()
    carts: tuple[float, ...] = ()

    def profile_at(self, t: float) -> Profile:
        """The profile the gateway should hold at ``t``: lifecycle and tier from the life, by
        the gateway's own rules and thresholds (:func:`reclassify`)."""
        seen = [s for s in self.seen if s <= t]
        bought = [(at, amount) for at, amount in self.purchases if at <= t]
        first = seen[0] if seen else t
        profile = Profile(
            app="demo", user_id=self.user, first_seen=first, last_seen=seen[-1] if seen else t,
            purchase_count=len(bought), purchase_total=float(sum(a for _, a in bought)),
            last_purchase=bought[-1][0] if bought else None,
        )  # fmt: skip
        return reclassify(profile, t)


def marketing_limits(profile: Profile) -> tuple[Limit, ...]:
    """The marketing caps the gateway applies to ``profile`` (its own :func:`limits_for`)."""
    found = limits_for(profile, "marketing")
    return found if isinstance(found, tuple) else ()


def _within(limit: Limit, sends: Sequence[float], t: float) -> int:
    if limit.window_s is None:
        return sum(1 for s in sends if s <= t)
    return sum(1 for s in sends if t - limit.window_s < s <= t)


def over_cap(life: Life, sends: Sequence[float], t: float, slack: float) -> bool:
    """True when the marketing send stamped ``t`` broke a cap under every state the user was
    in from ``t - slack`` to ``t`` (the gateway reclassifies on its scheduler's round).

    The gateway counts a send at the instant it decided it; the message is stamped when its
    fan-out is written, up to ``slack`` later. So an earlier send counts only if even its
    decision, ``slack`` before its stamp, lies inside the window.
    """

    def least(limit: Limit) -> int:
        lo = -math.inf if limit.window_s is None else t - limit.window_s + slack
        return sum(1 for s in sends if lo < s <= t)

    return all(
        any(least(rule) > rule.limit for rule in marketing_limits(life.profile_at(at)))
        for at in (t - slack, t)
    )


def cap_full(life: Life, sends: Sequence[float], t: float, slack: float) -> bool:
    """True when a marketing send due at ``t`` could rightly be refused: the gateway decides
    within ``slack`` of it, and some cap of some state of the user then had no room (every send
    from the start of the cap's window before ``t`` to ``t + slack`` counted)."""

    def most(limit: Limit) -> int:  # the gateway decides somewhere in [t, t + slack]
        lo = -math.inf if limit.window_s is None else t - limit.window_s
        return sum(1 for s in sends if lo < s <= t + slack)

    return any(
        most(limit) >= limit.limit
        for at in (t - slack, t, t + slack)
        for limit in marketing_limits(life.profile_at(at))
    )


def best_hour_at(life: Life, tz: str, before: float, default_hour: int) -> int:
    """The local hour with the most events of the user before ``before`` (ties: the earliest;
    none: ``default_hour``), from the device's sessions: what a ``best_time`` send must use."""
    hours = [0] * 24
    for at, events in life.sessions:
        if at < before:
            hours[dt.datetime.fromtimestamp(at, zone(tz)).hour] += events
    top = max(hours)
    return hours.index(top) if top > 0 else default_hour


def local_minutes(at: float, tz: str) -> int:
    """Minute of the day on the wall clock of ``tz`` at unix time ``at``."""
    t = dt.datetime.fromtimestamp(at, zone(tz))
    return t.hour * 60 + t.minute


def abandoned(carts: Sequence[float], purchases: Sequence[float], wait: float) -> list[float]:
    """Carts not followed by a purchase within ``wait`` seconds (a cart reminder is due)."""
    return [c for c in carts if not any(c <= p <= c + wait for p in purchases)]


def lift(
    treated: Set[str], control: Set[str], bought: Mapping[str, Sequence[float]],
    start: float, window: float,
) -> tuple[float, float]:  # fmt: skip
    """(conversion of ``treated``, conversion of ``control``): the share of each group that
    bought within ``window`` seconds after ``start``."""

    def rate(group: Set[str]) -> float:
        if not group:
            return 0.0
        hit = sum(1 for u in group if any(start <= p <= start + window for p in bought.get(u, ())))
        return hit / len(group)

    return rate(treated), rate(control)
