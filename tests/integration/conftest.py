"""Fixtures for integration tests: real SDK devices against the real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from helpers import Device, timeout

from tidings.client_sdk import TidingsClient
from tidings.server.node import Node

Mint = Callable[..., str]


@pytest_asyncio.fixture
async def devices(gateway: Node, mint: Mint) -> AsyncIterator[Callable[..., Any]]:
    """Factory: ``await devices("dev-1", user="u1", **client_kwargs)`` → a started Device."""
    started: list[TidingsClient] = []

    async def make(device: str, user: str | None = None, *, token: str | None = None,
                   connect: bool = True, **kwargs: Any) -> Device:  # fmt: skip
        client = TidingsClient(
            url=f"ws://127.0.0.1:{gateway.port}",
            token=token or mint(device, user=user),
            device_id=device,
            **kwargs,
        )
        d = Device(client)
        await client.start()
        started.append(client)
        if connect:
            await client.wait_connected(timeout=timeout(5))
        return d

    yield make
    for client in started:
        await client.close()
