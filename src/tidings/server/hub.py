"""The hub: this process's live sessions, by device and by user."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.server.gateway.connection import Session

__all__ = ["Hub"]


class Hub:
    """Registry of live sessions: (app, device) → session, (app, user key) → devices."""

    __slots__ = ("_by_device", "_by_user")

    def __init__(self) -> None:
        self._by_device: dict[tuple[str, str], Session] = {}
        self._by_user: dict[tuple[str, str], set[str]] = {}

    def add(self, session: Session) -> Session | None:
        """Register a session; return the one it replaces for the same device, if any."""
        key = (session.app, session.device)
        old = self._by_device.get(key)
        self._by_device[key] = session
        self._by_user.setdefault((session.app, session.user_key), set()).add(session.device)
        if old is not None and old.user_key != session.user_key:
            self._drop_user_link(old)
        return old

    def remove(self, session: Session) -> None:
        """Unregister a session, unless a newer one already replaced it."""
        key = (session.app, session.device)
        if self._by_device.get(key) is session:
            del self._by_device[key]
            self._drop_user_link(session)

    def _drop_user_link(self, session: Session) -> None:
        ukey = (session.app, session.user_key)
        devices = self._by_user.get(ukey)
        if devices is not None:
            devices.discard(session.device)
            if not devices:
                del self._by_user[ukey]

    def get(self, app: str, device: str) -> Session | None:
        """The live session of a device, or None."""
        return self._by_device.get((app, device))

    def sessions_of_user(self, app: str, user_key: str) -> list[Session]:
        """Live sessions of every device of a user."""
        devices = self._by_user.get((app, user_key), ())
        return [s for d in devices if (s := self._by_device.get((app, d))) is not None]

    def all(self) -> list[Session]:
        """Every live session (for shutdown)."""
        return list(self._by_device.values())

    def count(self, app: str | None = None) -> int:
        """Number of live sessions, for one app or all."""
        if app is None:
            return len(self._by_device)
        return sum(1 for a, _ in self._by_device if a == app)
