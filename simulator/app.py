"""``tidings sim``: the Textual TUI over the simulator engine.

The UI never receives one message per event: it samples the engine on a timer from a worker
thread and renders the counters, a latency sparkline, the device list and a device's inbox.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Input, Sparkline, Static
from tidings.simulator.engine.sim import SimEngine, Snapshot

__all__ = ["SimApp", "make_app"]

SAMPLE_S = 0.5


class SimApp(App[None]):
    """Dashboard, composer, device browser and device view of a running simulation."""

    CSS_PATH = "sim.tcss"
    TITLE = "Tidings simulator"
    AUTO_FOCUS = "#devices"
    BINDINGS: ClassVar[list[BindingType]] = [
        ("q", "quit", "Quit"),
        ("escape", "devices", "Back to devices"),
        ("c", "compose", "Compose"),
        ("d", "devices", "Devices"),
    ]

    def __init__(self, engine: SimEngine) -> None:
        super().__init__()
        self.engine = engine
        self.history: list[float] = []
        self.snapshot = Snapshot(0, 0, 0)
        self._last_received = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="tiles"):
            yield Static("connecting…", id="connected", classes="tile")
            yield Static("deliveries 0", id="deliveries", classes="tile")
            yield Static("latency –", id="latency", classes="tile")
        yield Sparkline(self.history, id="latency-plot")
        with Horizontal(id="composer"):
            yield Input(placeholder="title", id="title")
            yield Input(placeholder="body", id="body")
            yield Button("Send to all", id="send", variant="primary")
        with Horizontal(id="bottom"):
            yield DataTable(id="devices", cursor_type="row")
            yield Static("select a device", id="device-view")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.add_columns("device", "user")
        for i in range(min(self.engine.devices, 5000)):
            table.add_row(f"d{i}", f"u{i}", key=str(i))
        self.start_engine()

    @work(thread=True, exclusive=True, group="start")
    def start_engine(self) -> None:
        def progress(n: int, total: int) -> None:
            self.call_from_thread(self._show_connecting, n, total)

        seconds = self.engine.start(progress)
        self.call_from_thread(self._started, seconds)

    def _show_connecting(self, n: int, total: int) -> None:
        self.query_one("#connected", Static).update(f"connecting {n}/{total}")

    def _started(self, seconds: float) -> None:
        self.notify(f"{self.engine.devices} devices connected in {seconds:.1f} s")
        self.set_interval(SAMPLE_S, self.sample)

    @work(thread=True, exclusive=True, group="sample")
    def sample(self) -> None:
        snap = self.engine.sample()
        self.call_from_thread(self._render, snap)

    def _render(self, snap: Snapshot) -> None:
        self.snapshot = snap
        rate = (snap.received - self._last_received) / SAMPLE_S
        self._last_received = snap.received
        self.query_one("#connected", Static).update(
            f"devices {snap.connected}/{self.engine.devices}"
        )
        self.query_one("#deliveries", Static).update(f"deliveries {snap.received} ({rate:.0f}/s)")
        if snap.latency_ms:
            lat = snap.latency_ms
            self.query_one("#latency", Static).update(
                f"p50 {lat['p50']:.0f} · p95 {lat['p95']:.0f} · p99 {lat['p99']:.0f} ms"
            )
            self.history = [*self.history, lat["p99"]][-120:]
            self.query_one("#latency-plot", Sparkline).data = self.history

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "send":
            self._send_composed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._send_composed()

    def _send_composed(self) -> None:
        title = self.query_one("#title", Input).value or "Hello"
        body = self.query_one("#body", Input).value or "from the simulator"
        self.send(title, body)

    @work(thread=True, group="send")
    def send(self, title: str, body: str) -> None:
        try:
            result = self.engine.send(title=title, body=body)
        except Exception as exc:  # the admin API's error text is the useful part
            self.call_from_thread(self.notify, f"send failed: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"sent {result['message_id'][:8]} to "
                                           f"{result['devices']} devices")  # fmt: skip

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.show_device(int(str(event.row_key.value)))

    @work(thread=True, exclusive=True, group="device")
    def show_device(self, index: int) -> None:
        items = self.engine.inbox(index)
        self.call_from_thread(self._render_device, index, items)

    def _render_device(self, index: int, items: list[dict[str, Any]]) -> None:
        lines = [f"[b]d{index}[/b] (user u{index}) — inbox, newest first", ""]
        for item in items:
            mark = " " if item["read"] else "●"
            lines.append(f"{mark} [b]{item['title']}[/b]  {item['body']}")
        if not items:
            lines.append("(empty)")
        self.query_one("#device-view", Static).update("\n".join(lines))

    def action_compose(self) -> None:
        self.query_one("#title", Input).focus()

    def action_devices(self) -> None:
        self.query_one("#devices", DataTable).focus()

    def on_unmount(self) -> None:
        self.engine.stop()


def make_app(devices: int = 1000, workers: int = 2) -> SimApp:
    """The simulator app over a fresh engine (used by ``tidings sim`` and the tests)."""
    return SimApp(SimEngine(devices=devices, workers=workers))
