"""The broker: how a node's decisions reach the node that holds a device's connection.

The in-process broker hands everything straight to this process's hub. A multi-node broker
(Redis) implements the same three calls by routing on (app, device) → node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tidings.protocol.codec import encode
from tidings.protocol.frames import InboxState, Revoke
from tidings.server.hub import Hub

__all__ = ["Broker", "InProcessBroker"]


class Broker(Protocol):
    """Fan-out transport between nodes."""

    healthy: bool
    """False while the broker cannot reach the other nodes (local devices are still served)."""

    async def start(self) -> None:
        """Connect (raises if the broker is unreachable at start)."""
        ...

    async def stop(self) -> None:
        """Disconnect; this node's routes go away."""
        ...

    async def claim_device(self, app: str, device: str, epoch: int) -> bool:
        """A device's session of ``epoch`` (the store's, see ``DeviceRow.epoch``) is opening
        here: route it here and close any older session of it on another node. False when a
        newer session of the device holds the route already: this one must not open."""
        ...

    async def release_device(self, app: str, device: str, epoch: int) -> None:
        """A device's session of ``epoch`` here ended (its route goes only if still its own)."""
        ...

    def deliver(self, app: str, targets: Sequence[tuple[str, int]], msg_wire: bytes) -> int:
        """Push a message to devices as (device, seq); return how many were written here."""
        ...

    def revoke(self, app: str, devices: Sequence[str], message_ids: Sequence[str]) -> None:
        """Tell connected devices to remove messages."""
        ...

    def inbox(self, app: str, user_key: str, state: InboxState, exclude: str | None) -> None:
        """Push inbox state changes to a user's connected devices (except ``exclude``)."""
        ...


class InProcessBroker:
    """Broker for a single node: every device of interest is in this process's hub."""

    __slots__ = ("hub",)

    healthy = True

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def claim_device(self, app: str, device: str, epoch: int) -> bool:
        return True  # the hub replaces an older session of the device itself

    async def release_device(self, app: str, device: str, epoch: int) -> None:
        return None

    def deliver(self, app: str, targets: Sequence[tuple[str, int]], msg_wire: bytes) -> int:
        written = 0
        get = self.hub.get
        for device, seq in targets:
            session = get(app, device)
            if session is not None and session.push_delivery(seq, msg_wire):
                written += 1
        return written

    def revoke(self, app: str, devices: Sequence[str], message_ids: Sequence[str]) -> None:
        frame = encode(Revoke(ids=tuple(message_ids)))
        for device in devices:
            session = self.hub.get(app, device)
            if session is not None:
                session.write(frame)

    def inbox(self, app: str, user_key: str, state: InboxState, exclude: str | None) -> None:
        self.inbox_frame(app, user_key, encode(state), exclude)

    def inbox_frame(self, app: str, user_key: str, frame: bytes, exclude: str | None) -> None:
        """Write an encoded ``inbox`` frame to the user's devices here (except ``exclude``)."""
        for session in self.hub.sessions_of_user(app, user_key):
            if session.device != exclude:
                session.write(frame)
