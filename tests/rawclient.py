"""A raw protocol client for gateway tests: real WebSocket, frames from tidings.protocol."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tidings.protocol import SUBPROTOCOL
from tidings.protocol.codec import decode_server, encode
from tidings.protocol.frames import DeviceInfo, Frame, Hello, Welcome

TIMEOUT = 5.0


class RawClient:
    """Speaks frames directly, so tests control every byte the gateway sees."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> RawClient:
        ws = await connect(
            f"ws://127.0.0.1:{port}/", subprotocols=[SUBPROTOCOL], compression=None, **kwargs
        )  # type: ignore[list-item]
        return cls(ws)

    async def hello(self, token: str, resume: int = 0, inbox_ver: int = 0) -> Frame:
        """Send hello; return the first answer (welcome or error)."""
        await self.send(Hello(token=token, device=DeviceInfo(platform="test"), resume=resume,
                              inbox_ver=inbox_ver))  # fmt: skip
        return await self.recv()

    async def send(self, frame: Frame) -> None:
        await self.ws.send(encode(frame))

    async def recv(self, timeout: float = TIMEOUT) -> Frame:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, bytes)
        return decode_server(data)

    async def recv_until(self, kind: type[Frame], timeout: float = TIMEOUT) -> Any:
        """Receive frames until one of ``kind`` arrives; return it."""
        while True:
            frame = await self.recv(timeout)
            if isinstance(frame, kind):
                return frame

    async def nothing_for(self, seconds: float = 0.2) -> bool:
        """True when no frame arrives within ``seconds``."""
        try:
            await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return True
        return False

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close; return its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except Exception:
            pass
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


async def open_session(port: int, token: str, resume: int = 0, inbox_ver: int = 0) -> RawClient:
    """Connect and complete the handshake; fail the test if not welcomed."""
    client = await RawClient.connect(port)
    first = await client.hello(token, resume=resume, inbox_ver=inbox_ver)
    assert isinstance(first, Welcome), first
    return client
