"""Ground truth: what should have happened, from the simulator's own knowledge of each device.

Pure functions: the fleet records what each device showed and when; these decide whether a rule
was broken, and how well an actual audience matches the expected one.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from tidings.client_sdk import QuietHours

__all__ = ["Accuracy", "accuracy", "shown_in_quiet_hours"]


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
