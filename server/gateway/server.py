"""The device WebSocket server: handshake, authentication, then the connection pump."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tidings.protocol import SUBPROTOCOL, codes
from tidings.protocol.codec import decode_client
from tidings.protocol.errors import AuthError, ProtocolError, TidingsError
from tidings.protocol.frames import ClientFrame, Hello
from tidings.protocol.state import CLIENT_ALLOWED, Phase, advance
from tidings.server.gateway.connection import monotonic
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from tidings.server.node import Node

__all__ = ["start_server"]

log = logging.getLogger(__name__)


async def start_server(node: Node, host: str, port: int) -> Server:
    """Listen for devices on ``host:port``; every connection runs :func:`_handle`."""
    cfg = node.config

    async def handler(ws: ServerConnection) -> None:
        await _handle(node, ws)

    return await serve(
        handler,
        host,
        port,
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=cfg.max_frame_bytes,
        max_queue=16,
        ping_interval=cfg.heartbeat_s,
        ping_timeout=cfg.heartbeat_s,
        close_timeout=5,
        backlog=4096,
    )


async def _handle(node: Node, ws: ServerConnection) -> None:
    metrics = node.metrics
    if ws.subprotocol != SUBPROTOCOL:
        await ws.close(codes.CLOSE_UNSUPPORTED, f"subprotocol {SUBPROTOCOL} required")
        return
    # --- handshake: nothing exists until a valid hello (PROTOCOL.md §2) ----------------------
    try:
        data = await asyncio.wait_for(ws.recv(), node.config.hello_timeout_s)
    except TimeoutError:
        await ws.close(codes.CLOSE_BAD_FRAME, "no hello in time")
        return
    except ConnectionClosed:
        return
    try:
        hello = _frame(node, data, Phase.HANDSHAKE)
        assert isinstance(hello, Hello)
        if hello.v != 1:
            await _refuse(ws, codes.ERR_BAD_FRAME, "hello.v: only version 1 is supported",
                          codes.CLOSE_UNSUPPORTED)  # fmt: skip
            return
        claims = node.authenticate(hello.token)
    except AuthError as exc:
        metrics.auth_failures += 1
        close = (
            codes.CLOSE_TOKEN_EXPIRED
            if exc.code == codes.ERR_TOKEN_EXPIRED
            else (codes.CLOSE_UNAUTHORIZED)
        )
        await _refuse(ws, exc.code, exc.reason, close)
        return
    except ProtocolError as exc:
        metrics.protocol_errors += 1
        await _refuse(ws, exc.code, exc.reason, codes.CLOSE_BAD_FRAME)
        return

    session = await node.open_session(ws, claims, hello)
    if session is None:
        return
    # --- open phase: the pump -----------------------------------------------------------------
    try:
        async for data in ws:
            if session.closing:
                continue  # keep reading so the closing handshake is not stuck behind frames
            metrics.frames_in += 1
            if not session.limiter.allow(monotonic()):
                metrics.rate_limited += 1
                session.error(codes.ERR_RATE_LIMITED, "too many frames; slow down")
                session.close(codes.CLOSE_RATE_LIMITED, "rate limited")
                continue
            try:
                frame = _frame(node, data, Phase.OPEN)
            except ProtocolError as exc:
                metrics.protocol_errors += 1
                session.error(exc.code, exc.reason)
                session.close(codes.CLOSE_BAD_FRAME, exc.code)
                continue
            try:
                await node.dispatch(session, frame)
            except TidingsError as exc:
                session.error(exc.code, exc.reason, getattr(frame, "rid", None))
    except ConnectionClosed:
        pass
    except Exception:  # a bug must cost one connection, never the gateway
        log.exception("connection %s failed", session.device)
        session.close(codes.CLOSE_INTERNAL, "internal error")
    finally:
        node.close_session(session)
        # Returning from the handler would close with 1000: let our close code go out first.
        await session.closed()


def _frame(node: Node, data: str | bytes, phase: Phase) -> ClientFrame:
    """Decode one message and check it is allowed in ``phase`` (PROTOCOL.md §2, §6)."""
    if isinstance(data, str):
        raise ProtocolError("frames are binary MessagePack, got a text message")
    frame = decode_client(data, max_size=node.config.max_frame_bytes)
    advance(CLIENT_ALLOWED, phase, frame)
    return frame


async def _refuse(ws: ServerConnection, code: str, message: str, close_code: int) -> None:
    from tidings.protocol.codec import encode
    from tidings.protocol.frames import Error

    try:
        await ws.send(encode(Error(code=code, message=message[:500])))
        await ws.close(close_code, code)
    except ConnectionClosed:
        pass
