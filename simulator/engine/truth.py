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
    "Accuracy",
    "CountRule",
    "accuracy",
    "cap_violations",
    "cart_audience",
    "greeting",
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


def cap_violations(received: Iterable[tuple[str, str, str]], per_user_limit: int) -> int:
    """Messages beyond a campaign's per-user limit, from (user, campaign, message id) receipts.

    The same message id twice is a duplicate (counted elsewhere), not a second message.
    """
    seen: dict[tuple[str, str], set[str]] = {}
    for user, campaign, message_id in received:
        seen.setdefault((user, campaign), set()).add(message_id)
    return sum(max(0, len(ids) - per_user_limit) for ids in seen.values())
