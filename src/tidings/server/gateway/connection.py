"""One device connection: a thin pump between a WebSocket and the node.

:class:`GatewayConnection` is websockets' asyncio server connection with the gateway's limits
on it, from the first byte after the HTTP upgrade, authenticated or not (PROTOCOL.md §5):

- **bounded output**: every write (our frames, websockets' automatic pongs and close frames,
  keepalive pings) goes through :meth:`GatewayConnection.send_data`, which aborts the
  connection instead of letting its unsent bytes pass ``send_queue_bytes``. A peer that does
  not read cannot grow the gateway's memory, whatever it sends;
- **rate limit over every frame**, control frames (ping, pong, close) included;
- **heartbeat**: one timer for all connections (:mod:`.heartbeat`), not a task each; an
  unanswered WebSocket ping closes with 4103, not websockets' 1011;
- **oversized frames** get ``error frame_too_large`` before the 1009 close.

:class:`Session` is an authenticated device on such a connection: its identity, and the pump
between the node and the connection's sans-I/O core
(:class:`~tidings.protocol.session.ServerSession`), which owns the phase, the delivery cursor and
the held deliveries. Writes never wait: :meth:`Session.write` pushes bytes to the transport the
way ``websockets.broadcast`` does, and a connection whose unsent bytes would pass the send-queue
limit is closed as a slow consumer (4100) instead of slowing anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.frames import Frame as WsFrame
from websockets.protocol import Event, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from tidings.protocol import SUBPROTOCOL, codes
from tidings.protocol.codec import encode
from tidings.protocol.frames import Error, Frame
from tidings.protocol.session import DeliverySkipped, ReplayNeeded, ServerSession
from tidings.server.errors import ServerError
from tidings.server.gateway.heartbeat import Heartbeat

if TYPE_CHECKING:
    from tidings.server.metrics import Metrics

__all__ = [
    "CLOSE_RESERVE",
    "GatewayConnection",
    "GatewayProtocol",
    "RateLimiter",
    "SendQueueFull",
    "Session",
    "connection_factory",
]

log = logging.getLogger(__name__)

CLOSE_RESERVE = 256
"""Bytes of the send queue kept free for a last ``error`` frame and the close frame, so that a
slow consumer still learns why it is closed (4100) once it reads again."""

_FRAME_HEADER = 10  # the largest WebSocket header of a server frame (no mask)
_CLOSE_FRAME = 2 + 2 + 123  # the largest close frame: header, code, reason


class SendQueueFull(ServerError):
    """A write would pass the connection's send-queue limit; the connection was aborted."""

    temporary = True


class RateLimiter:
    """Token bucket over client frames: ``rate`` per second sustained, ``burst`` at once."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = now

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class GatewayProtocol(ServerProtocol):
    """websockets' sans-I/O server protocol, telling the client why before a 1009 close."""

    def __init__(self, *, max_frame_bytes: int, metrics: Metrics) -> None:
        super().__init__(subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=max_frame_bytes)
        self.max_frame_bytes = max_frame_bytes
        self.metrics = metrics

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        """Fail the connection; a frame over the cap first gets ``error frame_too_large``
        (PROTOCOL.md §5, §9) — the close frame alone would not say which limit it broke."""
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is State.OPEN:
            self.metrics.protocol_errors += 1
            limit = self.max_frame_bytes
            error = Error(code=codes.ERR_FRAME_TOO_LARGE, message=f"frame over {limit} bytes")
            self.send_binary(encode(error))
        super().fail(code, reason)


