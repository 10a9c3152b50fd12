"""Ground truth: what should have happened, from the simulator's own knowledge of each device.

Pure functions: the fleet records what each device showed and when; these decide whether a rule
was broken, and how well an actual audience matches the expected one. Expected audiences and
renderings come from the devices' plans (:func:`tidings.simulator.engine.personas.plan`), never
from the server: the simulator computes who *should* get a campaign from what it made each
device do, and compares that with who *did*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from tidings.client_sdk import QuietHours
from tidings.simulator.engine.personas import DevicePlan

__all__ = [
    "NEW_BASIC_WEEKLY_CAP",
    "Accuracy",
    "CountRule",
    "accuracy",
    "cart_audience",
    "count_violations",
    "greeting",
    "never_bought",
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
(SPEC §5); being new this week (every simulated user is first seen when the fleet connects)
allows 3, and the stricter cap wins."""


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
