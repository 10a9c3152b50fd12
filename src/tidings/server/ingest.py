"""What users do and say, stored first and then told to the campaign engine — one path.

Devices (through their connection) and the app's backend (through the admin API) report the
same things: behaviour events, profile attributes, consent, a device's hello, an erasure.
:class:`Ingest` is the one place that writes each to the store and then updates the live
profiles and tags (the engine's :class:`~tidings.server.targeting.Audience`) and runs the
engine's triggers, so the two entrances cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError
from tidings.protocol.frames import Event
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.changes import (
    AttrsChanged,
    CampaignChanged,
    Change,
    ConsentChanged,
    DeviceSeen,
    EventsStored,
    SettingsReplaced,
    TagRuleChanged,
    UserErased,
)
from tidings.server.config import AppConfig
from tidings.server.feed import Announce, alone
from tidings.server.storage import DeviceRow, IngestStore, anonymous_key

__all__ = ["SERVER_DEVICE", "EventQuota", "Ingest"]

SERVER_DEVICE = "~server"
"""The device id events from the app's backend are stored under (``POST /v1/events``); a
device's id never starts with ``~``."""


class EventQuota:
    """Events per minute per device and per app: token buckets a minute's quota deep.

    Kept in this process's memory, like the per-connection rate limit: each gateway process
    grants an app its quota of what it ingests itself. Buckets that have filled up again are
    forgotten, so idle devices cost nothing.
    """

    __slots__ = ("_buckets", "_clock", "_configs", "_prune_at")

    def __init__(
        self, apps: Sequence[AppConfig], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._configs = {a.id: a for a in apps}
        self._clock = clock
        self._buckets: dict[tuple[str, str | None], tuple[float, float]] = {}
        self._prune_at = _KEEP_BUCKETS  # look for full buckets once there are this many

    def take(self, app: str, device: str | None, n: int) -> None:
        """Take ``n`` events from the device's and the app's quota, or refuse them all.

        ``device`` None: the app's backend, which only the app's quota binds.

        Raises:
            TidingsError: ``rate_limited`` (temporary: the sender keeps the events and retries).
        """
        cfg = self._configs[app]
        now = self._clock()
        app_left = self._left((app, None), cfg.app_events_per_min, now)
        if device is not None:
            device_left = self._left((app, device), cfg.device_events_per_min, now)
            if n > device_left:
                raise _over(f"the device's quota of {cfg.device_events_per_min} events a minute")
        if n > app_left:
            raise _over(f"the app's quota of {cfg.app_events_per_min} events a minute")
        if device is not None:
            self._buckets[(app, device)] = (device_left - n, now)
        self._buckets[(app, None)] = (app_left - n, now)
        if len(self._buckets) > self._prune_at:
            self._forget_full(now)
            # Many devices in use at once stay: look again only once their number doubled,
            # not at every batch (a scan per batch would grow with the fleet).
            self._prune_at = max(_KEEP_BUCKETS, 2 * len(self._buckets))

    @property
    def tracked(self) -> int:
        """How many buckets are kept (devices that used some of their quota recently)."""
        return len(self._buckets)

    def _left(self, key: tuple[str, str | None], per_min: int, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(per_min), now))
        return min(float(per_min), tokens + (now - at) * per_min / 60)

    def _forget_full(self, now: float) -> None:
        for key, (tokens, at) in list(self._buckets.items()):
            cfg = self._configs[key[0]]
            per_min = cfg.device_events_per_min if key[1] is not None else cfg.app_events_per_min
            if tokens + (now - at) * per_min / 60 >= per_min:
                del self._buckets[key]


_KEEP_BUCKETS = 10_000  # past this many, the full ones are forgotten (see _prune_at)


def _over(what: str) -> TidingsError:
    return TidingsError(f"events: over {what}; keep them and retry later",
                        code=codes.ERR_RATE_LIMITED, temporary=True)  # fmt: skip


