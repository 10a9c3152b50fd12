"""The bare baseline: a minimal websockets server broadcasting one frame to every client.

It runs in its own process, like the gateway, so both measurements see the same machine. A
small TCP control port says "broadcast now" and answers with the message id it sent.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import time
from typing import Any

import msgpack

__all__ = ["BareServer"]


async def _serve(port: int, control_port: int, frame_size: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    from tidings.simulator.engine.fleet import raise_nofile

    raise_nofile()
    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            n = int(line)
            while len(conns) < n:  # noqa: ASYNC110 - polls until the clients are all in
                await asyncio.sleep(0.01)
            msg_id = f"bare-{time.monotonic_ns()}"
            msg = {"id": msg_id, "kind": "banner", "title": "t", "body": "",
                   "sent_at": int(time.time() * 1000)}  # fmt: skip
            pad = max(0, frame_size - len(msgpack.packb({"t": "deliver", "seq": 1, "msg": msg})))
            msg["body"] = "x" * pad
            broadcast(conns, msgpack.packb({"t": "deliver", "seq": 1, "msg": msg}))
            writer.write(msg_id.encode() + b"\n")
            await writer.drain()

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                     backlog=4096):  # fmt: skip
        server = await asyncio.start_server(control, "127.0.0.1", control_port)
        async with server:
            await asyncio.Future()


def _run(port: int, control_port: int, frame_size: int) -> None:
    asyncio.run(_serve(port, control_port, frame_size))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BareServer:
    """A bare broadcast server in a child process."""

    def __init__(self, frame_size: int) -> None:
        self.port, self.control_port = _free_port(), _free_port()
        self._proc = mp.get_context("spawn").Process(
            target=_run, args=(self.port, self.control_port, frame_size), daemon=True
        )
        self._ctl: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._proc.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._ctl = socket.create_connection(("127.0.0.1", self.control_port), timeout=300)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the bare baseline server did not start")

    def broadcast(self, expected_clients: int) -> str:
        """Broadcast once every expected client is connected; return the message id."""
        assert self._ctl is not None
        self._ctl.sendall(f"{expected_clients}\n".encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = self._ctl.recv(256)
            if not chunk:
                raise RuntimeError("the bare baseline server went away")
            data += chunk
        return data.decode().strip()

    def stop(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
        self._proc.terminate()
        self._proc.join(timeout=10)
