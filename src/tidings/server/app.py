"""The composition root: one running gateway process, from a configuration.

:func:`serve` builds the node (store, hub, broker, campaign engine, the WebSocket server for
devices) and its admin HTTP API, starts them in order, and stops them in reverse. The command
line (``tidings gateway``), the demo and the tests start a gateway through it, so a new part of
a node is wired in one place::

    async with serve(load_config()) as running:
        print(running.node.port, running.admin.url)
        await stop_requested.wait()
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError
from tidings.server.admin.serve import AdminServer
from tidings.server.config import GatewayConfig
from tidings.server.errors import StoreError
from tidings.server.node import Node

__all__ = ["CannotServe", "Running", "serve"]


class CannotServe(TidingsError):
    """The gateway could not start; the message says why and what to do (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code=codes.ERR_INTERNAL)


@dataclass(frozen=True, slots=True)
class Running:
    """A started gateway: the node (devices on ``node.port``) and its admin API (or None)."""

    node: Node
    admin: AdminServer | None

    def banner(self, version: str) -> str:
        """The start line: where devices and the admin API are, and what the node runs on."""
        cfg = self.node.config
        admin = f", admin API on {self.admin.url}" if self.admin is not None else ""
        apps = ", ".join(a.id for a in cfg.apps)
        return (f"tidings gateway {version}: devices on ws://{cfg.host}:{self.node.port}{admin}"
                f" (apps: {apps}; {self.node.describe()})")  # fmt: skip


@asynccontextmanager
async def serve(
    config: GatewayConfig,
    *,
    admin: bool = True,
    **node_options: Any,
) -> AsyncIterator[Running]:
    """Start a gateway for ``config`` and stop it (gracefully) when the block ends.

    Args:
        config: The gateway's configuration (ports 0 pick free ones).
        admin: Also serve the admin HTTP API on ``config.admin_host:admin_port``.
        node_options: Passed to :class:`Node` (``store=``, ``clock=``, ``broker=``...).

    Raises:
        CannotServe: a port is taken, the database cannot be opened, a setting is wrong; the
            reason names what and says what to do. Nothing is left running.
    """
    node = Node(config, **node_options)
    try:
        await node.start()
    except OSError as exc:
        raise CannotServe(
            f"cannot listen for devices on {config.host}:{config.port}: "
            f"{exc.strerror or exc}; choose another with --port (0 picks a free one)"
        ) from exc
    except StoreError as exc:  # one line that names the database file and what to do
        raise CannotServe(exc.reason) from exc
    except TidingsError as exc:
        raise CannotServe(f"cannot start the gateway: {exc.reason}") from exc
    server: AdminServer | None = None
    try:
        if admin:
            server = AdminServer(node, config.admin_host, config.admin_port)
            try:
                await server.start()
            except OSError as exc:
                server = None
                raise CannotServe(
                    f"cannot listen for the admin API on {config.admin_host}:"
                    f"{config.admin_port}: {exc.strerror or exc}; choose another with "
                    "--admin-port (0 picks a free one)"
                ) from exc
        yield Running(node, server)
    finally:
        if server is not None:
            await server.stop()
        await node.stop()
