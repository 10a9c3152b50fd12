"""Test helpers shared by every test package: apps, configuration, timeouts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidings.client_sdk import TidingsClient
from tidings.server.config import AppConfig, GatewayConfig

TIMEOUT_SCALE = float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
"""Multiply every test timeout by this on slow machines."""

APP_A = AppConfig(id="demo", secret="secret-of-demo-app", admin_key="admin-key-of-demo")
APP_B = AppConfig(id="other", secret="secret-of-other-app", admin_key="admin-key-of-other")


def timeout(seconds: float) -> float:
    """A test timeout, scaled by TIDINGS_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def gateway_config(db: Path, **overrides: Any) -> GatewayConfig:
    """Two apps on free ports with a database in ``db``."""
    return GatewayConfig(port=0, admin_port=0, db=str(db), apps=(APP_A, APP_B), **overrides)


class Device:
    """An SDK client plus what it showed, for assertions."""

    def __init__(self, client: TidingsClient) -> None:
        self.client = client
        self.banners: list[Any] = []
        self.modals: list[Any] = []
        self.messages: list[Any] = []
        self.inbox_changes = 0
        client.on_banner(self.banners.append)
        client.on_modal(self.modals.append)
        client.on_message(lambda msg, received_at: self.messages.append(msg))
        client.on_inbox_change(self._changed)

    def _changed(self, *args: object) -> None:
        self.inbox_changes += 1

    async def until(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        deadline = time.monotonic() + timeout(seconds)
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)
