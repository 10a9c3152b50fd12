"""The gateway's side of one connection, sans I/O (PROTOCOL.md §2, §3, §4).

Shaped like websockets' ``Protocol`` and h11's ``Connection``: no sockets, no tasks, no clock.
The I/O layer feeds :meth:`ServerSession.receive` each WebSocket message and gets a frame back
(or a :class:`~tidings.protocol.errors.ProtocolError` naming what was wrong, with the
request's ``rid`` when it could be read); it hands deliveries to :meth:`~ServerSession.deliver`
and :meth:`~ServerSession.replay`, writes what :meth:`~ServerSession.data_to_send` returns, and
acts on :meth:`~ServerSession.events_received`.

Two phases are tracked, as h11 tracks both roles: ``their_phase`` moves on the client's frames
through :data:`~tidings.protocol.state.CLIENT_ALLOWED`, ``our_phase`` on ours through
:data:`~tidings.protocol.state.SERVER_ALLOWED` — the same tables the client checks against.

Delivery order (§3): every ``deliver`` frame leaves in ascending ``seq`` order. Live deliveries
wait while a replay from the store runs; one that skips a number still on its way (stored by
another writer a moment earlier) is held and a :class:`ReplayNeeded` event asks the I/O layer to
replay the stored queue after :attr:`~ServerSession.last_sent`. A delivery whose frame would be
over ``max_frame_bytes`` is never written (:class:`DeliverySkipped`): its number becomes a gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from tidings.protocol import limits
from tidings.protocol.codec import decode_client, encode, encode_deliver
from tidings.protocol.errors import MalformedFrame, ProtocolError, UnexpectedFrame
from tidings.protocol.frames import ClientFrame, Error, Frame
from tidings.protocol.state import CLIENT_ALLOWED, SERVER_ALLOWED, Phase, advance

__all__ = ["DeliverySkipped", "ReplayNeeded", "ServerSession", "SessionEvent"]


@dataclass(frozen=True, slots=True)
class ReplayNeeded:
    """A live delivery skipped a sequence number: read the stored queue after ``after``, feed
    it to :meth:`ServerSession.replay`, then call :meth:`ServerSession.end_replay`."""

    after: int


@dataclass(frozen=True, slots=True)
class DeliverySkipped:
    """A delivery was not written: its ``deliver`` frame would be ``size`` bytes, over the
    frame cap announced in ``welcome`` (a client would refuse it at every reconnect)."""

    seq: int
    size: int
    limit: int


SessionEvent: TypeAlias = ReplayNeeded | DeliverySkipped


class ServerSession:
    """Phase, delivery cursor and held deliveries of one device connection (see the module
    docstring). Starts in the handshake, replaying: deliveries are held until the first
    :meth:`end_replay`."""

    __slots__ = (
        "_events",
        "_held",
        "_out",
        "_replaying",
        "last_sent",
        "max_frame_bytes",
        "our_phase",
        "their_phase",
    )

    def __init__(self, *, max_frame_bytes: int = limits.MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.their_phase = Phase.HANDSHAKE
        self.our_phase = Phase.HANDSHAKE
        self.last_sent = 0
        """The highest ``seq`` written (or skipped) on this connection: the delivery cursor."""
        self._replaying = True
        self._held: list[tuple[int, bytes]] = []
        self._out: list[bytes] = []
        self._events: list[SessionEvent] = []

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes | str) -> ClientFrame:
        """Decode one WebSocket message from the client and check it against the phase table.

        Raises:
            ProtocolError: the message is not a frame the client may send now (§5, §9); its
                ``rid`` is set when it is a request whose id could be read. The client's side
                is closed after it: every later message is refused too.
        """
        try:
            if self.their_phase is Phase.CLOSED:
                raise UnexpectedFrame("the connection is closing; nothing more is read")
            if isinstance(data, str):
                raise MalformedFrame("frames are binary MessagePack, got a text message")
            frame = decode_client(data, max_size=self.max_frame_bytes)
            try:
                self.their_phase = advance(CLIENT_ALLOWED, self.their_phase, frame)
            except UnexpectedFrame as exc:
                exc.rid = getattr(frame, "rid", None)
                raise
        except ProtocolError:
            self.their_phase = Phase.CLOSED
            raise
        return frame

    # --- output ------------------------------------------------------------------------------

    def send(self, frame: Frame) -> bool:
        """Queue one frame for the client; False once our side is closed (after ``goaway``).

        Raises:
            UnexpectedFrame: the table does not let the server send ``frame`` now — a bug of
                the server (a ``deliver`` before ``welcome``), never of the client.
        """
        if self.our_phase is Phase.CLOSED:
            return False
        self.our_phase = advance(SERVER_ALLOWED, self.our_phase, frame)
        self._out.append(encode(frame))
        return True

    def send_encoded(self, data: bytes) -> bool:
        """Queue a frame encoded once for many sessions (``revoke``, ``inbox``): open phase
        only."""
        if self.our_phase is not Phase.OPEN:
            return False
        self._out.append(data)
        return True

    def error(self, code: str, message: str, rid: int | None = None) -> bool:
        """Queue an ``error`` frame; ``rid`` when it answers a request (§4)."""
        return self.send(Error(code=code, message=message[:500], rid=rid))

    def close(self) -> None:
        """Both sides are done: nothing more is read or sent, held deliveries are dropped
        (the device gets them when it resumes)."""
        self.their_phase = self.our_phase = Phase.CLOSED
        self._held.clear()

    def data_to_send(self) -> list[bytes]:
        """The binary messages to write, in order; each call returns only new ones."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SessionEvent]:
        """What the I/O layer must act on since the last call."""
        events, self._events = self._events, []
        return events

    # --- deliveries (§3) ---------------------------------------------------------------------

    def resume(self, after: int) -> None:
        """Start the replay of the stored queue after ``after`` (the device's ``resume``,
        bounded by what the store numbered): everything up to it counts as sent."""
        self.last_sent = max(self.last_sent, after)
        self._replaying = True

    def deliver(self, seq: int, msg_wire: bytes) -> bool:
        """A live delivery: queue it now if it is next in order; True when it was queued.

        Held while a replay runs; one that skips a number (another writer's delivery is
        still on its way) is held too, and a :class:`ReplayNeeded` event asks for a replay.
        """
        if self.our_phase is Phase.CLOSED:
            return False  # what it missed is replayed when the device resumes
        if self._replaying:  # from the start until the first replay ends, too
            self._held.append((seq, msg_wire))
            return False
        if seq > self.last_sent + 1:
            self._replaying = True
            self._held.append((seq, msg_wire))
            self._events.append(ReplayNeeded(after=self.last_sent))
            return False
        return self._queue_delivery(seq, msg_wire)

    def replay(self, seq: int, msg_wire: bytes) -> bool:
        """A delivery read back from the store during a replay (ascending ``seq``)."""
        if self.our_phase is not Phase.OPEN:
            return False
        return self._queue_delivery(seq, msg_wire)

    def end_replay(self) -> int:
        """The replay is done: queue the live deliveries held meanwhile, in order; how many.

        The replay read the store after they were committed, so it covered any gap before
        them; what is still missing was dropped (revoked, collapsed, expired) and is not waited
        for.
        """
        self._replaying = False
        held, self._held = sorted(self._held), []
        return sum(self._queue_delivery(seq, wire) for seq, wire in held)

    @property
    def replaying(self) -> bool:
        """True while live deliveries are held for a replay."""
        return self._replaying

    def _queue_delivery(self, seq: int, msg_wire: bytes) -> bool:
        if seq <= self.last_sent or self.our_phase is not Phase.OPEN:
            return False  # already sent by a replay, or closing
        frame = encode_deliver(seq, msg_wire)
        # The cursor moves either way: a skipped delivery is a gap like a revoked one (§3).
        self.last_sent = seq
        if len(frame) > self.max_frame_bytes:
            self._events.append(DeliverySkipped(seq, len(frame), self.max_frame_bytes))
            return False
        self._out.append(frame)
        return True
