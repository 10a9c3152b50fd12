"""How the fleet's users spread over lifecycle stages (or value tiers), one bar per simulated day.

The app samples the distribution on its timer and keeps one entry per simulated day (the
latest sample of that day); this widget only draws that history, never per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text
from textual.widgets import Static

__all__ = ["DistributionChart", "distribution_text"]

BAR_WIDTH = 40
"""Cells of a full bar (100 % of the users)."""

_COLOURS = ("green", "cyan", "yellow", "red", "magenta", "blue")


def distribution_text(
    days: Sequence[tuple[str, Mapping[str, int]]], names: Sequence[str], width: int = BAR_WIDTH
) -> Text:
    """A legend, then one stacked bar per day: ``Jan 03  ████▒▒▒  12 · 30 · 4 · 1``.

    Args:
        days: ``(label, counts by name)``, oldest first.
        names: The stages (or tiers), in the order they are stacked.
        width: Cells of a bar that holds every user.
    """
    out = Text()
    for n, name in enumerate(names):
        out.append("■ ", style=_COLOURS[n % len(_COLOURS)])
        out.append(f"{name}  ")
    out.rstrip()
    if not days:
        out.append("\n(no sample yet)", style="dim")
        return out
    for label, counts in days:
        total = sum(max(0, counts.get(name, 0)) for name in names)
        out.append(f"\n{label:<7}", style="dim")
        used = 0
        for n, name in enumerate(names):
            share = max(0, counts.get(name, 0))
            # Cumulative rounding: the segments always add up to the full width.
            end = round(width * (used + share) / total) if total else 0
            start = round(width * used / total) if total else 0
            out.append("█" * (end - start), style=_COLOURS[n % len(_COLOURS)])
            used += share
        out.append(" " * (width - (round(width * used / total) if total else 0)))
        out.append("  " + " · ".join(f"{counts.get(name, 0):,}" for name in names))
    return out


class DistributionChart(Static):
    """The stacked bars of :func:`distribution_text` for one breakdown (stages or tiers)."""

    def __init__(self, names: Sequence[str], *, id: str) -> None:
        super().__init__(distribution_text([], names), id=id)
        self.names = tuple(names)

    def show(self, days: Sequence[tuple[str, Mapping[str, int]]]) -> None:
        """Draw the latest of ``days`` (oldest first) that fit, under the legend."""
        rows = max(1, self.size.height - 1) if self.size.height else len(days)
        shown = days[-rows:]
        counts = max((len(" · ".join(f"{c.get(n, 0):,}" for n in self.names)) for _, c in shown),
                     default=0)  # fmt: skip
        width = BAR_WIDTH
        if self.size.width:  # the label (7 cells), the bar, two spaces, the counts
            width = max(10, min(BAR_WIDTH, self.size.width - 9 - counts))
        self.update(distribution_text(shown, self.names, width))
