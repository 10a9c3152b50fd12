"""The outbox: what the device still has to tell the gateway, bounded, kept across restarts.

Entries are events and requests (identify, preferences, receipts, inbox changes) as plain
maps, numbered in the order they were queued; an entry leaves the outbox when the gateway
answers ``ok`` (it is stored) or refuses it for good. Every change is written to the device's
local store in the background, in order, so a restart brings back exactly what was queued.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from typing import Any

from tidings.client_sdk.store import LocalStore
from tidings.protocol import limits

__all__ = ["DEFAULT_MAX_OUTBOX", "Entry", "Outbox"]

DEFAULT_MAX_OUTBOX = 10_000
"""Entries kept offline; beyond it the oldest events are dropped first."""

Entry = dict[str, Any]
"""One queued report: ``{"k": "event" | "identify" | "prefs" | "receipt" | "inbox", ...}``."""

log = logging.getLogger("tidings.client")


class Outbox:
    """Queued reports in order, at most ``limit`` of them.

    Args:
        store: The device's local store (an in-memory one keeps nothing across restarts).
        limit: Entries kept; beyond it the oldest events go first, then the oldest entries.
        dropped: Called with how many entries the bound dropped.
    """

    def __init__(
        self, store: LocalStore, *, limit: int = DEFAULT_MAX_OUTBOX,
        dropped: Callable[[int], None] = lambda n: None,
    ) -> None:  # fmt: skip
        self.limit = limit
        self._store = store
        self._dropped = dropped
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._next = 1
        self._loaded = False  # writes wait until the last run's entries are read back
        self._writing: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry) -> None:
        """Queue ``entry`` last (the bound may drop older ones)."""
        entry_id = self._next
        self._next += 1
        self._entries[entry_id] = entry
        evicted = self._evict()
        # One commit adds the entry and deletes what the bound evicted, so a restart brings
        # back exactly what is queued now.
        self._write(lambda: self._store.outbox_add(entry_id, entry, evict=evicted))

    def load(self, stored: Iterable[tuple[int, Entry]]) -> None:
        """Put the entries of the last run before those queued since this outbox was made.

        Runs without awaiting, so nothing is queued between reading and merging.
        """
        stored = list(stored)
        early = list(self._entries.values())
        self._entries.clear()
        for entry_id, entry in stored:
            self._entries[entry_id] = entry
            self._next = max(self._next, entry_id + 1)
        for entry in early:  # numbered after the stored ones: ids are the order of sending
            self._entries[self._next] = entry
            self._next += 1
        stored_ids = {entry_id for entry_id, _ in stored}
        evicted = set(self._evict())  # the bound may be lower than in the last run
        self._loaded = True
        for entry_id, entry in self._entries.items():
            if entry_id not in stored_ids:
                self._write(functools.partial(self._store.outbox_add, entry_id, entry))
        gone = sorted(evicted & stored_ids)
        if gone:
            self._write(lambda: self._store.outbox_remove(gone))

    def remove(self, entry_ids: Collection[int]) -> list[tuple[int, Entry]]:
        """Take these entries out (answered, refused, or the user was erased); the ones that
        were still queued, in order."""
        gone = [(i, self._entries.pop(i)) for i in entry_ids if i in self._entries]
        if gone:
            self._write(lambda: self._store.outbox_remove([i for i, _ in gone]))
        return gone

    def clear(self) -> None:
        """Take every entry out."""
        self.remove(list(self._entries))

    def batches(self, in_flight: Collection[int]) -> Iterator[tuple[list[int], list[Entry]]]:
        """What to send now, in order, skipping entries already in flight: events together
        (at most :data:`~tidings.protocol.limits.MAX_EVENTS_PER_BATCH` a batch), every other
        entry alone. Yields ``(entry ids, entries)``."""
        events: tuple[list[int], list[Entry]] = ([], [])
        for entry_id, entry in list(self._entries.items()):
            if entry_id in in_flight:
                continue
            if entry["k"] != "event":
                yield [entry_id], [entry]
                continue
            events[0].append(entry_id)
            events[1].append(entry)
            if len(events[0]) == limits.MAX_EVENTS_PER_BATCH:
                yield events
                events = ([], [])
        if events[0]:
            yield events

    async def drained(self) -> None:
        """Wait for the last write to the local store; nothing is written after this."""
        if self._writing is not None:
            await self._writing
        self._loaded = False

    def _evict(self) -> list[int]:
        """Drop entries beyond the limit: the oldest events first, else the oldest entries."""
        excess = len(self._entries) - self.limit
        if excess <= 0:
            return []
        victims = [k for k, e in self._entries.items() if e["k"] == "event"][:excess]
        if len(victims) < excess:
            chosen = set(victims)
            victims += [k for k in self._entries if k not in chosen][: excess - len(victims)]
        for entry_id in victims:
            del self._entries[entry_id]
        self._dropped(len(victims))
        return victims

    def _write(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run a write to the local store after the writes queued before it.

        The caller never waits; writes keep their order (an add is never overtaken by the
        removal of the same entry) and :meth:`drained` waits for the last one.
        """
        if not (self._loaded and self._store.persistent):
            return
        previous = self._writing

        async def run() -> None:
            if previous is not None:
                await previous
            try:
                await write()
            except Exception:
                log.exception("tidings: writing the outbox to %s failed", self._store)

        self._writing = asyncio.get_running_loop().create_task(run())
