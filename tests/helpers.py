"""Test helpers shared by every test package: apps, configuration, timeouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
