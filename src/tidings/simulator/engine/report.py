"""Load-test results: percentiles, the table, JSON and a latency plot (SVG, no dependencies)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SATURATED_CPU_PCT",
    "SATURATED_LAG_MS",
    "LoadReport",
    "percentiles",
    "saturated_workers",
    "starved_of_cpu",
    "write_svg",
]


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max (nearest rank); NaN for no samples."""
    if not samples:
        return {k: math.nan for k in ("p50", "p95", "p99", "max")}
    data = sorted(samples)

    def rank(p: float) -> float:
        return data[min(len(data) - 1, max(0, math.ceil(p / 100 * len(data)) - 1))]

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": data[-1]}


@dataclass(slots=True)
class LoadReport:
    """Everything a load test measured."""

    devices: int
    scenario: str
    connect_s: float
    latencies_ms: list[float]
    delivery_ratio: float
    precision: float
    recall: float
    violations: dict[str, int]
    gateway_cpu_s: float
    gateway_rss_mib: float
    baseline_latencies_ms: list[float] | None = None
    handled_latencies_ms: list[float] | None = None
    """Sent to the moment the device's SDK was done with it (``latencies_ms`` is the wire:
    sent to the frame read off the device's socket). None where not measured."""
    fleet_workers: list[dict[str, Any]] = field(default_factory=list)
    """Each worker's own load during the run: ``cpu_pct``, ``loop_lag_ms`` p50/p99, devices,
    ``rss_mib``."""
    device_kind: str = "sdk"
    connect: dict[str, Any] = field(default_factory=dict)
    """The connect phase (:meth:`~tidings.simulator.engine.fleet.Fleet.connect_report`): per
    worker rate and hello p99, and every device's hello percentiles."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def saturated(self) -> list[int]:
        """The workers (1-based) that were the bottleneck: their figures bound the run's."""
        return saturated_workers(self.fleet_workers)

    @property
    def starved(self) -> bool:
        """Every saturated worker spent much of the run waiting for a core that other
        processes of this machine held: more workers here would not help."""
        return starved_of_cpu(self.fleet_workers)

    @property
    def lost(self) -> bool:
        return self.delivery_ratio < 1.0

    def to_json(self) -> dict[str, Any]:
        lat = percentiles(self.latencies_ms)
        base = (
            None if self.baseline_latencies_ms is None else percentiles(self.baseline_latencies_ms)
        )
        handled = (
            None if self.handled_latencies_ms is None else percentiles(self.handled_latencies_ms)
        )
        return {
            "devices": self.devices,
            "scenario": self.scenario,
            "connect_s": round(self.connect_s, 3),
            "connect_rate_per_s": round(self.devices / self.connect_s, 1)
            if self.connect_s
            else None,
            "connect": self.connect,
            # The headline (and its old flat keys) is the wire latency.
            "latency_ms": lat | {"wire": lat, "handled": handled},
            "fleet": {
                "workers": self.fleet_workers,
                "saturated": bool(self.saturated),
                "starved_of_cpu": bool(self.saturated) and self.starved,
                "device_kind": self.device_kind,
            },
            "delivery_ratio": self.delivery_ratio,
            "precision": self.precision,
            "recall": self.recall,
            "violations": sum(self.violations.values()),
            "violation_detail": self.violations,
            "gateway_cpu_s": round(self.gateway_cpu_s, 3),
            "gateway_rss_mib": round(self.gateway_rss_mib, 1),
            "baseline": None if base is None else {"latency_ms": base},
            "ratio_p99_vs_baseline": None if base is None else lat["p99"] / base["p99"],
            **self.extra,
        }

    def table(self) -> str:
        j = self.to_json()
        lat = j["latency_ms"]
        rows = [
            ("devices", f"{self.devices:,}"),
            ("scenario", self.scenario),
            ("connect", f"{self.connect_s:.2f} s ({j['connect_rate_per_s']:,}/s)"),
            *_hello_rows(self.connect),
            ("latency p50/p95/p99/max", f"{_four(lat)} (wire: sent to read off the socket)"),
            ("delivery ratio", f"{self.delivery_ratio:.4f}"),
            ("precision / recall", f"{self.precision:.3f} / {self.recall:.3f}"),
            ("violations", _plain(j["violations"])),
            *(row for kind, n in self.violations.items() for row in _rows(kind, n, "  ")),
            ("gateway CPU / RSS", f"{self.gateway_cpu_s:.2f} s / {self.gateway_rss_mib:.1f} MiB"
             f" ({self.gateway_rss_mib * 1024 / max(1, self.devices):.1f} KiB a device)"),
        ]  # fmt: skip
        handled = j["latency_ms"]["handled"]
        if handled is not None:
            done = f"{_four(handled)} (to the device done with it)"
            rows.append(("handled p50/p95/p99/max", done))
        for n, w in enumerate(self.fleet_workers, 1):
            lag = w["loop_lag_ms"]
            memory = (f", RSS {w['rss_mib']:.0f} MiB ({w['rss_mib'] * 1024 / w['devices']:.1f} KiB"
                      " a device)" if w.get("rss_mib") and w["devices"] else "")  # fmt: skip
            waited = w.get("waited_for_cpu_pct", 0.0)
            load = (f"{w['devices']:,} devices, CPU {w['cpu_pct']:.0f} %, waited for a core"
                    f" {waited:.0f} %, loop lag p50/p99 {lag['p50']:.0f} / {lag['p99']:.0f} ms"
                    f"{memory}")  # fmt: skip
            rows.append((f"fleet worker {n}", load))
        if self.saturated and self.starved:
            which = ", ".join(str(n) for n in self.saturated)
            rows.append(("SATURATED", f"this machine's cores were the bottleneck: fleet worker"
                         f" {which} spent much of the run waiting for a core that the gateways,"
                         " the store or the other workers held, so the latencies include that"
                         " wait and more --workers would not help; run the workers on other"
                         " machines (tidings loadtest-worker)"))  # fmt: skip
        elif self.saturated:
            which = ", ".join(str(n) for n in self.saturated)
            rows.append(("SATURATED", f"the device fleet was the bottleneck (worker {which}):"
                         " its latencies are its own queueing as much as the gateway's; run"
                         " with more --workers, or on more machines"))  # fmt: skip
        if j["baseline"] is not None:
            b = j["baseline"]["latency_ms"]
            rows.append(("bare baseline p50/p95/p99/max", _four(b)))
            rows.append(("p99 ratio vs baseline", f"{j['ratio_p99_vs_baseline']:.2f}"))
        for key, value in self.extra.items():
            rows += _rows(key, value)
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


