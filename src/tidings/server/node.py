"""The gateway node: hub + broker + store, and the operations the admin API calls.

A node owns this process's live sessions (:class:`~tidings.server.hub.Hub`, fed by
:class:`~tidings.server.gateway.sessions.Sessions` behind the WebSocket server it starts), a
:class:`~tidings.server.broker.Broker` that routes deliveries to the node holding a device, and a
:class:`~tidings.server.storage.Store`. Sends are durable before they are fanned out: the message
and every per-device delivery are group-committed, then written to connected devices without
waiting on any of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.server import Server

from tidings.protocol import codes
from tidings.protocol.codec import encode_message
from tidings.protocol.errors import ConfigError, InvalidField, TidingsError
from tidings.protocol.frames import (
    Action,
    Kind,
    Message,
)
from tidings.protocol.simtime import SimTime
from tidings.server.broker import Broker, InProcessBroker
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.changes import Change, UserErased
from tidings.server.config import GatewayConfig
from tidings.server.delivery import Outgoing, fit_frame, new_message, route
from tidings.server.errors import SettingsChanged
from tidings.server.feed import Announce, Feed, alone
from tidings.server.gateway.server import start_server
from tidings.server.gateway.sessions import Sessions
from tidings.server.hub import Hub
from tidings.server.ingest import EventQuota, Ingest
from tidings.server.metrics import Metrics
from tidings.server.storage import (
    Committed,
    Outcome,
    OutMessage,
    SendRow,
    SqliteStore,
    Store,
)
from tidings.server.storewatch import StoreWatch
from tidings.server.targeting.profiles import TRANSACTIONAL

__all__ = ["Node", "Outgoing", "SendRequest", "SendResult"]

log = logging.getLogger(__name__)

_NOTHING_ELSE = Outcome()


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    """A direct send to users and/or devices of one app (validated by the caller)."""

    app: str
    users: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    kind: Kind = "both"
    title: str = ""
    body: str = ""
    category: str = "marketing"  # marketing, transactional or one of the app's own
    priority: Literal["normal", "urgent"] = "normal"
    ttl: int | None = None  # seconds; None = the app's default for the kind
    collapse_key: str | None = None
    image: str | None = None
    actions: tuple[Action, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    expire_after_read: bool = False
    campaign: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a send did, once every delivery is durably stored."""

    message_id: str
    devices: int  # device deliveries queued
    users: int  # distinct users reached on a device
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> users, e.g. capped_tier
    no_device: int = 0  # users with no device yet whose inbox keeps it for their first device


