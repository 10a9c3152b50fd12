"""The seam between deciding and delivering: what the campaign engine hands to the node.

The engine decides who gets which message and hands :class:`Outgoing` messages with the rest
of its decision (an :class:`~tidings.server.storage.Outcome`) to a :class:`Publisher`, which
stores them in one commit and fans out what the store accepted. The gateway node is the
publisher; tests may give the engine another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

import msgpack

from tidings.protocol.codec import encode_deliver, encode_message
from tidings.protocol.errors import InvalidField
from tidings.protocol.frames import Message
from tidings.server.storage import Committed, Outcome

__all__ = ["Outgoing", "Publisher", "as_inbox_only", "fit_frame"]

# The largest ``deliver`` frame around a message: the highest seq, and the live copy's sent_at.
_DELIVER_OVERHEAD = len(encode_deliver(2**63 - 1, b"")) + 9
_EMPTY: dict[str, Any] = {"title": "", "body": "", "image": None, "actions": (), "data": {}}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message, its encoded form (:func:`fit_frame`) and the (device, user key) pairs it
    goes to."""

    message: Message
    wire: bytes
    targets: tuple[tuple[str, str], ...]
    waiting: tuple[str, ...] = ()
    """User keys with no device yet whose inbox keeps the message for their first device."""


def as_inbox_only(wire: bytes) -> bytes:
    """The encoded message ``wire`` as kind ``inbox``: how an older inbox message goes to a
    device that did not hold it (never a banner; PROTOCOL.md §3, the user's inbox)."""
    body = msgpack.unpackb(wire, raw=False)
    if not isinstance(body, dict) or body.get("kind") == "inbox":
        return wire
    body["kind"] = "inbox"
    return cast(bytes, msgpack.packb(body, use_bin_type=True))


def fit_frame(message: Message, max_frame_bytes: int) -> bytes:
    """Encode ``message``, or refuse it if its ``deliver`` frame would pass the frame cap.

    A frame over the cap would be refused by every device, again at every reconnect, and
    wedge the queue behind it (PROTOCOL.md §7): nothing that large is ever stored.

    Raises:
        InvalidField: naming the field that takes the most room.
    """
    wire = encode_message(message)
    size = len(wire) + _DELIVER_OVERHEAD
    if size <= max_frame_bytes:
        return wire
    share = {
        name: len(wire) - len(encode_message(replace(message, **{name: empty})))
        for name, empty in _EMPTY.items()
    }
    field = max(share, key=lambda name: share[name])
    raise InvalidField(
        field,
        f"the message would be a {size:,}-byte deliver frame, over the {max_frame_bytes:,}-byte"
        f" frame cap (PROTOCOL.md §7); {field} takes {share[field]:,} bytes of it",
    )


class Publisher(Protocol):
    """Stores decided messages and gets them to devices, wherever those are connected."""

    async def publish(self, app: str, outgoing: Sequence[Outgoing], outcome: Outcome) -> Committed:
        """Store messages and outcome in one commit, then fan out what was accepted."""
        ...

    async def revoke(self, app: str, message_id: str) -> bool:
        """Revoke a stored message everywhere; False if it is unknown."""
        ...

    def withdraw(self, app: str, devices: Sequence[str], message_ids: Sequence[str]) -> None:
        """Tell connected devices to remove messages (already dropped from the store)."""
        ...