SATURATED_LAG_MS = 50.0
SATURATED_CPU_PCT = 90.0
"""A fleet worker whose event loop woke more than this late at p99, or that used more than
this share of a core, was the bottleneck: what it measured is its own queueing."""

STARVED_WAIT_PCT = 25.0
"""A saturated worker that spent this share of the run ready to run but without a core (other
processes held them) was starved by the machine, not busy with its own work."""


def saturated_workers(loads: Iterable[Mapping[str, Any]]) -> list[int]:
    """Which fleet workers (1-based) their load (:class:`~tidings.simulator.engine.fleet.
    LoadMeter`) says were the bottleneck."""
    return [
        n for n, load in enumerate(loads, 1)
        if load["loop_lag_ms"]["p99"] > SATURATED_LAG_MS or load["cpu_pct"] > SATURATED_CPU_PCT
    ]  # fmt: skip


def starved_of_cpu(loads: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every saturated worker (:func:`saturated_workers`) waited for a core
    :data:`STARVED_WAIT_PCT` of the time or more: the machine, not the fleet's own work."""
    late = [loads[n - 1] for n in saturated_workers(loads)]
    return bool(late) and all(w.get("waited_for_cpu_pct", 0.0) >= STARVED_WAIT_PCT for w in late)


def _hello_rows(connect: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The connect storm: every device's hello latency, and each worker's rate."""
    if not connect:
        return []
    rows = [("hello p50/p95/p99/max", f"{_four(connect['hello_ms'])} (connect to welcome)")]
    if own := connect.get("gateway_hello_ms"):
        rows.append(("gateway's own hello", f"p50 ≤ {own['p50']:,.0f} / p99 ≤ {own['p99']:,.0f} ms"
                     " (accepted to welcome written, from its histogram)"))  # fmt: skip
    for n, w in enumerate(connect["workers"], 1):
        said = (f"{w['devices']:,} devices in {w['seconds']:.2f} s ({w['rate_per_s']:,}/s),"
                f" hello p99 {w['hello_p99_ms']:.0f} ms")  # fmt: skip
        rows.append((f"connect worker {n}", said))
    return rows


def _rows(key: str, value: Any, indent: str = "") -> list[tuple[str, str]]:
    """A table row for ``value`` in words; a mapping becomes one indented row per entry."""
    label = indent + key.replace("_", " ")
    if isinstance(value, Mapping):
        out = [(label, "" if value else "none")]
        for k, v in value.items():
            out += _rows(str(k), v, indent + "  ")
        return out
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        return [(label, ""), *(row for n, v in enumerate(value, 1)
                               for row in _rows(str(n), v, indent + "  "))]  # fmt: skip
    return [(label, _plain(value))]


def _plain(value: Any) -> str:
    """A number, flag or list as a person reads it (``1,234``, ``0.983``, ``yes``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "none"
    return "–" if value is None else str(value)


def _four(lat: dict[str, float]) -> str:
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} ms"


def write_svg(path: str | Path, series: Mapping[str, Sequence[float]], *, bins: int = 40) -> None:
    """A latency histogram (one colour per series) as a standalone SVG file."""
    values = [v for s in series.values() for v in s]
    top = max(values) if values else 1.0
    w, h, pad = 720, 360, 48
    colours = ["#2b6cb0", "#dd6b20", "#38a169"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif"'
        ' font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle">Fan-out latency (ms)</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="30" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{pad}" y="{h - pad + 16}">0</text>',
        f'<text x="{w - 10}" y="{h - pad + 16}" text-anchor="end">{top:.0f} ms</text>',
    ]
    plot_w, plot_h = w - pad - 10, h - pad - 40
    counts_all = []
    for samples in series.values():
        counts = [0] * bins
        for v in samples:
            counts[min(bins - 1, int(v / top * bins)) if top else 0] += 1
        counts_all.append(counts)
    peak = max((max(c) for c in counts_all if c), default=1) or 1
    for idx, ((name, _), counts) in enumerate(zip(series.items(), counts_all, strict=True)):
        colour = colours[idx % len(colours)]
        bar_w = plot_w / bins / len(series)
        for b, n in enumerate(counts):
            bh = n / peak * plot_h
            x = pad + b * plot_w / bins + idx * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{h - pad - bh:.1f}" width="{bar_w:.1f}" '
                         f'height="{bh:.1f}" fill="{colour}" opacity="0.8"/>')  # fmt: skip
        parts.append(
            f'<rect x="{w - 200}" y="{36 + 18 * idx}" width="12" height="12" fill="{colour}"/>'
        )
        parts.append(f'<text x="{w - 182}" y="{47 + 18 * idx}">{name}</text>')
    parts.append("</svg>")
    Path(path).write_text("\n".join(parts) + "\n")
