"""The device WebSocket server: handshake, authentication, then the connection pump."""

from __future__ import annotations

import asyncio
import logging
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tidings.protocol import SUBPROTOCOL, codes
from tidings.protocol.errors import AuthError, InvalidField, ProtocolError, TidingsError
from tidings.protocol.frames import Hello
from tidings.protocol.session import ServerSession
from tidings.server.gateway.connection import GatewayConnection, Session, connection_factory
from tidings.server.gateway.heartbeat import Heartbeat
from tidings.server.gateway.sessions import Sessions

__all__ = ["check_hello", "start_server"]

log = logging.getLogger(__name__)


async def start_server(sessions: Sessions, host: str, port: int) -> Server:
    """Listen for devices on ``host:port``; every connection runs :func:`_handle`, which hands
    the ``hello`` and then each frame to the node's :class:`Sessions`."""
    cfg = sessions.config

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, GatewayConnection)
        await _handle(sessions, ws)

    return await serve(
        handler,
        host,
        port,
        create_connection=connection_factory(  # type: ignore[arg-type]
            max_frame_bytes=cfg.max_frame_bytes,
            queue_limit=cfg.send_queue_bytes,
            rate=cfg.rate_limit_per_s,
            burst=cfg.rate_burst,
            metrics=sessions.metrics,
            heartbeat=Heartbeat(cfg.heartbeat_s),
        ),
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=cfg.max_frame_bytes,
        max_queue=16,
        ping_interval=None,  # the Heartbeat keeps every connection alive (heartbeat.py)
        close_timeout=cfg.close_timeout_s,
        backlog=4096,
    )


async def _handle(sessions: Sessions, ws: GatewayConnection) -> None:
    metrics = sessions.metrics
    if ws.subprotocol != SUBPROTOCOL:
        await ws.close(codes.CLOSE_UNSUPPORTED, f"subprotocol {SUBPROTOCOL} required")
        return
    proto = ServerSession(max_frame_bytes=sessions.config.max_frame_bytes)
    # --- handshake: nothing exists until a valid hello (PROTOCOL.md §2) ----------------------
    try:
        data = await asyncio.wait_for(ws.recv(), sessions.config.hello_timeout_s)
    except TimeoutError:
        # A slow network, not a broken client: a code it may retry on (§10).
        metrics.hello_timeouts += 1
        await ws.close(codes.CLOSE_HELLO_TIMEOUT, "no hello in time")
        return
    except ConnectionClosed:
        return
    try:
        hello = proto.receive(data)
        assert isinstance(hello, Hello)
        if hello.v != 1:
            _refuse(ws, proto, codes.ERR_BAD_FRAME, "hello.v: only version 1 is supported",
                    codes.CLOSE_UNSUPPORTED)  # fmt: skip
            return
        check_hello(hello)
        claims = sessions.authenticate(hello.token)
    except AuthError as exc:
        metrics.auth_failures += 1
        close = (
            codes.CLOSE_TOKEN_EXPIRED
            if exc.code == codes.ERR_TOKEN_EXPIRED
            else (codes.CLOSE_UNAUTHORIZED)
        )
        _refuse(ws, proto, exc.code, exc.reason, close)
        return
    except ProtocolError as exc:
        metrics.protocol_errors += 1
        _refuse(ws, proto, exc.code, exc.reason, codes.CLOSE_BAD_FRAME, exc.rid)
        return

    try:
        session = await sessions.open_session(ws, proto, claims, hello)
    except TidingsError as exc:
        # The store failed (disk full...): the device retries later (§5, §10).
        metrics.store_failures += 1
        log.warning("device %s refused: %s", claims.device, exc.reason)
        _refuse(ws, proto, codes.ERR_INTERNAL, "server fault; retry later", codes.CLOSE_INTERNAL)
        return
    except Exception:  # a bug must cost one connection, never the gateway
        log.exception("opening a session for %s failed", claims.device)
        _refuse(ws, proto, codes.ERR_INTERNAL, "server fault; retry later", codes.CLOSE_INTERNAL)
        return
    if session is None:  # a later connection of this device took its place meanwhile
        proto.close()
        ws.refuse(codes.CLOSE_REPLACED, "a newer connection of this device", [])
        return
    await _pump(sessions, ws, session)


async def _pump(sessions: Sessions, ws: GatewayConnection, session: Session) -> None:
    """The open phase: feed each message to the core, dispatch its frame to the sessions."""
    metrics = sessions.metrics
    try:
        async for data in ws:
            if session.closing:
                continue  # keep reading so the closing handshake is not stuck behind frames
            metrics.frames_in += 1
            try:
                frame = session.proto.receive(data)
            except ProtocolError as exc:
                metrics.protocol_errors += 1
                session.error(exc.code, exc.reason, exc.rid)
                session.close(codes.CLOSE_BAD_FRAME, exc.code)
                continue
            rid = getattr(frame, "rid", None)  # every error answering a request carries it (§4)
            try:
                await sessions.dispatch(session, frame)
            except TidingsError as exc:
                session.error(exc.code, exc.reason, rid)
            except Exception:  # a bug must cost one connection, never the gateway
                log.exception("frame %r from %s failed", frame.TYPE, session.device)
                session.error(codes.ERR_INTERNAL, "server fault; retry later", rid)
                session.close(codes.CLOSE_INTERNAL, "internal error")
    except ConnectionClosed:
        pass
    except Exception:  # a bug must cost one connection, never the gateway
        log.exception("connection %s failed", session.device)
        session.error(codes.ERR_INTERNAL, "server fault; retry later")
        session.close(codes.CLOSE_INTERNAL, "internal error")
    finally:
        sessions.close_session(session)
        # Returning from the handler would close with 1000: let our close code go out first.
        await session.closed()


_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


def check_hello(hello: Hello) -> None:
    """Check what the frame shape cannot: ``device.tz`` names a zone of the IANA time zone
    database the gateway runs with (PROTOCOL.md §8 ``hello``).

    Raises:
        InvalidField: naming ``hello.device.tz``.
    """
    tz = hello.device.tz
    if tz and not _known_zone(tz):
        raise InvalidField("hello.device.tz", f"{tz[:40]!r} is not an IANA time zone name")


def _known_zone(name: str) -> bool:
    if len(name) > 64 or not _TZ_NAME.fullmatch(name):
        return False  # no paths, dots or spaces reach the file system
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _refuse(
    ws: GatewayConnection,
    proto: ServerSession,
    code: str,
    message: str,
    close_code: int,
    rid: int | None = None,
) -> None:
    """Answer the handshake with an ``error`` frame, then close (PROTOCOL.md §2, §5).

    Without waiting on the peer: one that does not read is aborted ``close_timeout`` later.
    """
    proto.error(code, message, rid)
    proto.close()
    ws.refuse(close_code, code, proto.data_to_send())
