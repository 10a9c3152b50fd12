"""Both sides of one connection, sans I/O (PROTOCOL.md §2, §3, §4).

Shaped like websockets' ``Protocol`` and h11's ``Connection``: no sockets, no tasks, no clock.
:class:`ServerSession` is the gateway's side, :class:`ClientSession` the device's.

Server side: the I/O layer feeds :meth:`ServerSession.receive` each WebSocket message and gets
a frame back (or a :class:`~tidings.protocol.errors.ProtocolError` naming what was wrong, with
the request's ``rid`` when it could be read); it hands deliveries to
:meth:`~ServerSession.deliver` and :meth:`~ServerSession.replay`, writes what
:meth:`~ServerSession.data_to_send` returns, and acts on :meth:`~ServerSession.events_received`.

Two phases are tracked, as h11 tracks both roles: ``their_phase`` moves on the peer's frames,
``our_phase`` on ours, through :data:`~tidings.protocol.state.CLIENT_ALLOWED` and
:data:`~tidings.protocol.state.SERVER_ALLOWED` — the same tables on both sides.

Delivery order (§3): every ``deliver`` frame leaves in ascending ``seq`` order. Live deliveries
wait while a replay from the store runs; one that skips a number still on its way (stored by
another writer a moment earlier) is held and a :class:`ReplayNeeded` event asks the I/O layer to
replay the stored queue after :attr:`~ServerSession.last_sent`. A delivery whose frame would be
over ``max_frame_bytes`` is never written (:class:`DeliverySkipped`): its number becomes a gap.

Client side: one :class:`ClientSession` lives as long as the device's client and spans its
connections; the phases are per connection (:meth:`~ClientSession.connect` …
:meth:`~ClientSession.connection_lost`). It numbers requests and matches each ``ok``/``error`` to
what its ``rid`` carried (§4), drops deliveries already received (by ``seq``) and marks those
whose message was already seen (by ``id``), and keeps the delivery cursor: the highest ``seq``
below which every delivery was processed, sent as ``hello.resume`` and ``ack`` (§2, §3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from tidings.protocol import limits
from tidings.protocol.codec import decode_client, decode_server, encode, encode_deliver
from tidings.protocol.errors import MalformedFrame, ProtocolError, UnexpectedFrame, UnknownFrame
from tidings.protocol.frames import (
    Ack,
    ClientFrame,
    Deliver,
    DeviceInfo,
    Error,
    Events,
    Frame,
    GoAway,
    Hello,
    Identify,
    InboxState,
    InboxUpdate,
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Revoke,
    Welcome,
)
from tidings.protocol.state import CLIENT_ALLOWED, SERVER_ALLOWED, Phase, advance

__all__ = [
    "ClientEvent",
    "ClientSession",
    "Delivery",
    "DeliverySkipped",
    "HelloRefused",
    "ReplayNeeded",
    "Request",
    "RequestAnswered",
    "RequestFailed",
    "ServerSession",
    "SessionEvent",
]


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


# --- the client's side ---------------------------------------------------------------------------

Request: TypeAlias = Events | Identify | Receipt | InboxUpdate | Prefs
"""The client frames that carry a ``rid`` and are answered by ``ok`` or ``error`` (§4)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A ``deliver`` frame not received before (by ``seq``): unless ``duplicate`` (its message
    ``id`` was already seen), record and show ``msg``; then call
    :meth:`ClientSession.processed` with ``seq`` either way (§3)."""

    seq: int
    msg: Message
    duplicate: bool


@dataclass(frozen=True, slots=True)
class RequestAnswered:
    """``ok {rid}``: what that request carried (``entries``, the caller's ids) is stored."""

    rid: int
    entries: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """``error`` in the open phase; ``entries`` are what its ``rid`` carried (none when the
    error answers no request of this connection, §4). The request is out of flight again."""

    error: Error
    entries: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HelloRefused:
    """``error`` instead of ``welcome``: the gateway closes next, and its close code says
    whether to come back (§2, §10)."""

    error: Error


ClientEvent: TypeAlias = (
    Welcome
    | Delivery
    | RequestAnswered
    | RequestFailed
    | HelloRefused
    | Revoke
    | InboxState
    | GoAway
)
"""What :meth:`ClientSession.receive` hands up; ``ping``/``pong`` never reach the caller."""


class ClientSession:
    """A device's protocol state across its connections (see the module docstring).

    Args:
        cursor: The ``seq`` processed before this client started (the stored cursor).
        inbox_ver: The inbox version applied before this client started.
        seen: Whether a message ``id`` was already recorded (the durable de-duplication,
            §3); deliveries handed up but not yet processed count as seen too.
        max_frame_bytes: Larger server frames are refused (:class:`FrameTooLarge`).
    """

    __slots__ = (
        "_entries",
        "_high",
        "_out",
        "_pending",
        "_rid",
        "_seen",
        "acked",
        "cursor",
        "inbox_ver",
        "max_frame_bytes",
        "our_phase",
        "their_phase",
    )

    def __init__(
        self,
        *,
        cursor: int = 0,
        inbox_ver: int = 0,
        seen: Callable[[str], bool] | None = None,
        max_frame_bytes: int = limits.MAX_FRAME_BYTES,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.their_phase = self.our_phase = Phase.CLOSED  # no connection yet
        self.cursor = cursor
        """Every delivery up to this ``seq`` was processed: ``hello.resume`` and ``ack``."""
        self.acked = cursor
        """The highest ``seq`` the server was told about (``ack`` or ``hello.resume``)."""
        self.inbox_ver = inbox_ver
        """The highest inbox state version applied: ``hello.inbox_ver``."""
        self._seen = seen or (lambda _id: False)
        self._high = cursor  # the highest seq received: anything at or below it is a repeat
        self._pending: dict[int, tuple[str, bool]] = {}  # seq -> (message id, processed)
        self._rid = 0
        self._entries: dict[int, tuple[int, ...]] = {}  # rid -> entries, this connection
        self._out: list[bytes] = []

    # --- connection --------------------------------------------------------------------------

    def connect(self, token: str, device: DeviceInfo) -> None:
        """A new connection is up: queue its ``hello``, resuming from the cursor (§2, §12).

        The server takes ``resume`` as an ack of everything up to it (§2.5).
        """
        self.their_phase = self.our_phase = Phase.HANDSHAKE
        self._entries.clear()
        self._out.clear()
        # What was handed up and never processed comes again from ``resume``, to be handed up
        # again (as a duplicate once its id was recorded): the cursor never sticks behind it.
        self._pending.clear()
        self._high = self.cursor
        self.acked = max(self.acked, self.cursor)
        self._send(Hello(token=token, device=device, resume=self.cursor,
                         inbox_ver=self.inbox_ver))  # fmt: skip

    def connection_lost(self) -> None:
        """The connection ended: nothing more is read or sent on it, and every request in
        flight is unanswered (its entries are sent again on the next connection, §4, §12)."""
        self.their_phase = self.our_phase = Phase.CLOSED
        self._entries.clear()
        self._out.clear()

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes | str) -> ClientEvent | None:
        """Decode one WebSocket message from the server and check it against the phase table.

        Answers ``ping`` with ``pong`` (in :meth:`data_to_send`). Returns None for what the
        caller need not act on: ``ping``, ``pong``, an ``ok`` for no request in flight, and a
        ``deliver`` whose ``seq`` was received before (§3: the server never sends a lower
        ``seq`` after a higher one, and ``resume`` acknowledged the rest).

        Raises:
            ProtocolError: the message is not a frame the server may send now (§2 Phases,
                :class:`UnexpectedFrame`; §6). The server's side is closed after it.
        """
        try:
            if isinstance(data, str):
                raise MalformedFrame("frames are binary MessagePack, got a text message")
            frame = decode_server(data, max_size=self.max_frame_bytes)
            before = self.their_phase
            self.their_phase = advance(SERVER_ALLOWED, before, frame)
        except UnknownFrame:
            return None  # §6: a frame type of a later version is skipped, never a reason to close
        except ProtocolError:
            self.their_phase = Phase.CLOSED
            raise
        if isinstance(frame, Deliver):
            return self._deliver(frame)
        if isinstance(frame, Ok):
            entries = self._entries.pop(frame.rid, None)
            return None if entries is None else RequestAnswered(frame.rid, entries)
        if isinstance(frame, Error):
            if before is Phase.HANDSHAKE:
                return HelloRefused(frame)
            rid = frame.rid
            return RequestFailed(frame, self._entries.pop(rid, ()) if rid is not None else ())
        if isinstance(frame, Ping):
            self._send(Pong(ts=frame.ts))
            return None
        if isinstance(frame, Pong):
            return None
        return frame  # welcome, revoke, inbox, goaway

    def _deliver(self, frame: Deliver) -> Delivery | None:
        if frame.seq <= self._high:
            return None
        self._high = frame.seq
        msg_id = frame.msg.id
        duplicate = self._seen(msg_id) or any(i == msg_id for i, _ in self._pending.values())
        self._pending[frame.seq] = (msg_id, False)
        return Delivery(frame.seq, frame.msg, duplicate)

    # --- state the caller reports ------------------------------------------------------------

    def processed(self, seq: int) -> int:
        """The delivery ``seq`` is durably recorded (or was a duplicate); return the cursor.

        The cursor moves to the highest ``seq`` below which every delivery handed up was
        processed, so an ``ack`` never covers one still being recorded (§3).
        """
        if seq in self._pending:
            self._pending[seq] = (self._pending[seq][0], True)
            for pending, (_, done) in sorted(self._pending.items()):
                if not done:
                    break
                del self._pending[pending]
                self.cursor = max(self.cursor, pending)
        return self.cursor

    def inbox_applied(self, ver: int) -> int:
        """An ``inbox`` frame's changes were applied; return the inbox version to resume at."""
        self.inbox_ver = max(self.inbox_ver, ver)
        return self.inbox_ver

    # --- output ------------------------------------------------------------------------------

    def send_request(self, make: Callable[[int], Request], entries: Iterable[int]) -> int | None:
        """Queue the request ``make(rid)`` under a fresh ``rid`` carrying ``entries`` (the
        caller's ids, handed back by the answer); return the rid, or None without a
        connection.

        Rids keep growing across connections, so an answer is never matched to a request of
        another connection: after a reconnect, what was in flight is sent again under new rids.
        """
        if self.our_phase is Phase.CLOSED:
            return None
        self._rid += 1
        rid = self._rid
        self._send(make(rid))
        self._entries[rid] = tuple(entries)
        return rid

    def in_flight(self) -> set[int]:
        """The entries of every request sent on this connection and not yet answered."""
        return {e for entries in self._entries.values() for e in entries}

    def ack(self) -> bool:
        """Queue ``ack`` for the cursor if the server has not been told about it; True if
        queued (§3: acks may be batched)."""
        if self.cursor <= self.acked or self.our_phase is not Phase.OPEN:
            return False
        self._send(Ack(seq=self.cursor))
        self.acked = self.cursor
        return True

    def data_to_send(self) -> list[bytes]:
        """The binary messages to write, in order; each call returns only new ones."""
        out, self._out = self._out, []
        return out

    def _send(self, frame: ClientFrame) -> None:
        self.our_phase = advance(CLIENT_ALLOWED, self.our_phase, frame)
        self._out.append(encode(frame))
