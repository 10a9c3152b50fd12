"""Shared fixtures: a real gateway node on loopback, token minting, and a loop-error guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from helpers import APP_A, gateway_config

from tidings.protocol.tokens import mint_token
from tidings.server.app import serve
from tidings.server.config import AppConfig
from tidings.server.node import Node


@pytest_asyncio.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Record unhandled loop exceptions of an async test; fail the test if any."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    assert not errors, f"unhandled exceptions in the event loop: {errors}"


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, loop_errors: list[dict[str, Any]]) -> AsyncIterator[Node]:
    """A started node on 127.0.0.1, port 0, with a fresh SQLite database."""
    async with serve(gateway_config(tmp_path / "tidings.db"), admin=False) as running:
        yield running.node


@pytest.fixture
def mint() -> Callable[..., str]:
    """Mint a device token: ``mint("dev-1", user="u1", app=APP_A, ttl=3600)``."""

    def _mint(device: str, user: str | None = None, app: AppConfig = APP_A, ttl: int = 3600) -> str:
        return mint_token(secret=app.secret, app=app.id, device=device, user=user, ttl=ttl)

    return _mint
