"""Serve the admin API with uvicorn on the caller's event loop, beside the gateway node."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from tidings.server.admin.api import create_admin_app
from tidings.server.node import Node

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_SHUTDOWN_S", "AdminServer"]

DEFAULT_MAX_CONNECTIONS = 1000
"""Security limit: concurrent admin connections; beyond it requests get ``503``."""
DEFAULT_SHUTDOWN_S = 5
"""Seconds ``stop()`` lets in-flight admin requests finish before cancelling them."""


class _Server(uvicorn.Server):
    # The process that embeds the node owns SIGINT/SIGTERM; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class AdminServer:
    """The admin HTTP API of one node, served by uvicorn on the running event loop.

    Example::

        async with Node(config) as node:
            admin = AdminServer(node, "127.0.0.1", 0)
            await admin.start()
            print(admin.port)
            ...
            await admin.stop()
    """

    def __init__(
        self, node: Node, host: str, port: int, *, shutdown_s: int = DEFAULT_SHUTDOWN_S
    ) -> None:
        self.node = node
        self.host = host
        self._port = port
        self._shutdown_s = shutdown_s
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the API, e.g. ``http://127.0.0.1:8766``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Bind and start serving; returns once the socket is listening.

        Raises:
            OSError: the address cannot be bound (for example the port is in use).
        """
        if self._task is not None:
            raise RuntimeError("AdminServer already started")
        sock = _bind(self.host, self._port)
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_admin_app(self.node),
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=DEFAULT_MAX_CONNECTIONS,
            timeout_graceful_shutdown=self._shutdown_s,
        )
        self._server = server = _Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="tidings-admin")
        while not server.started:
            if self._task.done():
                # serve() returned or failed before listening; surface why.
                sock.close()
                await self._task
                raise RuntimeError("admin server stopped during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the socket."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
            self._task = None

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
