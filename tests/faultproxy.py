"""A TCP proxy for fault tests: put it between a node and PostgreSQL or Redis, then stall,
silently drop or cut that node's traffic while the others go on.

Modes (:attr:`FaultProxy.mode`, changed at any time, for every connection at once):

- ``"pass"``: bytes flow both ways;
- ``"stall"``: nothing is read or forwarded (a peer that stopped answering; what was sent is
  delivered once the mode is ``"pass"`` again, as TCP would after a short partition);
- ``"drop"``: bytes are read and thrown away, the connections stay open (a silent partition:
  no reset, packets just stop).

:meth:`FaultProxy.cut` closes every connection open now (a reset), new ones are accepted;
:meth:`FaultProxy.stop` also refuses new ones (the server is gone) until :meth:`FaultProxy.start`
listens again, on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["FaultProxy"]


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``upstream`` (host, port), with faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._port = 0  # kept across a stop and a start
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    def set(self, mode: str) -> None:
        assert mode in ("pass", "stall", "drop")
        self.mode = mode
        if mode == "stall":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every open connection, both ways (the peers see a reset)."""
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst, writer, up_writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *ends: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # stalled while it read: hold it
                if self.mode == "drop":
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in ends:
                self._links.discard(end)
                with contextlib.suppress(Exception):
                    end.transport.abort()
