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
from collections.abc import Callable
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
        "_on_gap",
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
        on_gap: Callable[[Session], None] | None = None,
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
        self._on_gap = on_gap

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
        """Write a live delivery in sequence order.

        Held while a replay runs. A delivery that skips a sequence number (an earlier one,
        stored by another writer, is still on its way) is held too, and the session asks for a
        replay of the stored queue (``on_gap``) instead of writing out of order.
        """
        if self._replaying:
            self._held.append((seq, msg_wire))
            return False
        if self.closing or self.ws.protocol.state is not State.OPEN:
            return False  # what it missed is replayed when the device resumes
        if seq > self.last_sent + 1 and self._on_gap is not None:
            self._replaying = True
            self._held.append((seq, msg_wire))
            self._on_gap(self)
            return False
        return self._write_delivery(seq, msg_wire)

    def _write_delivery(self, seq: int, msg_wire: bytes) -> bool:
        if seq <= self.last_sent:
            return False  # already sent by a replay
        if self.write(encode_deliver(seq, msg_wire)):
            self.last_sent = seq
            self.metrics.deliveries += 1
            return True
        return False

    def replay(self, seq: int, msg_wire: bytes) -> None:
        """Write a delivery from the stored queue during a replay."""
        self._write_delivery(seq, msg_wire)

    def end_replay(self) -> None:
        """Replay is done: write the live deliveries held meanwhile, in order.

        The replay read the store after they were committed, so it covered any gap before
        them; what is still missing was dropped (revoked, collapsed, expired) and is not waited
        for.
        """
        self._replaying = False
        held, self._held = sorted(self._held), []
        for seq, wire in held:
            self._write_delivery(seq, wire)

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
