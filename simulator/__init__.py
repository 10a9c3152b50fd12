"""The Tidings device simulator: fleets of real SDK devices for load tests (TUI to come)."""

from __future__ import annotations

__all__: list[str] = []
