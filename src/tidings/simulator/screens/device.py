"""The device view: one device's inbox as its SDK holds it, its persona and quiet hours, and
the decision log of the selected campaign for its user.

The inbox is drawn by the SDK's own :class:`~tidings.client_sdk.ui.InboxList`, the widget an app
embedding the SDK uses; the device's client lives in a worker process, so the list is shown
read-only from the items the engine reports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Static

from tidings.client_sdk import InboxItem
from tidings.client_sdk.ui import InboxList
from tidings.simulator.engine.sim import AdminError, DeviceInfo, Snapshot
from tidings.simulator.screens.base import SimScreen
from tidings.simulator.widgets import ClockBar
from tidings.words import decision_words

__all__ = ["DeviceScreen", "decisions_text", "inbox_item", "info_text"]

NO_CAMPAIGN = "(no campaign selected)"


def _duration(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def info_text(info: DeviceInfo) -> Text:
    """Who the device is, its clock and its quiet-hours state, one fact per line."""
    out = Text()
    for label, value in (
        ("device", info.device),
        ("user", info.user),
        ("persona", info.persona),
        ("interests", ", ".join(info.interests) or "–"),
        ("time zone", info.tz),
        ("local time", info.local_time),
    ):
        out.append(f"{label:<12}", style="dim")
        out.append(f"{value}\n")
    out.append(f"{'quiet hours':<12}", style="dim")
    if info.quiet is None:
        out.append("none")
        return out
    out.append(f"{info.quiet[0]}–{info.quiet[1]}  ")
    if info.quiet_now:
        out.append("QUIET NOW", style="bold")
        out.append(" (banners held)")
        verb = "ends"
    else:
        out.append("awake", style="bold")
        verb = "starts"
    if info.next_change_in is not None:
        out.append(f"\n{'':<12}{verb} in {_duration(info.next_change_in)}", style="dim")
    return out


def inbox_item(row: Mapping[str, Any]) -> InboxItem:
    """An inbox row as the engine reports it (``SimEngine.inbox``), as the SDK's item."""
    return InboxItem(
        id=str(row.get("id", "")),
        kind="inbox",
        title=str(row.get("title", "")),
        body=str(row.get("body", "")),
        category=str(row.get("category", "marketing")),
        read=bool(row.get("read", False)),
        held=bool(row.get("held", False)),
    )


def decisions_text(decisions: Sequence[Mapping[str, Any]], tz: str = "UTC") -> Text:
    """The decision log as ``tidings why`` words it, newest first, in the device's local time
    (``tz``): each decision, then what happened to its message after."""
    if not decisions:
        return Text("(no decisions for this user yet)", style="dim")
    try:
        zone: tzinfo = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    out = Text()
    for d in decisions:
        head, after = decision_words(d)
        out.append(f"{_clock(d['at'], zone)} ", style="dim")
        out.append(head + "\n", style="bold" if d.get("reason") == "sent" else "")
        for at, what in after:
            stamp = "" if at is None else f"{_clock(at, zone)} "
            out.append(f"  {stamp}{what}\n", style="dim")
    out.rstrip()
    return out


def _clock(ts: float, zone: tzinfo) -> str:
    """A line's time, shortly: ``Dec 06 23:00:05`` in ``zone``."""
    return datetime.fromtimestamp(ts, zone).strftime("%b %d %H:%M:%S")


class DeviceScreen(SimScreen):
    """Everything about one simulated device; refreshed on every sample while shown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def compose(self) -> ComposeResult:
        yield Header()
        yield ClockBar(id="clock")
        with Horizontal(id="device-top"):
            info = Static(id="device-info")
            info.border_title = f"Device d{self.index}"
            yield info
            decisions = Static(NO_CAMPAIGN, id="decisions")
            decisions.border_title = "Decision log"
            yield decisions
        yield InboxList(id="inbox")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"device d{self.index}"
        self.watch(self.app, "snapshot", self._sampled, init=False)
        self.watch(self.app, "selected_campaign", self._campaign_changed, init=False)
        self.action_reload()

    def _sampled(self, _snap: Snapshot) -> None:
        if self.is_current:
            self.action_reload()

    def _campaign_changed(self, _campaign: str | None) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        """Ask the engine again for the inbox, the quiet-hours state and the decisions."""
        self.load(self.sim.selected_campaign)

    @work(thread=True, exclusive=True, group="device")
    def load(self, campaign: str | None) -> None:
        info = self.engine.device_info(self.index)
        items = self.engine.inbox(self.index) if self.sim.running else []
        decisions: list[dict[str, Any]] | str
        if campaign is None:
            decisions = NO_CAMPAIGN
        else:
            try:
                decisions = self.engine.decisions(campaign, info.user)
            except AdminError as exc:
                decisions = (
                    f"decision log not available on this gateway yet ({exc.reason})"
                    if exc.missing_endpoint
                    else f"could not load the decision log: {exc.reason}"
                )
        self.deliver(self._show, info, items, campaign, decisions)

    def _show(
        self,
        info: DeviceInfo,
        items: list[dict[str, Any]],
        campaign: str | None,
        decisions: list[dict[str, Any]] | str,
    ) -> None:
        panel = self.query_one("#device-info", Static)
        panel.update(info_text(info))
        panel.set_class(info.quiet_now, "-quiet")
        panel.set_class(not info.quiet_now, "-awake")
        if self.sim.running:
            self.query_one("#inbox", InboxList).show_items([inbox_item(i) for i in items])
        log = self.query_one("#decisions", Static)
        log.border_title = f"Decision log · {campaign}" if campaign else "Decision log"
        log.set_class(isinstance(decisions, str) and campaign is not None, "-error")
        log.update(decisions_text(decisions, info.tz) if isinstance(decisions, list)
                   else Text(decisions))  # fmt: skip
