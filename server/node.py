"""The gateway node: hub + broker + store, and the operations the admin API calls.

INTERFACE STUB — the server core fills in the bodies; the signatures are the contract the admin
API, the CLI and the tests code against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.protocol.frames import Action
from tidings.server.config import GatewayConfig

__all__ = ["Node", "SendRequest", "SendResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    """A direct send to users and/or devices of one app (validated by the caller)."""

    app: str
    users: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    kind: Literal["banner", "inbox", "both"] = "both"
    title: str = ""
    body: str = ""
    category: Literal["marketing", "transactional"] = "marketing"
    priority: Literal["normal", "urgent"] = "normal"
    ttl: int | None = None  # seconds; None = the app's default for the kind
    collapse_key: str | None = None
    image: str | None = None
    actions: tuple[Action, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    expire_after_read: bool = False
    campaign: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a send did, once every delivery is durably stored."""

    message_id: str
    devices: int  # device deliveries queued
    users: int  # distinct users reached
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, e.g. opted_out


class Node:
    """One gateway process: device WebSocket server, hub, broker and store."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        raise NotImplementedError

    @property
    def config(self) -> GatewayConfig:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The bound WebSocket port (useful when the config says 0)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Open the store, run migrations, start listening for devices."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, go-away to every device, flush and close."""
        raise NotImplementedError

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, request: SendRequest) -> SendResult:
        """Store a message and its deliveries durably, then fan out to connected devices."""
        raise NotImplementedError

    async def revoke(self, app: str, message_id: str) -> bool:
        """Revoke a message: undelivered copies are dropped, devices are told to remove it."""
        raise NotImplementedError

    def metrics_text(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        raise NotImplementedError

    def connected_devices(self, app: str | None = None) -> int:
        """How many devices are connected (for one app, or all)."""
        raise NotImplementedError