class Node:
    """One gateway process: device WebSocket server, hub, broker and store."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] | None = None,
        store: Store | None = None,
        broker: Broker | None = None,
        sim_clock: SimTime | None = None,
    ) -> None:
        self._config = config
        if sim_clock is None and config.clock == "simulated":
            sim_clock = SimTime()
        self.sim_clock = sim_clock
        """The simulated clock this node runs on (``clock = "simulated"``), else None."""
        self.clock = clock or (sim_clock.now if sim_clock is not None else time.time)
        self.hub = Hub()
        self.node_id = config.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.store: Store = store or _open_store(config)
        self.broker: Broker = broker or _open_broker(config, self.hub, self.node_id, self._rejoin)
        self.metrics = Metrics()
        self.feed: Feed | None = None
        """The change feed to the other nodes of a cluster (None: a single node)."""
        announce: Announce = alone
        if not isinstance(self.broker, InProcessBroker):
            self.feed = Feed(self.store, self.node_id, apply=self._on_change,
                             resync=lambda: self.engine.resync())  # fmt: skip
            announce = self.feed.announce
        self.engine = CampaignEngine(
            store=self.store,
            publisher=self,
            apps=config.apps,
            clock=self._now,
            max_frame_bytes=config.max_frame_bytes,
            announce=announce,
            catch_up=None if self.feed is None else self.feed.catch_up,
            timer=sim_clock,
        )
        self.ingest = Ingest(self.store, self.engine, self._now, EventQuota(config.apps), announce)
        self.store_watch: StoreWatch | None = None
        """Whether a networked store answers now (None for SQLite, which is local)."""
        if not isinstance(self.store, SqliteStore):
            self.store_watch = StoreWatch(self.store)
        self.sessions = Sessions(
            config, clock=self._now, store=self.store, hub=self.hub, broker=self.broker,
            ingest=self.ingest, metrics=self.metrics,
        )  # fmt: skip
        """The device side: sessions from ``hello`` to close, their frames, acks, receipts."""
        self._server: Server | None = None
        self._started = False

    def _now(self) -> float:
        return self.clock()  # tests move ``clock``; the engine and ingest follow

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @property
    def port(self) -> int:
        """The bound WebSocket port (useful when the config says 0)."""
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, run migrations, start listening for devices."""
        await self.store.open()
        try:
            await self.broker.start()
        except BaseException:
            await self.store.close()
            raise
        try:
            if self.feed is not None:
                await self.feed.start()  # the position before the view is read
            await self.engine.start()
            if self.feed is not None:
                self.feed.follow()
            self._server = await start_server(self.sessions, self._config.host,
                                              self._config.port)  # fmt: skip
            if not isinstance(self.broker, InProcessBroker):
                self.sessions.start_checks()
            if self.store_watch is not None:
                self.store_watch.start()
        except BaseException:
            if self.feed is not None:
                await self.feed.stop()
            await self.engine.stop()
            await self.broker.stop()
            await self.store.close()
            raise
        self._started = True

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, go-away to every device, flush and close."""
        if not self._started:
            return
        self._started = False
        assert self._server is not None
        self._server.close(close_connections=False)
        await self.sessions.stop()
        await self.engine.stop()
        if self.feed is not None:
            await self.feed.stop()
        if self.store_watch is not None:
            await self.store_watch.stop()
        self.sessions.drain()
        try:
            await asyncio.wait_for(self._server.wait_closed(), self._config.drain_s)
        except TimeoutError:
            log.warning("shutdown: connections still open after %.1f s", self._config.drain_s)
        await self.broker.stop()
        await self.store.close()

    def describe(self) -> str:
        """Where this node keeps its data and how it reaches the others (for the start line)."""
        store = self.store
        if isinstance(store, SqliteStore):
            where = (f"db: {self._config.db}, durability: {store.durability}"
                     f" (synchronous={store.synchronous})")  # fmt: skip
        else:
            where = f"db: {_redacted(self._config.db)}"
        if self._config.broker:
            where += f", broker: {_redacted(self._config.broker)}, node: {self.node_id}"
        if self.sim_clock is not None:
            where += ", clock: simulated (GET/PUT /v1/clock)"
        if self._config.event_loop != "asyncio":
            where += f", event loop: {self._config.event_loop}"
        return where

    def _rejoin(self) -> None:
        """The broker was away: every local session replays its queue (:meth:`Sessions.rejoin`).
        (Changes of the audience and campaigns travel on the feed, not through the broker.)"""
        self.sessions.rejoin()

    async def _on_change(self, change: Change) -> None:
        """Another node stored a change (read from the feed): apply it, in feed order."""
        try:
            await self.ingest.apply(change)
            if isinstance(change, UserErased):
                self.close_erased(change.app, change.user)
        except TidingsError as exc:  # unknown app, store hiccup: the next rebuild mends it
            log.warning("cluster: change %s not applied: %s", change.TAG, exc.reason)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("cluster: malformed change dropped: %s", exc)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- admin operations ---------------------------------------------------------------------

    async def send(self, request: SendRequest) -> SendResult:
        """Store a message and its deliveries durably, then fan out to connected devices."""
        app_cfg = self._config.app(request.app)
        if app_cfg is None:
            raise InvalidField("app", f"unknown app {request.app!r}")
        t0 = time.perf_counter()
        devices: dict[str, list[str]] = {}  # user key -> devices
        if request.users:
            for device, user in await self.store.devices_of_users(request.app, request.users):
                devices.setdefault(user, []).append(device)
        named: list[str] = []  # the user keys of the devices named
        if request.devices:
            for device, user_key in await self.store.known_devices(request.app, request.devices):
                if device not in devices.setdefault(user_key, []):
                    devices[user_key].append(device)
                named.append(user_key)
        routes = route(request.kind, [*request.users, *named], devices)
        targets = dict(routes.targets)  # device -> user key
        waiting = list(routes.waiting)
        skipped: dict[str, int] = {"no_device": len(routes.no_device)} if routes.no_device else {}
        reached = set(targets.values())
        if request.category != TRANSACTIONAL and (targets or waiting):
            out = await self.store.opted_out(
                request.app, sorted(reached | set(waiting)), request.category
            )
            if out:
                targets = {d: u for d, u in targets.items() if u not in out}
                waiting = [u for u in waiting if u not in out]
                skipped["opted_out"] = len(out)
        now = self.clock()
        message = new_message(
            kind=request.kind, title=request.title, body=request.body, now=now,
            ttl_s=request.ttl, ttls=(app_cfg.banner_ttl_s, app_cfg.inbox_ttl_s),
            category=request.category, priority=request.priority, campaign=request.campaign,
            variant=request.variant, collapse_key=request.collapse_key, image=request.image,
            actions=request.actions, data=request.data,
            expire_after_read=request.expire_after_read,
        )  # fmt: skip
        on_device = set(targets.values())
        users = sorted(on_device | set(waiting))
        wire = fit_frame(message, self._config.max_frame_bytes)
        outgoing = Outgoing(message, wire, tuple((d, u) for d, u in targets.items()),
                            tuple(waiting))  # fmt: skip
        for last in (False, True):
            sends = [
                SendRow(user_key=u, at=now, category=request.category, message_id=message.id,
                        campaign=request.campaign, variant=request.variant,
                        limits=self.engine.send_limits(request.app, u, request.category, now))
                for u in users
            ]  # fmt: skip
            settings = self.engine.settings_used(request.app)
            try:
                committed = await self.publish(request.app, [outgoing],
                                               Outcome(sends=sends, settings=settings))  # fmt: skip
                break
            except SettingsChanged:
                # Capped under settings another node replaced: read them, cap again (once).
                if last:
                    raise
                await self.engine.reload_settings(request.app)
        refused = {r.user_key for r in committed.refused}
        for refusal in committed.refused:
            skipped[refusal.reason] = skipped.get(refusal.reason, 0) + 1
        self.metrics.observe_fanout(time.perf_counter() - t0)
        return SendResult(
            message_id=message.id,
            devices=len(committed.deliveries.get(message.id, ())),
            users=len(on_device - refused),
            skipped=skipped,
            no_device=len(set(waiting) - refused),
        )

    async def publish(
        self, app: str, outgoing: Sequence[Outgoing], outcome: Outcome = _NOTHING_ELSE
    ) -> Committed:
        """Store messages and their deliveries durably (with what else the send decided), then
        fan them out to connected devices without waiting on any of them.

        The store checks the sends' caps and budget and numbers the deliveries inside its
        commit; only what it accepted goes on the wire.
        """
        stored = [
            OutMessage(
                message_id=o.message.id,
                fields={
                    "kind": o.message.kind,
                    "category": o.message.category,
                    "priority": o.message.priority,
                    "campaign": o.message.campaign,
                    "variant": o.message.variant,
                    "created_at": o.message.created_at / 1000,
                    "expires_at": o.message.expires_at / 1000,
                },
                wire=o.wire,
                targets=o.targets,
                collapse_key=o.message.collapse_key,
                waiting=o.waiting,
            )
            for o in outgoing
        ]
        committed = await self.store.commit(app, outcome, stored)
        self.metrics.sends += len(committed.deliveries)
        # Durable: now fan out. The live copy carries sent_at for latency measurement.
        sent_at = int(self.clock() * 1000)
        for o in outgoing:
            deliveries = committed.deliveries.get(o.message.id)
            if deliveries:
                live = Message(**{**_fields(o.message), "sent_at": sent_at})
                self.broker.deliver(app, deliveries, encode_message(live))
        return committed

    async def revoke(self, app: str, message_id: str) -> bool:
        """Revoke a message: undelivered copies are dropped, devices are told to remove it."""
        recipients = await self.store.revoke(app, message_id)
        if recipients is None:
            return False
        self.withdraw(app, [d for d, _ in recipients], [message_id])
        return True

    async def erase_user(self, app: str, user_key: str) -> bool:
        """Erase a user everywhere (:meth:`Ingest.erase`) and end the sessions of the user's
        devices on every node with ``CLOSE_ERASED``; False if nothing was known about them.

        The store refuses any later write of those devices until they say ``hello`` again,
        so a session still open somewhere cannot bring the erased profile back.
        """
        known = await self.ingest.erase(app, user_key)
        self.close_erased(app, user_key)
        return known

    def close_erased(self, app: str, user_key: str) -> None:
        """End this node's sessions of an erased user (PROTOCOL.md §10, 4007)."""
        for session in self.hub.sessions_of_user(app, user_key):
            session.close(codes.CLOSE_ERASED, "user erased")

    def withdraw(self, app: str, devices: Sequence[str], message_ids: Sequence[str]) -> None:
        """Tell connected devices to remove messages (already dropped from the store)."""
        self.broker.revoke(app, devices, message_ids)

    def metrics_text(self) -> str:
        """Prometheus text exposition of the node's metrics."""
        return self.metrics.render()

    def connected_devices(self, app: str | None = None) -> int:
        """How many devices are connected (for one app, or all)."""
        return self.hub.count(app)


def _open_store(config: GatewayConfig) -> Store:
    if config.uses_postgres:
        from tidings.server.storage import PostgresStore

        return PostgresStore(config.db)
    return SqliteStore(config.db, durability=config.durability)


def _open_broker(
    config: GatewayConfig,
    hub: Hub,
    node_id: str,
    on_reconnect: Callable[[], None],
) -> Broker:
    if not config.broker:
        return InProcessBroker(hub)
    try:
        from tidings.server.redis_broker import RedisBroker
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"broker: {exc.name} is not installed; install it with: pip install 'tidings[cluster]'"
        ) from None
    return RedisBroker(
        config.broker,
        hub,
        node_id,
        prefix=config.broker_prefix,
        on_reconnect=on_reconnect,
    )


def _redacted(url: str) -> str:
    """A URL without its password, for logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _fields(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in Message.__dataclass_fields__}
