"""Node metrics: plain counters and two latency histograms (fan-out, hello), rendered as
Prometheus text."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["HELLO_BUCKETS_S", "LATENCY_BUCKETS_S", "Histogram", "Metrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the fan-out latency histogram, in seconds."""

HELLO_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
"""Upper bounds of the hello histogram (a connection opened → its welcome written), seconds."""


@dataclass(slots=True)
class Histogram:
    """A Prometheus histogram: counts per upper bound, their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bound, and one past the last
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def render(self, name: str, help_: str) -> list[str]:
        lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            cumulative += n
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total}")
        lines.append(f"{name}_count {self.count}")
        return lines


@dataclass(slots=True)
class Metrics:
    """Everything /metrics reports; updated in place on the hot path (cheap increments)."""

    frames_in: int = 0
    frames_out: int = 0
    deliveries: int = 0
    events: int = 0
    slow_consumers: int = 0
    rate_limited: int = 0
    protocol_errors: int = 0
    auth_failures: int = 0
    sends: int = 0
    write_overflows: int = 0  # connections aborted: unsent bytes would pass the send queue
    write_buffer_peak: int = 0  # most unsent bytes any connection held after a write
    heartbeat_timeouts: int = 0
    hello_timeouts: int = 0
    oversized_deliveries: int = 0  # deliveries skipped: their frame is over max_frame_bytes
    store_failures: int = 0  # connections closed 4104 because the store failed
    store_replays: int = 0  # sessions replayed because the store held what no publish brought
    connections: Counter[str] = field(default_factory=Counter)
    fanout: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    """Each send's fan-out: accepted → the last device write."""
    hello: Histogram = field(default_factory=lambda: Histogram(HELLO_BUCKETS_S))
    """Each session's opening, as the gateway sees it: the connection handed to it by the
    kernel's accept queue → its ``welcome`` written (upgrade, token, store, route). A device
    counts the time before too (its connect, the accept queue, its own process's delays)."""

    def observe_fanout(self, seconds: float) -> None:
        """Record one fan-out's duration (send accepted → last device write)."""
        self.fanout.observe(seconds)

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []

        def counter(name: str, value: int, help_: str) -> None:
            lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"))

        lines += [
            "# HELP tidings_connections Devices connected now.",
            "# TYPE tidings_connections gauge",
        ]
        for app, n in sorted(self.connections.items()):
            lines.append(f'tidings_connections{{app="{app}"}} {n}')
        counter("tidings_frames_in_total", self.frames_in, "Frames received from devices.")
        counter("tidings_frames_out_total", self.frames_out, "Frames written to devices.")
        counter("tidings_deliveries_total", self.deliveries, "Message deliveries written.")
        counter("tidings_events_total", self.events, "Behaviour events received.")
        counter("tidings_sends_total", self.sends, "Messages accepted for sending.")
        counter("tidings_slow_consumers_total", self.slow_consumers, "Connections dropped as slow.")
        counter("tidings_rate_limited_total", self.rate_limited, "Connections over the rate limit.")
        counter("tidings_protocol_errors_total", self.protocol_errors, "Bad frames received.")
        counter("tidings_auth_failures_total", self.auth_failures, "Refused device tokens.")
        counter(
            "tidings_write_overflows_total",
            self.write_overflows,
            "Connections aborted because their unsent bytes would pass the send queue.",
        )
        lines += [
            "# HELP tidings_write_buffer_peak_bytes Most unsent bytes one connection has held.",
            "# TYPE tidings_write_buffer_peak_bytes gauge",
            f"tidings_write_buffer_peak_bytes {self.write_buffer_peak}",
        ]
        counter(
            "tidings_heartbeat_timeouts_total",
            self.heartbeat_timeouts,
            "Connections closed because a WebSocket ping went unanswered.",
        )
        counter(
            "tidings_hello_timeouts_total",
            self.hello_timeouts,
            "Connections closed because no hello came in time.",
        )
        counter(
            "tidings_oversized_deliveries_total",
            self.oversized_deliveries,
            "Deliveries skipped because their frame is over max_frame_bytes.",
        )
        counter(
            "tidings_store_failures_total",
            self.store_failures,
            "Connections closed with 4104 because the store failed.",
        )
        counter(
            "tidings_store_replays_total",
            self.store_replays,
            "Sessions replayed from the store because a delivery's publish never arrived.",
        )
        lines += self.fanout.render("tidings_fanout_latency_seconds", "Fan-out duration per send.")
        lines += self.hello.render("tidings_hello_seconds",
                                   "A connection accepted to its welcome written.")  # fmt: skip
        return "\n".join(lines) + "\n"