class GatewayConnection(ServerConnection):
    """A device WebSocket with bounded output, a rate limit over every frame and a heartbeat
    that closes with Tidings codes (see the module docstring)."""

    def __init__(
        self,
        protocol: GatewayProtocol,
        server: Server,
        *,
        queue_limit: int,
        limiter: RateLimiter,
        metrics: Metrics,
        heartbeat: Heartbeat | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(protocol, server, **kwargs)
        self.queue_limit = queue_limit
        self.limiter = limiter
        self.metrics = metrics
        self.heartbeat = heartbeat
        """The server's keepalive timer; ``None``: no keepalive."""
        self.opened_at = self.loop.time()
        """When the kernel handed this connection over (the start of its hello, for metrics)."""
        self._pinged = False  # a ping went out at the heartbeat's last visit
        self._heard = False  # bytes arrived since then
        self.refused = False
        self._abort_timer: asyncio.TimerHandle | None = None

    # --- output ----------------------------------------------------------------------------------

    def unsent(self) -> int:
        """Bytes written to the transport and not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def send_data(self) -> None:
        """Write what the protocol has to send, unless it would pass the send-queue limit:
        then abort the connection and raise :class:`SendQueueFull`.

        Every write of the connection passes here: our frames, websockets' automatic pongs
        and close frames, keepalive pings. The callers in websockets treat the exception like
        a failed socket write.
        """
        chunks = self.protocol.data_to_send()
        unsent = self.unsent()
        size = sum(len(c) for c in chunks)
        if unsent + size > self.queue_limit:
            self.metrics.write_overflows += 1
            log.info("aborting %s: %d unsent bytes, the limit is %d", self.id, unsent + size,
                     self.queue_limit)  # fmt: skip
            self.transport.abort()
            raise SendQueueFull("send queue full; connection aborted", temporary=True)
        for data in chunks:
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():  # half-close after our close frame
                with contextlib.suppress(Exception):  # as websockets: the peer may be gone
                    self.transport.write_eof()
            else:  # pragma: no cover - TLS
                self.transport.close()
        unsent = self.unsent()
        if unsent > self.metrics.write_buffer_peak:
            self.metrics.write_buffer_peak = unsent

    def write_message(self, data: bytes) -> bool:
        """Write one binary message now, without waiting (PROTOCOL.md §5).

        Returns False when it was not written: the connection is closing, or the message does
        not fit in the send queue (then the connection is closed as a slow consumer, 4100,
        with the close frame in the reserved room).
        """
        if self.refused or self.protocol.state is not State.OPEN:
            return False
        if self.unsent() + len(data) + _FRAME_HEADER > self.queue_limit - CLOSE_RESERVE:
            self.metrics.slow_consumers += 1
            self.refuse(codes.CLOSE_SLOW_CONSUMER, "send queue full; reconnect and resume")
            return False
        try:
            self.protocol.send_binary(data)
            self.send_data()
        except Exception as exc:  # the transport may already be gone
            log.debug("write to %s failed: %s", self.id, exc)
            return False
        self.metrics.frames_out += 1
        return True

    def refuse(self, close_code: int, reason: str, messages: Sequence[bytes] = ()) -> None:
        """Fail the connection now: ``messages`` (an ``error`` frame), then a close frame with
        ``close_code``; read nothing more; abort if the peer has not gone ``close_timeout``
        seconds later (a peer that does not read never completes a closing handshake)."""
        if self.refused:
            return
        self.refused = True
        if self.protocol.state is State.OPEN:
            room = self.queue_limit - self.unsent() - _CLOSE_FRAME
            for data in messages:
                room -= len(data) + _FRAME_HEADER
                if room >= 0:  # the close frame matters more than the reason before it
                    self.protocol.send_binary(data)
            self.protocol.fail(close_code, reason[:120])
        try:
            self.send_data()
        except SendQueueFull:
            return  # aborted already
        except Exception:  # pragma: no cover - the transport is gone
            self.transport.abort()
            return
        self._abort_timer = self.loop.call_later(self.close_timeout or 0, self.transport.abort)

    # --- input -------------------------------------------------------------------------------

    def process_event(self, event: Event) -> None:
        """Count every frame, control frames included, against the rate limit (PROTOCOL.md
        §5): a flood of pings costs the flooder its connection, not the gateway its memory."""
        if isinstance(event, WsFrame):
            if self.refused:
                return  # nothing after a refusal is processed
            if not self.limiter.allow(self.loop.time()):
                self.metrics.rate_limited += 1
                error = Error(code=codes.ERR_RATE_LIMITED, message="too many frames; slow down")
                self.refuse(codes.CLOSE_RATE_LIMITED, "rate limited", [encode(error)])
                return
        super().process_event(event)

    # --- keepalive: one timer for every connection (heartbeat.py) -----------------------------

    def start_keepalive(self) -> None:
        """Join the server's :class:`Heartbeat` instead of starting a task of our own."""
        if self.heartbeat is not None:
            self.heartbeat.add(self)

    def data_received(self, data: bytes) -> None:
        self._heard = True  # anything at all, a pong or a frame, says the peer is there
        super().data_received(data)

    def beat(self) -> None:
        """The heartbeat's visit, once an interval: close with 4103 (PROTOCOL.md §2, step 6)
        when nothing was heard since the last ping, else ping."""
        if self.refused or self.protocol.state is not State.OPEN:
            return
        if self._pinged and not self._heard:
            self.metrics.heartbeat_timeouts += 1
            self.refuse(codes.CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
            return
        self._pinged, self._heard = True, False
        try:
            self.protocol.send_ping(b"")
            self.send_data()
        except Exception as exc:  # aborted as a slow consumer, or the transport is gone
            log.debug("ping to %s failed: %s", self.id, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.heartbeat is not None:
            self.heartbeat.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)


def connection_factory(
    *,
    max_frame_bytes: int,
    queue_limit: int,
    rate: float,
    burst: int,
    metrics: Metrics,
    heartbeat: Heartbeat | None = None,
) -> Callable[..., GatewayConnection]:
    """The ``create_connection`` argument of ``websockets.asyncio.server.serve``.

    It replaces the protocol that ``serve`` built with a :class:`GatewayProtocol` of the same
    settings (subprotocol ``tidings.v1``, no extensions, ``max_frame_bytes``); every connection
    is kept alive by ``heartbeat``.
    """

    def create(_protocol: ServerProtocol, server: Server, **kwargs: Any) -> GatewayConnection:
        loop = asyncio.get_running_loop()
        return GatewayConnection(
            GatewayProtocol(max_frame_bytes=max_frame_bytes, metrics=metrics),
            server,
            queue_limit=queue_limit,
            limiter=RateLimiter(rate, burst, loop.time()),
            metrics=metrics,
            heartbeat=heartbeat,
            **kwargs,
        )

    return create


class Session:
    """An authenticated device on a :class:`GatewayConnection`: identity, and the pump between
    the node and the connection's sans-I/O core (:class:`~tidings.protocol.session.
    ServerSession`), which owns the phase, the delivery cursor and the held deliveries."""

    __slots__ = (
        "_closer",
        "_on_gap",
        "app",
        "closing",
        "device",
        "epoch",
        "id",
        "metrics",
        "proto",
        "user",
        "user_key",
        "ws",
    )

    def __init__(
        self,
        *,
        ws: GatewayConnection,
        proto: ServerSession,
        id: str,
        app: str,
        device: str,
        user: str | None,
        user_key: str,
        metrics: Metrics,
        on_gap: Callable[[Session], None] | None = None,
        epoch: int = 0,
    ) -> None:
        self.ws = ws
        self.epoch = epoch
        """The store's session epoch of this hello: a session of a higher one replaces it."""
        self.proto = proto
        self.id = id
        self.app = app
        self.device = device
        self.user = user
        self.user_key = user_key
        self.metrics = metrics
        self.closing = False
        self._closer: asyncio.Task[None] | None = None
        self._on_gap = on_gap

    @property
    def last_sent(self) -> int:
        """The highest delivery ``seq`` written (or skipped) on this connection."""
        return self.proto.last_sent

    # --- writing ------------------------------------------------------------------------------

    def _writable(self) -> bool:
        return not self.closing and not self.ws.refused and self.ws.protocol.state is State.OPEN

    def _flush(self) -> bool:
        """Write what the core queued and act on its events; False if anything could not be
        written (the connection is going away: the core is closed, so nothing piles up)."""
        written = True
        while True:
            out, events = self.proto.data_to_send(), self.proto.events_received()
            if not out and not events:
                return written
            for data in out:
                written = self.ws.write_message(data) and written
            if not written or not self._writable():
                self.proto.close()
            for event in events:
                if isinstance(event, ReplayNeeded):
                    if self._on_gap is not None:
                        self._on_gap(self)
                    else:  # nobody to read the store: what is held goes out as it is
                        self.metrics.deliveries += self.proto.end_replay()
                elif isinstance(event, DeliverySkipped):
                    # Never a frame over the cap announced in welcome (PROTOCOL.md §3).
                    self.metrics.oversized_deliveries += 1
                    log.warning(
                        "skipped delivery %d to %s: a %d-byte frame, over the %d-byte cap",
                        *(event.seq, self.device, event.size, event.limit),
                    )

    def write(self, data: bytes) -> bool:
        """Write a frame encoded once for many sessions (``revoke``, ``inbox``) now, without
        waiting; False if it was not written."""
        if not self._writable():
            return False
        return self.proto.send_encoded(data) and self._flush()

    def send(self, frame: Frame) -> bool:
        """Write one frame now, without waiting; False if it was not written."""
        if not self._writable():
            return False
        return self.proto.send(frame) and self._flush()

    def push_delivery(self, seq: int, msg_wire: bytes) -> bool:
        """Write a live delivery in sequence order (PROTOCOL.md §3); True if written now.

        Held while a replay runs. A delivery that skips a sequence number (an earlier one,
        stored by another writer, is still on its way) is held too, and the session asks for a
        replay of the stored queue (``on_gap``) instead of writing out of order.
        """
        if not self._writable():
            return False  # what it missed is replayed when the device resumes
        queued = self.proto.deliver(seq, msg_wire)
        if queued:
            self.metrics.deliveries += 1
        return self._flush() and queued

    def resume(self, after: int) -> None:
        """Start replaying the stored queue after ``after``."""
        self.proto.resume(after)

    def replay(self, seq: int, msg_wire: bytes) -> None:
        """Write a delivery from the stored queue during a replay."""
        if self.proto.replay(seq, msg_wire):
            self.metrics.deliveries += 1
        self._flush()

    def end_replay(self) -> None:
        """Replay is done: write the live deliveries held meanwhile, in order."""
        self.metrics.deliveries += self.proto.end_replay()
        self._flush()

    def error(self, code: str, message: str, rid: int | None = None) -> None:
        """Send an error frame; ``rid`` when it answers a request (PROTOCOL.md §4)."""
        if self._writable():
            self.proto.error(code, message, rid)
            self._flush()

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a Tidings close code, without waiting for it."""
        if self.closing:
            return
        self.closing = True
        self.proto.close()
        self._closer = asyncio.get_running_loop().create_task(_close(self.ws, code, reason))

    async def closed(self) -> None:
        """Wait for a close started by :meth:`close` to finish."""
        if self._closer is not None:
            await self._closer


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code, reason[:120]), timeout=(ws.close_timeout or 5) + 1)
    except (ConnectionClosed, TimeoutError, OSError):
        ws.transport.abort()