class Ingest:
    """Store first, then tell the engine: events, attributes, consent, devices, erasure."""

    __slots__ = ("announce", "clock", "engine", "quota", "store")

    def __init__(
        self,
        store: IngestStore,
        engine: CampaignEngine,
        clock: Callable[[], float],
        quota: EventQuota,
        announce: Announce = alone,
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.quota = quota
        self.announce = announce
        """Tells the other nodes of a cluster what changed (:meth:`apply` there)."""

    async def events(
        self, app: str, device: str | None, user_key: str, events: Sequence[Event]
    ) -> None:
        """Behaviour events of one user, from a device or (``device`` None) the app's backend.

        Raises:
            TidingsError: ``rate_limited`` over the device's or the app's event quota.
        """
        self.quota.take(app, device, len(events))
        stored_as = SERVER_DEVICE if device is None else device
        await self.store.insert_events(app, stored_as, user_key, events, self.clock(),
                                       registered=device is not None)  # fmt: skip
        fired = [(e.name, e.props, e.ts / 1000) for e in events]
        await self.engine.on_events(app, user_key, fired)
        await self.announce(EventsStored(app, user_key, fired))

    async def attributes(
        self, app: str, user_key: str, attrs: Mapping[str, Any], device: str | None = None
    ) -> None:
        """Merge attributes into a profile (``None`` removes one); creates the profile.

        ``device``: the device that sent them (None: the app's backend); refused with
        :class:`~tidings.server.errors.DeviceErased` once its user was erased.
        """
        if attrs:
            await self.store.merge_attrs(app, user_key, dict(attrs), self.clock(), device=device)
        self.engine.audience.on_attrs(app, user_key, attrs)
        await self.announce(AttrsChanged(app, user_key, dict(attrs)))

    async def consent(
        self,
        app: str,
        user_key: str,
        categories: Mapping[str, bool],
        device: str | None = None,
        *,
        field: str = "consent",
    ) -> None:
        """Record which categories of messages a user accepts (``device`` as in
        :meth:`attributes`).

        Raises:
            InvalidField: ``{field}.{category}`` for a category the app does not have (the
                message lists the ones it has); nothing is recorded.
        """
        policy = self.engine.policy(app)
        for category in categories:
            policy.check_category(category, f"{field}.{category}")
        await self.store.set_consent(app, user_key, dict(categories), self.clock(),
                                     device=device)  # fmt: skip
        self.engine.audience.on_consent(app, user_key, categories)
        await self.announce(ConsentChanged(app, user_key, dict(categories)))

    async def device(self, row: DeviceRow) -> DeviceRow:
        """A device said hello: record it (with its sequence state) and its facts."""
        stored = await self.store.upsert_device(row)
        facts = {"tz": row.tz, "locale": row.locale, "platform": row.platform,
                 "app_version": row.app_version}  # fmt: skip
        user_key = row.user_id or anonymous_key(row.device_id)
        self.engine.audience.on_device(row.app, user_key, **facts)
        await self.announce(DeviceSeen(row.app, user_key, facts))
        return stored

    async def erase(self, app: str, user_key: str) -> bool:
        """Erase a user everywhere; False if nothing was known about them."""
        known = await self.engine.erase(app, user_key)
        await self.announce(UserErased(app, user_key))
        return known

    async def apply(self, change: Change) -> None:
        """Apply a change another node of the cluster stored and announced.

        Profiles and tags follow; triggers do not run again (the node that took the events
        ran them), and campaigns and tag rules are read back from the store.
        """
        audience = self.engine.audience
        match change:
            case EventsStored(app, user, events):
                audience.on_events(app, user, events)
            case AttrsChanged(app, user, attrs):
                audience.on_attrs(app, user, attrs)
            case ConsentChanged(app, user, categories):
                audience.on_consent(app, user, categories)
            case DeviceSeen(app, user, facts):
                audience.on_device(app, user, **facts)
            case UserErased(app, user):
                audience.forget(app, user)
            case CampaignChanged(app, campaign):
                await self.engine.reload_campaign(app, campaign)
            case TagRuleChanged(app, rule):
                await audience.reload_tag_rule(app, rule)
            case SettingsReplaced(app):
                await self.engine.reload_settings(app)
