"""The local inbox: newest first, bounded, read/unread/delete/snooze, synced with the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from tidings.client_sdk.store import LocalStore
from tidings.protocol import kinds
from tidings.protocol.frames import Action, InboxChange, Message

__all__ = ["DEFAULT_INBOX_LIMIT", "Inbox", "InboxItem"]

DEFAULT_INBOX_LIMIT = 200
"""Items kept; the oldest is evicted when a new one arrives."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxItem:
    """One message as the device holds it. Times are Unix seconds."""

    id: str
    kind: str
    title: str
    body: str
    category: str = "marketing"
    priority: str = "normal"
    image: str | None = None
    actions: tuple[Action, ...] = ()
    data: dict[str, Any] | None = None
    campaign: str | None = None
    variant: str | None = None
    collapse_key: str | None = None
    created_at: float = 0.0
    expires_at: float = 0.0
    sent_at: float = 0.0
    received_at: float = 0.0
    read: bool = False
    snoozed_until: float = 0.0
    expire_after_read: bool = False
    held: bool = False  # a banner waiting for quiet hours or caps to end

    @classmethod
    def from_message(cls, msg: Message, received_at: float, *, held: bool = False) -> InboxItem:
        return cls(
            id=msg.id,
            kind=msg.kind,
            title=msg.title,
            body=msg.body,
            category=msg.category,
            priority=msg.priority,
            image=msg.image,
            actions=msg.actions,
            data=dict(msg.data),
            campaign=msg.campaign,
            variant=msg.variant,
            collapse_key=msg.collapse_key,
            created_at=msg.created_at / 1000,
            expires_at=msg.expires_at / 1000,
            sent_at=msg.sent_at / 1000,
            received_at=received_at,
            expire_after_read=msg.expire_after_read,
            held=held,
        )

    def to_message(self) -> Message:
        """The message this item came from (for the banner policy)."""
        return Message(
            id=self.id, kind=self.kind, title=self.title, body=self.body,  # type: ignore[arg-type]
            category=self.category, priority=self.priority,  # type: ignore[arg-type]
            created_at=int(self.created_at * 1000), expires_at=int(self.expires_at * 1000),
            collapse_key=self.collapse_key,
        )  # fmt: skip

    def expired(self, now: float) -> bool:
        return bool(self.expires_at) and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["actions"] = [a.to_wire() for a in self.actions]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InboxItem:
        actions = tuple(Action(**a) for a in d.pop("actions", []))
        return cls(**d, actions=actions)


class Inbox:
    """The device's inbox. Read it with :meth:`items`; change it with the async methods."""

    def __init__(
        self,
        store: LocalStore,
        *,
        now: Callable[[], float],
        changed: Callable[[], None],
        report: Callable[[InboxChange], None],
        limit: int = DEFAULT_INBOX_LIMIT,
    ) -> None:
        """
        Args:
            store: Where items are kept across restarts.
            now: The device clock (Unix seconds).
            changed: Called after every change (the app's ``on_inbox_change``).
            report: Sends a change the user made here to the server (read, unread, deleted).
            limit: Items kept; the oldest is evicted when a new one arrives.
        """
        self._store = store
        self._now = now
        self._changed = changed
        self._report = report
        self._items: dict[str, InboxItem] = {}
        self.limit = limit

    # --- reading ------------------------------------------------------------------------------

    def items(self) -> list[InboxItem]:
        """Visible items, newest first: not expired, not snoozed, only kinds kept in the inbox
        (not banner-only or modal)."""
        now = self._now()
        return sorted(
            (
                i
                for i in self._items.values()
                if kinds.rules(i.kind).inbox
                and not i.expired(now)
                and i.snoozed_until <= now
                and not (i.read and i.expire_after_read)
            ),
            key=lambda i: (i.created_at, i.id),
            reverse=True,
        )

    @property
    def unread_count(self) -> int:
        """How many visible items are unread."""
        return sum(1 for i in self.items() if not i.read)

    def get(self, item_id: str) -> InboxItem | None:
        """An item by id (visible or not), or None."""
        return self._items.get(item_id)

    # --- changing -----------------------------------------------------------------------------

    async def mark_read(self, item_id: str) -> None:
        """Mark read here and on the user's other devices."""
        await self._change(item_id, "read")

    async def mark_unread(self, item_id: str) -> None:
        """Mark unread here and on the user's other devices."""
        await self._change(item_id, "unread")

    async def delete(self, item_id: str) -> None:
        """Delete here and on the user's other devices."""
        await self._change(item_id, "deleted")

    async def snooze(self, item_id: str, until: float) -> None:
        """Hide an item until ``until`` (Unix seconds); local to this device."""
        item = self._items.get(item_id)
        if item is not None:
            await self._put(replace(item, snoozed_until=until))
            self._changed()

    async def _change(self, item_id: str, state: str) -> None:
        change = InboxChange(id=item_id, state=state)  # type: ignore[arg-type]
        if await self.apply(change):
            self._report(change)

    # --- used by the client -------------------------------------------------------------------

    async def apply(self, change: InboxChange) -> bool:
        """Apply a state change (local or from the server); True if anything changed."""
        item = self._items.get(change.id)
        if item is None:
            return False
        if change.state == "deleted":
            await self.remove(change.id)
            return True
        read = change.state == "read"
        if item.read == read and not item.held:
            return False
        await self._put(replace(item, read=read, held=False if read else item.held))
        self._changed()
        return True

    async def add(self, item: InboxItem) -> None:
        """Store a new item; a collapse key replaces the older item with the same key."""
        if item.collapse_key is not None:
            for old in [i for i in self._items.values() if i.collapse_key == item.collapse_key]:
                await self.remove(old.id, notify=False)
        await self._put(item)
        if len(self._items) > self.limit:
            oldest = min(self._items.values(), key=lambda i: (i.created_at, i.id))
            await self.remove(oldest.id, notify=False)
        self._changed()

    async def remove(self, item_id: str, *, notify: bool = True) -> bool:
        if self._items.pop(item_id, None) is None:
            return False
        await self._store.delete_item(item_id)
        if notify:
            self._changed()
        return True

    async def _put(self, item: InboxItem) -> None:
        self._items[item.id] = item
        if self._store.persistent:  # in memory, the dict above is the store
            await self._store.save_item(item.id, item.to_json())

    def _load(self, items: list[InboxItem]) -> None:
        self._items = {i.id: i for i in items}

    def held(self) -> list[InboxItem]:
        return [i for i in self._items.values() if i.held]

    async def set_held(self, item_id: str, held: bool) -> None:
        item = self._items.get(item_id)
        if item is not None and item.held != held:
            await self._put(replace(item, held=held))
