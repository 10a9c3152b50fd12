"""The Tidings device simulator: fleets of real SDK devices, load tests, and the ``tidings sim``
TUI."""

from __future__ import annotations

__all__: list[str] = []
