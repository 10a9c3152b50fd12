"""What users do and say, stored first and then told to the campaign engine — one path.

Devices (through their connection) and the app's backend (through the admin API) report the
same things: behaviour events, profile attributes, consent, a device's hello, an erasure.
:class:`Ingest` is the one place that writes each to the store and then updates the live
profiles and tags (the engine's :class:`~tidings.server.targeting.Audience`) and runs the
engine's triggers, so the two entrances cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tidings.protocol.frames import Event
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.storage import DeviceRow, Store, anonymous_key

__all__ = ["Ingest"]


class Ingest:
    """Store first, then tell the engine: events, attributes, consent, devices, erasure."""

    __slots__ = ("clock", "engine", "store")

    def __init__(self, store: Store, engine: CampaignEngine, clock: Callable[[], float]) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock

    async def events(self, app: str, device: str, user_key: str, events: Sequence[Event]) -> None:
        """Behaviour events of one user (from a device, or the backend's pseudo-device)."""
        await self.store.insert_events(app, device, user_key, events, self.clock())
        await self.engine.on_events(app, user_key, [(e.name, e.props, e.ts / 1000) for e in events])

    async def attributes(self, app: str, user_key: str, attrs: Mapping[str, Any]) -> None:
        """Merge attributes into a profile (``None`` removes one); creates the profile."""
        if attrs:
            await self.store.merge_attrs(app, user_key, dict(attrs), self.clock())
        self.engine.audience.on_attrs(app, user_key, attrs)

    async def consent(self, app: str, user_key: str, categories: Mapping[str, bool]) -> None:
        """Record which categories of messages a user accepts."""
        await self.store.set_consent(app, user_key, dict(categories), self.clock())
        self.engine.audience.on_consent(app, user_key, categories)

    async def device(self, row: DeviceRow) -> DeviceRow:
        """A device said hello: record it (with its sequence state) and its facts."""
        stored = await self.store.upsert_device(row)
        self.engine.audience.on_device(
            row.app,
            row.user_id or anonymous_key(row.device_id),
            tz=row.tz,
            locale=row.locale,
            platform=row.platform,
            app_version=row.app_version,
        )
        return stored

    async def erase(self, app: str, user_key: str) -> bool:
        """Erase a user everywhere; False if nothing was known about them."""
        return await self.engine.erase(app, user_key)
