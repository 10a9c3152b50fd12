"""A campaign's funnel: one bar per stage, then the same counters per variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from tidings.server.campaigns.stats import DAY_STAGES

__all__ = ["STAGES", "FunnelView", "funnel_days_text", "funnel_text", "quiet_note"]

STAGES = ("targeted", "sent", "delivered", "displayed", "clicked", "dismissed", "converted")
BAR_WIDTH = 40


def _bar(n: int, top: int) -> str:
    if top <= 0 or n <= 0:
        return ""
    eighths = round(BAR_WIDTH * 8 * min(n, top) / top)
    full, part = divmod(eighths, 8)
    return "█" * full + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[part]


def _int(funnel: Mapping[str, Any], key: str) -> int:
    value = funnel.get(key, 0)
    return int(value) if isinstance(value, int | float) else 0


def funnel_text(stats: Mapping[str, Any], bar_style: Style | str = "") -> Text:
    """The funnel of ``{"total": {...}, "variants": {name: {...}}}`` as bars and a table."""
    total = stats.get("total") or {}
    top = max([_int(total, s) for s in STAGES] + [1])
    out = Text()
    for stage in STAGES:
        n = _int(total, stage)
        out.append(f"{stage:<10}{n:>8}  ")
        out.append(_bar(n, top), style=bar_style)
        out.append("\n")
    ctr = total.get("ctr")
    if isinstance(ctr, int | float):
        out.append(f"{'CTR':<10}{ctr * 100:>7.1f}%\n", style="bold")
    variants = stats.get("variants") or {}
    if len(variants) > 1:
        out.append("\nvariant   " + "".join(f"{s[:9]:>10}" for s in STAGES) + "       CTR\n",
                   style="bold")  # fmt: skip
        for name, funnel in sorted(variants.items()):
            row = "".join(f"{_int(funnel, s):>10}" for s in STAGES)
            v_ctr = funnel.get("ctr")
            tail = f"{v_ctr * 100:>9.1f}%" if isinstance(v_ctr, int | float) else f"{'–':>10}"
            out.append(f"{name[:10]:<10}{row}{tail}\n")
    for c in stats.get("comparisons") or ():
        lift, p = c.get("lift"), c.get("p_value")
        if isinstance(lift, int | float) and isinstance(p, int | float):
            out.append(f"{c.get('variant', '?')} vs baseline: lift {lift * 100:+.1f}%, "
                       f"p = {p:.3f}\n")  # fmt: skip
    if stats.get("comparisons") is not None or stats.get("winner") is not None:
        winner = stats.get("winner")
        out.append(f"winner: {winner}" if winner else "winner: none yet (not significant)",
                   style="bold" if winner else "dim")  # fmt: skip
    out.rstrip()
    return out


def quiet_note(stats: Mapping[str, Any], quiet: int, devices: int) -> str:
    """Why displays lag deliveries, when quiet hours are the likely reason: ``quiet`` of
    ``devices`` devices are in their quiet hours now. Empty when nothing waits or none is."""
    total = stats.get("total") or {}
    waiting = _int(total, "delivered") - _int(total, "displayed")
    if waiting <= 0 or quiet <= 0:
        return ""
    return (f"{waiting:,} delivered, not displayed yet: {quiet:,} of {devices:,} devices are in"
            " their quiet hours now, and a banner waits on the device until they end")  # fmt: skip


def funnel_days_text(days: Sequence[Mapping[str, Any]]) -> Text:
    """What each simulated (UTC) day added to a campaign's funnel, oldest first, as the
    gateway counts it from the stored sends, acks and receipts (the stats' ``by_day``): a
    stage counts on the day it first happened, whatever screen was open then."""
    out = Text("day    " + "".join(f"{s:>11}" for s in DAY_STAGES) + "        CTR", style="bold")
    if not days:
        out.append("\n(nothing sent yet)", style="dim")
        return out
    for day in days:
        added = {s: _int(day, s) for s in DAY_STAGES}
        out.append(f"\n{_label(str(day.get('day', '')))}"
                   + "".join(f"{added[s]:>11,}" for s in DAY_STAGES))  # fmt: skip
        ctr = added["clicked"] / added["displayed"] if added["displayed"] else None
        out.append(f"{ctr * 100:>10.1f}%" if ctr is not None else f"{'–':>11}")
    return out


def _label(iso_day: str) -> str:
    """``2026-12-06`` as ``Dec 06`` (padded to the column)."""
    try:
        return f"{date.fromisoformat(iso_day):%b %d}".ljust(7)
    except ValueError:
        return iso_day[:7].ljust(7)


class FunnelView(Static):
    """The funnel of the highlighted campaign; the bars take the ``funnel--bar`` style."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"funnel--bar"}

    def show(self, campaign: str, stats: Mapping[str, Any], note: str = "") -> None:
        """Render the funnel of ``campaign``, with ``note`` under it (why a stage lags)."""
        self.border_title = f"Funnel · {campaign}"
        self.remove_class("-error")
        text = funnel_text(stats, self.get_component_rich_style("funnel--bar"))
        if note:
            text.append(f"\n{note}", style="italic")
        self.update(text)

    def show_message(self, message: str, *, error: bool = False) -> None:
        """Show a line instead of a funnel (nothing selected, or the stats failed)."""
        self.border_title = "Funnel"
        self.set_class(error, "-error")
        self.update(message)
