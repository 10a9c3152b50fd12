"""Fixtures for server tests: a real node and its admin API, both on free ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tidings.server.admin import AdminServer
from tidings.server.app import serve
from tidings.server.config import AppConfig, GatewayConfig
from tidings.server.node import Node

TIMEOUT_SCALE = float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))
"""Multiply every test timeout by this (slow CI machines)."""

DEMO = AppConfig(id="demo", secret="demo-secret-for-tests", admin_key="demo-admin-key-for-tests")
OTHER = AppConfig(id="other", secret="other-secret-for-tests", admin_key="other-admin-key-tests")


@dataclass
class AdminHarness:
    """A started node, its admin server, and an HTTP client holding the demo app's key."""

    node: Node
    server: AdminServer
    client: httpx.AsyncClient
    demo: AppConfig = DEMO
    other: AppConfig = OTHER

    def auth(self, app: AppConfig = DEMO) -> dict[str, str]:
        """Headers carrying ``app``'s admin key."""
        return {"Authorization": f"Bearer {app.admin_key}"}


def admin_config(db: Path) -> GatewayConfig:
    """Two apps, so that every test can also try to cross from one to the other."""
    return GatewayConfig(port=0, admin_port=0, db=str(db), apps=(DEMO, OTHER))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AdminHarness]:
    """One node and admin server per test module (starting uvicorn per test costs ~0.2 s).

    Modules that use it run on the module's loop:
    ``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
    """
    async with serve(admin_config(tmp_path_factory.mktemp("admin") / "tidings.db")) as running:
        assert running.admin is not None
        async with httpx.AsyncClient(
            base_url=running.admin.url, trust_env=False, timeout=10 * TIMEOUT_SCALE
        ) as client:
            yield AdminHarness(node=running.node, server=running.admin, client=client)
