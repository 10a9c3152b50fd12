"""The seam between deciding and delivering: what the campaign engine hands to the node.

The engine decides who gets which message and hands :class:`Outgoing` messages with the rest
of its decision (an :class:`~tidings.server.storage.Outcome`) to a :class:`Publisher`, which
stores them in one commit and fans out what the store accepted. The gateway node is the
publisher; tests may give the engine another.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

import msgpack

from tidings.protocol import kinds
from tidings.protocol.codec import encode_deliver, encode_message
from tidings.protocol.errors import InvalidField
from tidings.protocol.frames import Action, Message
from tidings.server.storage import Committed, Outcome

__all__ = [
    "Outgoing",
    "Publisher",
    "Routes",
    "as_inbox_only",
    "fit_frame",
    "new_message",
    "route",
]

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


def new_message(
    *,
    kind: str,
    title: str,
    body: str,
    now: float,
    ttl_s: int | None,
    ttls: tuple[int, int],
    category: str = "marketing",
    priority: str = "normal",
    campaign: str | None = None,
    variant: str | None = None,
    collapse_key: str | None = None,
    image: str | None = None,
    actions: Sequence[Action] = (),
    data: Mapping[str, Any] | None = None,
    expire_after_read: bool = False,
) -> Message:
    """A new message with its id and times: the one way direct sends and campaigns make one.

    ``ttl_s``: the sender's lifetime in seconds, or None for the app's default for the kind,
    ``ttls`` = (banner, inbox) seconds: a kind kept in the inbox lives as long as the inbox's,
    the others as long as a banner (:attr:`KindRules.short_lived
    <tidings.protocol.kinds.KindRules.short_lived>`). A default lifetime of a short-lived kind
    is marked ``ttl_default``: a device holding it for quiet hours counts it from their end.
    """
    short_lived = kinds.rules(kind).short_lived
    ttl = ttl_s if ttl_s is not None else ttls[0] if short_lived else ttls[1]
    return Message(
        id=uuid.uuid4().hex,
        kind=kind,  # type: ignore[arg-type]
        title=title,
        body=body,
        category=category,
        priority=priority,  # type: ignore[arg-type]
        created_at=int(now * 1000),
        expires_at=int((now + ttl) * 1000),
        campaign=campaign,
        variant=variant,
        collapse_key=collapse_key,
        image=image,
        actions=tuple(actions),
        data=dict(data or {}),
        expire_after_read=expire_after_read,
        ttl_default=ttl_s is None and short_lived,
    )


@dataclass(frozen=True, slots=True)
class Routes:
    """Where one message goes (:func:`route`)."""

    targets: tuple[tuple[str, str], ...]
    """(device, user key) of every device that receives it now or when it comes back."""
    waiting: tuple[str, ...]
    """Users with no device yet whose inbox keeps it for their first device."""
    no_device: tuple[str, ...]
    """Users with no device, skipped: the kind shows only on a device (``no_device``)."""


def route(kind: str, users: Sequence[str], devices: Mapping[str, Sequence[str]]) -> Routes:
    """Where a message of ``kind`` to ``users`` goes, given each user's known ``devices``.

    The one rule for direct sends and campaigns: a user's every device receives it; a user
    with none keeps it in their inbox if the kind is kept there, and is skipped otherwise.
    """
    targets: list[tuple[str, str]] = []
    waiting: list[str] = []
    skipped: list[str] = []
    needs_device = kinds.rules(kind).needs_device
    for user in dict.fromkeys(users):
        mine = devices.get(user, ())
        if mine:
            targets += [(d, user) for d in mine]
        elif needs_device:
            skipped.append(user)
        else:
            waiting.append(user)
    return Routes(tuple(targets), tuple(waiting), tuple(skipped))


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
