"""The seam between deciding and delivering: what the campaign engine hands to the node.

The engine decides who gets which message and hands :class:`Outgoing` messages with the rest
of its decision (an :class:`~tidings.server.storage.Outcome`) to a :class:`Publisher`, which
stores them in one commit and fans out what the store accepted. The gateway node is the
publisher; tests may give the engine another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tidings.protocol.frames import Message
from tidings.server.storage import Committed, Outcome

__all__ = ["Outgoing", "Publisher"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message and the (device, user key) pairs it goes to."""

    message: Message
    targets: tuple[tuple[str, str], ...]


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
