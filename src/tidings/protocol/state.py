"""What frame may follow what: the one table (PROTOCOL.md §2, Phases, writes it out).

Both peers move through the same three phases. The gateway checks client frames against
``CLIENT_ALLOWED`` and its own against ``SERVER_ALLOWED``
(:class:`~tidings.protocol.session.ServerSession`); the SDK checks server frames against
``SERVER_ALLOWED``. A frame outside the table for the current phase is a protocol violation
(:class:`UnexpectedFrame`).
"""

from __future__ import annotations

import enum

from tidings.protocol.errors import UnexpectedFrame
from tidings.protocol.frames import (
    Ack,
    Deliver,
    Error,
    Events,
    Frame,
    GoAway,
    Hello,
    Identify,
    InboxState,
    InboxUpdate,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Revoke,
    Welcome,
)

__all__ = ["CLIENT_ALLOWED", "SERVER_ALLOWED", "Phase", "advance"]


class Phase(enum.Enum):
    """Phase of one connection, the same on both sides."""

    HANDSHAKE = "handshake"  # before hello (server) / before welcome (client)
    OPEN = "open"  # session established
    CLOSED = "closed"  # goaway or close seen: nothing more is processed


_OPEN_CLIENT: frozenset[type[Frame]] = frozenset(
    {Events, Identify, Ack, Receipt, InboxUpdate, Prefs, Ping, Pong}
)
_OPEN_SERVER: frozenset[type[Frame]] = frozenset(
    {Deliver, Ok, Error, Revoke, InboxState, GoAway, Ping, Pong}
)

CLIENT_ALLOWED: dict[Phase, dict[type[Frame], Phase]] = {
    Phase.HANDSHAKE: {Hello: Phase.OPEN},
    Phase.OPEN: {f: Phase.OPEN for f in _OPEN_CLIENT},
    Phase.CLOSED: {},
}
"""For each phase, the client frames the server accepts and the phase each one leads to."""

SERVER_ALLOWED: dict[Phase, dict[type[Frame], Phase]] = {
    Phase.HANDSHAKE: {Welcome: Phase.OPEN, Error: Phase.HANDSHAKE, GoAway: Phase.CLOSED},
    Phase.OPEN: {**{f: Phase.OPEN for f in _OPEN_SERVER}, GoAway: Phase.CLOSED},
    Phase.CLOSED: {},
}
"""For each phase, the server frames the client accepts and the phase each one leads to."""


def advance(table: dict[Phase, dict[type[Frame], Phase]], phase: Phase, frame: Frame) -> Phase:
    """Return the phase after ``frame`` arrives in ``phase``.

    Raises:
        UnexpectedFrame: the table does not allow this frame in this phase.
    """
    following = table[phase].get(type(frame))
    if following is None:
        raise UnexpectedFrame(f"t: {frame.TYPE!r} is not allowed in phase {phase.value!r}")
    return following
