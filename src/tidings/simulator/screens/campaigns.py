"""Campaigns with their funnels, refreshed on the sample timer; start, pause or cancel one.

The highlighted campaign is also the one whose decision log the device view shows.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from tidings.server.campaigns.model import TRANSITIONS, CampaignStatus
from tidings.simulator.engine.sim import AdminError, Snapshot
from tidings.simulator.screens.base import SimScreen
from tidings.simulator.widgets import ClockBar, FunnelView, funnel_days_text, quiet_note

__all__ = ["DAYS_SHOWN", "MAX_LISTED", "STATS_EVERY_S", "CampaignsScreen", "cannot"]

MAX_LISTED = 50
"""Campaigns listed (newest first)."""

DAYS_SHOWN = 5
"""Simulated days shown under the funnel (the latest; the gateway counts every day)."""

STATS_EVERY_S = 2.0
"""How stale a listed campaign's funnel may get; the highlighted one is fetched every sample,
so a long list does not cost one stats request per campaign per sample."""

_COLUMNS = ("campaign", "name", "status", "targeted", "sent", "delivered", "displayed",
            "clicked", "CTR")  # fmt: skip
_STATUS_STYLE = {"running": "bold green", "paused": "yellow", "cancelled": "red",
                 "completed": "dim", "draft": "italic"}  # fmt: skip
_ACTION_DONE = {"start": "started", "pause": "paused", "cancel": "cancelled"}

Listing = list[tuple[dict[str, Any], dict[str, Any] | None]]

_TARGET = {"start": CampaignStatus.RUNNING, "pause": CampaignStatus.PAUSED,
           "cancel": CampaignStatus.CANCELLED}  # fmt: skip


def cannot(status: str | None, action: str) -> str | None:
    """Why ``action`` cannot apply to a campaign in ``status`` (None: it can, or the status is
    unknown here and the gateway decides), by the same transitions the gateway allows."""
    try:
        current = CampaignStatus(str(status))
    except ValueError:
        return None
    if current in TRANSITIONS[_TARGET[action]]:
        return None
    if current in (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED):
        return ("it is over and cannot run again (a one-off campaign sends to its audience"
                " once); compose a new campaign (F4) to send again")  # fmt: skip
    if current is _TARGET[action]:
        return f"it is {current} already"
    return "it has not started (s starts it)"


def _row(campaign: dict[str, Any], stats: dict[str, Any] | None) -> list[Any]:
    total = (stats or {}).get("total") or {}
    status = str(campaign.get("status", "?"))

    def n(key: str) -> str:
        value = total.get(key)
        return f"{value:,}" if isinstance(value, int) else "–"

    ctr = total.get("ctr")
    return [
        str(campaign.get("id", "?")),
        str(campaign.get("name", "")),
        Text(status, style=_STATUS_STYLE.get(status, "")),
        n("targeted"),
        n("sent") if total else f"{campaign.get('sent_total', 0):,}",
        n("delivered"),
        n("displayed"),
        n("clicked"),
        f"{ctr * 100:.1f}%" if isinstance(ctr, int | float) else "–",
    ]


class CampaignsScreen(SimScreen):
    """Every campaign of the demo app with its funnel."""

    AUTO_FOCUS = "#campaigns"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "act('start')", "Start"),
        Binding("p", "act('pause')", "Pause"),
        Binding("x", "act('cancel')", "Cancel"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.listing: Listing = []
        self._stats: dict[str, tuple[float, dict[str, Any]]] = {}  # id -> (fetched at, stats)
        self.notes: dict[str, str] = {}
        """Under a campaign's funnel: why its displays lag (quiet hours), by campaign id."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield ClockBar(id="clock")
        yield Static("loading campaigns…", id="campaigns-message")
        yield DataTable(id="campaigns", cursor_type="row")
        yield FunnelView("select a campaign", id="funnel")
        days = Static(id="funnel-days")
        days.border_title = "By simulated day"
        yield days
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#campaigns", DataTable)
        for name in _COLUMNS:
            table.add_column(name, key=name)
        self.watch(self.app, "snapshot", self._sampled, init=False)
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    def _sampled(self, _snap: Snapshot) -> None:
        if self.is_current:
            self.action_reload()

    @property
    def highlighted(self) -> str | None:
        """The id of the campaign under the cursor."""
        table = self.query_one("#campaigns", DataTable)
        if not table.row_count:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return None if key.value is None else str(key.value)

    def action_reload(self) -> None:
        """Fetch the campaign list, the highlighted campaign's stats and any stale others."""
        self.load(self.highlighted)

    @work(thread=True, exclusive=True, group="campaigns")
    def load(self, highlighted: str | None) -> None:
        try:
            campaigns = self.engine.campaigns()[-MAX_LISTED:][::-1]
        except AdminError as exc:
            self.deliver(self._failed, exc)
            return
        now = time.monotonic()
        listing: Listing = []
        for c in campaigns:
            cid = str(c.get("id"))
            fetched, stats = self._stats.get(cid, (-STATS_EVERY_S, None))
            if cid == highlighted or now - fetched >= STATS_EVERY_S:
                try:
                    stats = self.engine.campaign_stats(cid)
                    self._stats[cid] = (now, stats)
                except AdminError:
                    stats = None
            listing.append((c, stats))
        self._note_quiet_hours(listing)
        self.deliver(self._show, listing)

    def _note_quiet_hours(self, listing: Listing) -> None:
        """Note under each funnel whose displays lag while devices sleep (worker thread; the
        devices' quiet hours are checked once, and only when a funnel lags)."""
        quiet: int | None = None
        for c, stats in listing:
            total = (stats or {}).get("total")
            if not isinstance(total, dict) or stats is None:
                continue
            if quiet is None and total.get("delivered", 0) > total.get("displayed", 0):
                try:
                    quiet = self.engine.quiet_now()
                except AdminError:
                    return
            self.notes[str(c.get("id"))] = quiet_note(stats, quiet or 0, self.engine.devices)

    def _failed(self, exc: AdminError) -> None:
        message = self.query_one("#campaigns-message", Static)
        if exc.missing_endpoint:
            text = (
                f"The campaigns API is not available on this gateway yet ({exc.reason}). "
                "Direct messages still work from the composer (F4)."
            )
        else:
            text = f"Could not list campaigns: {exc.reason}"
        message.update(Text(text))
        message.add_class("-error")
        self.query_one("#funnel", FunnelView).show_message("no campaigns", error=True)

    def _show(self, listing: Listing) -> None:
        self.listing = listing
        message = self.query_one("#campaigns-message", Static)
        message.remove_class("-error")
        running = sum(1 for c, _ in listing if c.get("status") == "running")
        message.update(
            f"{len(listing)} campaign{'' if len(listing) == 1 else 's'}, {running} running"
            " · s start · p pause · x cancel"
            if listing
            else "No campaigns yet: compose one with F4."
        )
        table = self.query_one("#campaigns", DataTable)
        keep = self.highlighted
        ids = [str(c.get("id")) for c, _ in listing]
        if ids == [str(k.value) for k in table.rows]:
            for (c, stats), cid in zip(listing, ids, strict=True):
                for column, value in zip(_COLUMNS, _row(c, stats), strict=True):
                    table.update_cell(cid, column, value)
        else:
            table.clear()
            for (c, stats), cid in zip(listing, ids, strict=True):
                table.add_row(*_row(c, stats), key=cid)
            if keep in ids:
                table.move_cursor(row=ids.index(keep))
        self._show_funnel()

    def _show_funnel(self) -> None:
        funnel = self.query_one("#funnel", FunnelView)
        cid = self.highlighted
        days = self.query_one("#funnel-days", Static)
        days.border_title = f"By simulated day · {cid}" if cid else "By simulated day"
        stats = next((s for c, s in self.listing if str(c.get("id")) == cid), None)
        days.update(funnel_days_text((stats or {}).get("by_day", [])[-DAYS_SHOWN:]))
        if cid is None:
            funnel.show_message("select a campaign")
            return
        if stats is None:
            funnel.show_message(f"no stats for {cid} yet", error=True)
        else:
            funnel.show(cid, stats, self.notes.get(cid, ""))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.sim.selected_campaign = str(event.row_key.value)
        self._show_funnel()

    def action_act(self, action: str) -> None:
        """Start, pause or cancel the highlighted campaign."""
        cid = self.highlighted
        if cid is None:
            self.notify("no campaign selected", severity="warning")
            return
        status = next((str(c.get("status")) for c, _ in self.listing if str(c.get("id")) == cid),
                      None)  # fmt: skip
        why = cannot(status, action)
        if why is not None:
            self.notify(f"{cid} is {status}: {why}", severity="warning", timeout=8)
            return
        self.act(cid, action)

    @work(thread=True, group="campaign-action")
    def act(self, campaign: str, action: str) -> None:
        try:
            self.engine.campaign_action(campaign, action)
        except AdminError as exc:
            self.deliver(self.notify, f"{action} {campaign}: {exc.reason}", severity="error")
            return
        self.deliver(self.notify, f"{campaign} {_ACTION_DONE[action]}")
        self.deliver(self.action_reload)
