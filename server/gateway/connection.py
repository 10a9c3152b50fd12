"""One device connection: a thin pump between a WebSocket and the node.

The pump receives bytes, feeds them to the sans-I/O protocol (decode + phase table), and hands
frames to the node. Writes never wait: :meth:`Session.write` pushes bytes to the transport the
way ``websockets.broadcast`` does, and a connection whose unsent bytes exceed the send-queue
limit is closed as a slow consumer (PROTOCOL.md §5) instead of slowing anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from tidings.protocol import codes
from tidings.protocol.codec import encode, encode_deliver
from tidings.protocol.frames import Error, Frame
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

if TYPE_CHECKING:
    from tidings.server.metrics import Metrics

__all__ = ["RateLimiter", "Session"]

log = logging.getLogger(__name__)


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


class Session:
    """An authenticated device session: identity, delivery cursor and the write path."""

    __slots__ = (
        "_closer",
        "_held",
        "_replaying",
        "app",
        "closing",
        "device",
        "id",
        "last_sent",
        "limiter",
        "metrics",
        "queue_limit",
        "user",
        "user_key",
        "ws",
    )

    def __init__(
        self,
        *,
        ws: ServerConnection,
        id: str,
        app: str,
        device: str,
        user: str | None,
        user_key: str,
        queue_limit: int,
        limiter: RateLimiter,
        metrics: Metrics,
    ) -> None:
        self.ws = ws
        self.id = id
        self.app = app
        self.device = device
        self.user = user
        self.user_key = user_key
        self.queue_limit = queue_limit
        self.limiter = limiter
        self.metrics = metrics
        self.last_sent = 0
        self.closing = False
        self._replaying = True
        self._held: list[tuple[int, bytes]] = []
        self._closer: asyncio.Task[None] | None = None

    # --- writing ------------------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Write one binary message now, without waiting; False if it was not written."""
        ws = self.ws
        if self.closing or ws.protocol.state is not State.OPEN:
            return False
        try:
            ws.protocol.send_binary(data)
            ws.send_data()
        except Exception as exc:  # the transport may already be gone
            log.debug("write to %s failed: %s", self.device, exc)
            return False
        self.metrics.frames_out += 1
        if ws.transport.get_write_buffer_size() > self.queue_limit:
            self.metrics.slow_consumers += 1
            self.close(codes.CLOSE_SLOW_CONSUMER, "send queue full; reconnect and resume")
        return True

    def send(self, frame: Frame) -> bool:
        """Encode and write one frame."""
        return self.write(encode(frame))

    def push_delivery(self, seq: int, msg_wire: bytes) -> bool:
        """Write a live delivery in sequence order (held while a resume replay runs)."""
        if self._replaying:
            self._held.append((seq, msg_wire))
            return False
        if seq <= self.last_sent:
            return False  # already sent by the replay
        if self.write(encode_deliver(seq, msg_wire)):
            self.last_sent = seq
            self.metrics.deliveries += 1
            return True
        return False

    def replay(self, seq: int, msg_wire: bytes) -> None:
        """Write a delivery from the stored queue during resume."""
        if seq > self.last_sent and self.write(encode_deliver(seq, msg_wire)):
            self.last_sent = seq
            self.metrics.deliveries += 1

    def end_replay(self) -> None:
        """Replay is done: flush live deliveries that arrived meanwhile, in order."""
        self._replaying = False
        held, self._held = sorted(self._held), []
        for seq, wire in held:
            self.push_delivery(seq, wire)

    def error(self, code: str, message: str, rid: int | None = None) -> None:
        """Send an error frame."""
        self.send(Error(code=code, message=message[:500], rid=rid))

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a Tidings close code, without waiting for it."""
        if self.closing:
            return
        self.closing = True
        self._closer = asyncio.get_running_loop().create_task(_close(self.ws, code, reason))

    async def closed(self) -> None:
        """Wait for a close started by :meth:`close` to finish."""
        if self._closer is not None:
            await self._closer


async def _close(ws: ServerConnection, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code, reason[:120]), timeout=5)
    except (ConnectionClosed, TimeoutError, OSError):
        ws.transport.abort()


def monotonic() -> float:
    """Clock for rate limiting (never the injected wall clock)."""
    return time.monotonic()
