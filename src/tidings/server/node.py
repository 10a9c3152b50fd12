"""The gateway node: hub + broker + store, and the operations the admin API calls.

A node owns this process's live sessions (:class:`~tidings.server.hub.Hub`), a
:class:`~tidings.server.broker.Broker` that routes deliveries to the node holding a device, and a
:class:`~tidings.server.storage.Store`. Sends are durable before they are fanned out: the message
and every per-device delivery are group-committed, then written to connected devices without
waiting on any of them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.server import Server
from websockets.protocol import State

from tidings.protocol import codes, kinds, limits
from tidings.protocol.codec import encode_message
from tidings.protocol.errors import AuthError, ConfigError, InvalidField, TidingsError
from tidings.protocol.frames import (
    Ack,
    Action,
    Events,
    Frame,
    GoAway,
    Hello,
    Identify,
    InboxState,
    InboxUpdate,
    Kind,
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Welcome,
)
from tidings.protocol.session import ServerSession
from tidings.protocol.simtime import SimTime
from tidings.protocol.tokens import TokenClaims, peek_app, verify_token
from tidings.server.broker import Broker, InProcessBroker
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.config import GatewayConfig
from tidings.server.delivery import Outgoing, as_inbox_only, fit_frame
from tidings.server.errors import DeviceErased, SettingsChanged
from tidings.server.feed import Announce, Feed, alone
from tidings.server.gateway.connection import GatewayConnection, Session
from tidings.server.hub import Hub
from tidings.server.ingest import EventQuota, Ingest
from tidings.server.metrics import Metrics
from tidings.server.storage import (
    Committed,
    DeviceRow,
    Outcome,
    OutMessage,
    PendingDelivery,
    SendRow,
    SqliteStore,
    Store,
    anonymous_key,
)
from tidings.server.storewatch import StoreWatch
from tidings.server.targeting.profiles import TRANSACTIONAL

__all__ = ["BATCH_WINDOW_S", "Node", "Outgoing", "SendRequest", "SendResult"]

BATCH_WINDOW_S = 0.02
"""Seconds acks and receipts wait to be written together."""

CHECK_S = 1.0
"""On a cluster, seconds between two checks of this node's sessions against the store: a
delivery stored for a session here whose publish was lost (its node died before publishing, or
Redis dropped it) is replayed at the second check that finds it missing, and a session that a
newer one of its device replaced on another node is closed (4006) at the first."""
CHECK_BATCH = 5_000
"""Sessions compared in one store query."""

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
        self._server: Server | None = None
        self._started = False
        # Acks and receipts arrive in bursts after a fan-out: batch them into one write.
        self._acks: dict[tuple[str, str], int] = {}
        self._receipts: list[tuple[Session, Receipt]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # gap replays, route releases under way
        # The latest hello of each device still being opened: an older one must not win.
        self._hello_tickets: dict[tuple[str, str], int] = {}
        self._tickets = itertools.count()
        self._behind: set[Session] = set()  # sessions the last store check found behind

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
        from tidings.server.gateway.server import start_server

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
            self._server = await start_server(self, self._config.host, self._config.port)
            if not isinstance(self.broker, InProcessBroker):
                self._background(self._check_loop())
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
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self._flush_batches(delay=0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.stop()
        if self.feed is not None:
            await self.feed.stop()
        if self.store_watch is not None:
            await self.store_watch.stop()
        for session in self.hub.all():
            # Spread the hints so that devices do not all come back in the same second.
            session.send(GoAway(reconnect_ms=jitter_ms(), reason="server shutting down"))
            session.close(codes.CLOSE_DRAINING, "server shutting down")
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
        """The broker was away: deliveries other nodes published meanwhile may be lost. Nothing
        was lost from the store: every local session replays its queue. (Changes of the
        audience and campaigns travel on the feed, not through the broker.)"""
        for session in self.hub.all():
            session.resume(session.last_sent)
            self._replay_gap(session)

    async def _on_change(self, change: tuple[Any, ...]) -> None:
        """Another node stored a change (read from the feed): apply it, in feed order."""
        try:
            await self.ingest.apply(change)
            if change[0] == "erase":
                self.close_erased(change[1], change[2])
        except TidingsError as exc:  # unknown app, store hiccup: the next rebuild mends it
            log.warning("cluster: change %s not applied: %s", change[0], exc.reason)
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
        targets: dict[str, str] = {}  # device -> user key
        if request.users:
            for device, user in await self.store.devices_of_users(request.app, request.users):
                targets[device] = user
        if request.devices:
            for device, user_key in await self.store.known_devices(request.app, request.devices):
                targets.setdefault(device, user_key)
        skipped: dict[str, int] = {}
        # Named users with no device yet: an inbox message waits in their inbox for their
        # first device; a banner cannot wait for a device that does not exist.
        reached = set(targets.values())
        waiting = sorted(set(request.users) - reached)
        kind = kinds.KINDS[request.kind]
        if waiting and kind.needs_device:
            skipped["no_device"] = len(waiting)
            waiting = []
        if request.category != TRANSACTIONAL and (targets or waiting):
            out = await self.store.opted_out(
                request.app, sorted(reached | set(waiting)), request.category
            )
            if out:
                targets = {d: u for d, u in targets.items() if u not in out}
                waiting = [u for u in waiting if u not in out]
                skipped["opted_out"] = len(out)
        now = self.clock()
        ttl = request.ttl or (app_cfg.banner_ttl_s if kind.short_lived else app_cfg.inbox_ttl_s)
        message = Message(
            id=uuid.uuid4().hex,
            kind=request.kind,
            title=request.title,
            body=request.body,
            category=request.category,
            priority=request.priority,
            created_at=int(now * 1000),
            expires_at=int((now + ttl) * 1000),
            campaign=request.campaign,
            variant=request.variant,
            collapse_key=request.collapse_key,
            image=request.image,
            actions=request.actions,
            data=request.data,
            expire_after_read=request.expire_after_read,
            ttl_default=request.ttl is None and kind.short_lived,
        )
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

    # --- sessions -----------------------------------------------------------------------------

    def authenticate(self, token: str) -> TokenClaims:
        """Verify a device token against the secret of the app it names."""
        app = self._config.app(peek_app(token))
        if app is None:
            raise AuthError("token: unknown app")
        return verify_token(token, secret=app.secret, app=app.id, now=self.clock())

    async def open_session(
        self, ws: GatewayConnection, proto: ServerSession, claims: TokenClaims, hello: Hello
    ) -> Session | None:
        """Register the device, welcome it, replay what it missed (PROTOCOL.md §2).

        ``proto`` is the connection's sans-I/O core, which read the ``hello``. None: a later
        ``hello`` of the same device arrived while this one waited for the store (the device
        gave up on this connection and came back): the later one wins, this one is closed.

        Raises:
            TidingsError: the store failed (a :class:`~tidings.server.errors.StoreError`);
                nothing of the session stays registered.
        """
        now = self.clock()
        dev = hello.device
        key = (claims.app, claims.device)
        ticket = self._hello_tickets[key] = next(self._tickets)
        try:
            row = await self.ingest.device(
                DeviceRow(
                    app=claims.app,
                    device_id=claims.device,
                    user_id=claims.user,
                    platform=dev.platform,
                    app_version=dev.app_version,
                    locale=dev.locale,
                    tz=dev.tz,
                    sdk_version=dev.sdk_version,
                    first_seen=now,
                    last_seen=now,
                )
            )
            # A device that gave up on this connection while it waited (and may be back on
            # another) must not take its route: only a connection still open claims it. Routed
            # here before reading its queue: what another node stores later is published here;
            # what it stored before is in the queue read below.
            claimed = self._hello_tickets.get(key) == ticket and ws.protocol.state is State.OPEN
            if claimed:
                # False: a newer session of the device holds its route on another node.
                claimed = await self.broker.claim_device(claims.app, claims.device, row.epoch)
        finally:
            latest = self._hello_tickets.get(key)
            if latest == ticket:
                del self._hello_tickets[key]
        if latest != ticket or not claimed:
            return None  # superseded while this one waited: never replace a newer session
        session = Session(
            ws=ws,
            proto=proto,
            id=uuid.uuid4().hex,
            app=claims.app,
            device=claims.device,
            user=claims.user,
            user_key=claims.user or anonymous_key(claims.device),
            metrics=self.metrics,
            on_gap=self._replay_gap,
            epoch=row.epoch,
        )
        old = self.hub.add(session)
        if old is not None:
            # The replaced session stops counting now: its own close_session will find the
            # new one in the hub and leave the gauge alone.
            self.metrics.connections[claims.app] -= 1
            old.close(codes.CLOSE_REPLACED, "the same device connected again")
        self.metrics.connections[claims.app] += 1
        try:
            session.send(self._welcome(session, now))
            resume = min(hello.resume, row.last_seq)
            try:
                if resume > row.acked_seq:
                    await self.store.ack(claims.app, claims.device, resume, now)
                # The inbox is the user's: what this device does not hold (new, reinstalled,
                # or sent while the user had no device) is queued for it now, as inbox items.
                await self.store.fill_inbox(claims.app, claims.device, session.user_key,
                                            resume, now)  # fmt: skip
                session.resume(resume)
                for pending in await self.store.pending(claims.app, claims.device, resume, now):
                    session.replay(pending.seq, _wire(pending))
            finally:
                session.end_replay()
            ver, changes = await self.store.inbox_since(
                claims.app, session.user_key, hello.inbox_ver
            )
            for i in range(0, len(changes), limits.MAX_IDS_PER_FRAME):
                chunk = changes[i : i + limits.MAX_IDS_PER_FRAME]
                last = i + limits.MAX_IDS_PER_FRAME >= len(changes)
                session.send(InboxState(ver=ver if last else chunk[-1].ver, changes=tuple(chunk)))
        except BaseException:
            self.close_session(session)  # a failed open leaves nothing registered
            raise
        return session

    def _welcome(self, session: Session, now: float) -> Welcome:
        """The ``welcome`` frame, announcing every limit the gateway enforces (§7)."""
        cfg = self._config
        return Welcome(
            session=session.id,
            device=session.device,
            user=session.user,
            server_time=int(now * 1000),
            heartbeat_ms=int(cfg.heartbeat_s * 1000),
            limits={
                "max_frame_bytes": cfg.max_frame_bytes,
                "max_events_per_batch": limits.MAX_EVENTS_PER_BATCH,
                "rate_limit_per_s": int(cfg.rate_limit_per_s),
                "rate_burst": cfg.rate_burst,
                "send_queue_bytes": cfg.send_queue_bytes,
            },
        )

    def _replay_gap(self, session: Session) -> None:
        """A live delivery skipped a sequence number (another writer's delivery is still on
        its way): replay the stored queue after what the session sent, then go live again."""
        self._background(self._replay(session))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on its own; :meth:`stop` cancels what is still running."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replay(self, session: Session, upto: int = 0) -> None:
        """Replay the stored queue after what ``session`` sent. ``upto``: a sequence number
        the store had given before this replay read it; whatever up to it is not replayed was
        dropped (acked, revoked, collapsed, expired) and counts as sent."""
        try:
            pending = await self.store.pending(
                session.app, session.device, session.last_sent, self.clock()
            )
            for p in pending:
                session.replay(p.seq, _wire(p))
            session.resume(upto)
        except TidingsError as exc:  # what stays unsent is replayed at the next resume
            log.warning("replay after a sequence gap failed: %s", exc.reason)
        finally:
            session.end_replay()

    async def _check_loop(self) -> None:
        """Compare this node's sessions with the store every :data:`CHECK_S` (a cluster)."""
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                await self.check_sessions()
            except TidingsError as exc:
                log.warning("checking sessions against the store failed: %s", exc.reason)

    async def check_sessions(self) -> None:
        """Find what no message between nodes said, in the store: a session replaced by a
        newer one of its device (closed, 4006), deliveries stored for a session here that were
        never written to it (replayed, if still missing at the next check: the publish may
        simply be on its way)."""
        by_app: dict[str, list[Session]] = {}
        for session in self.hub.all():
            if not session.closing:
                by_app.setdefault(session.app, []).append(session)
        behind: set[Session] = set()
        for app, sessions in by_app.items():
            for i in range(0, len(sessions), CHECK_BATCH):
                chunk = {s.device: s for s in sessions[i : i + CHECK_BATCH]}
                found = await self.store.check_sessions(
                    app, [(d, s.last_sent, s.epoch) for d, s in chunk.items()]
                )
                for check in found:
                    session = chunk[check.device]
                    if check.epoch > session.epoch:
                        session.close(codes.CLOSE_REPLACED, "the same device connected again")
                    elif check.last_seq > session.last_sent and not session.proto.replaying:
                        if session in self._behind:
                            self.metrics.store_replays += 1
                            session.resume(session.last_sent)
                            self._background(self._replay(session, check.last_seq))
                        else:
                            behind.add(session)
        self._behind = behind

    def _schedule_flush(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_batches())

    async def _flush_batches(self, delay: float = BATCH_WINDOW_S) -> None:
        await asyncio.sleep(delay)
        self._flusher = None
        acks, self._acks = self._acks, {}
        receipts, self._receipts = self._receipts, []
        try:
            if acks:
                await self.store.ack_many([(a, d, seq) for (a, d), seq in acks.items()],
                                          self.clock())  # fmt: skip
            if receipts:
                rows = [(s.app, s.device, r.id, r.kind, r.action, r.ts / 1000) for s, r in receipts]
                accepted = await self.store.add_receipts(rows)
                for (session, receipt), ok in zip(receipts, accepted, strict=True):
                    if ok:
                        session.send(Ok(rid=receipt.rid))
                    else:
                        session.error(codes.ERR_FORBIDDEN, f"receipt.id: message "
                                      f"{receipt.id[:40]!r} was not delivered to this device",
                                      receipt.rid)  # fmt: skip
        except TidingsError as exc:  # unacked deliveries are resent; receipts are retried
            log.warning("batched acks/receipts not stored: %s", exc.reason)
            for session, receipt in receipts:
                session.error(exc.code, exc.reason, receipt.rid)

    def close_session(self, session: Session) -> None:
        """Forget a session whose connection ended."""
        if self.hub.get(session.app, session.device) is session:
            self.metrics.connections[session.app] -= 1
            if not isinstance(self.broker, InProcessBroker):
                self._background(
                    self.broker.release_device(session.app, session.device, session.epoch)
                )
        self.hub.remove(session)

    # --- client frames ------------------------------------------------------------------------

    async def dispatch(self, session: Session, frame: Frame) -> None:
        """Handle one frame of the open phase (PROTOCOL.md §4).

        A write from a device whose user was erased while it was connected is refused (the
        store no longer knows the device): ``error forbidden``, then close ``CLOSE_ERASED``.
        """
        try:
            await self._dispatch(session, frame)
        except DeviceErased as exc:
            session.error(exc.code, exc.reason, getattr(frame, "rid", None))
            session.close(codes.CLOSE_ERASED, "user erased")

    async def _dispatch(self, session: Session, frame: Frame) -> None:
        store, app = self.store, session.app
        if isinstance(frame, Ack):
            seq = min(frame.seq, session.last_sent)  # nothing beyond what it was sent
            key = (app, session.device)
            if seq > self._acks.get(key, 0):
                self._acks[key] = seq
                self._schedule_flush()
        elif isinstance(frame, Events):
            self.metrics.events += len(frame.events)
            await self.ingest.events(app, session.device, session.user_key, frame.events)
            session.send(Ok(rid=frame.rid))
        elif isinstance(frame, Identify):
            if frame.user is not None and frame.user != session.user:
                raise TidingsError(
                    "identify.user: must match the user of the device token; mint a token"
                    " for that user",
                    code=codes.ERR_FORBIDDEN,
                )
            if frame.attrs:
                await self.ingest.attributes(app, session.user_key, frame.attrs, session.device)
            session.send(Ok(rid=frame.rid))
        elif isinstance(frame, Receipt):
            self._receipts.append((session, frame))
            self._schedule_flush()
        elif isinstance(frame, InboxUpdate):
            ver, applied = await store.inbox_update(app, session.user_key, frame.changes,
                                                    self.clock())  # fmt: skip
            reads = [(app, session.device, c.id, "read", None, self.clock())
                     for c in applied if c.state == "read"]  # fmt: skip
            if reads:  # the inbox's "display", for campaign stats (the first read counts)
                await store.add_receipts(reads)
            session.send(Ok(rid=frame.rid))
            if applied:
                state = InboxState(ver=ver, changes=tuple(applied))
                self.broker.inbox(app, session.user_key, state, exclude=session.device)
        elif isinstance(frame, Prefs):
            if frame.categories.get("transactional") is False:
                raise InvalidField(
                    "prefs.categories.transactional", "transactional messages cannot be refused"
                )
            await self.ingest.consent(app, session.user_key, frame.categories, session.device,
                                      field="prefs.categories")  # fmt: skip
            session.send(Ok(rid=frame.rid))
        elif isinstance(frame, Ping):
            session.send(Pong(ts=frame.ts))
        # Pong needs no answer.


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


def _wire(pending: PendingDelivery) -> bytes:
    return as_inbox_only(pending.wire) if pending.inbox_only else pending.wire


def _fields(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in Message.__dataclass_fields__}


def jitter_ms(low: int = 500, high: int = 3000) -> int:
    """A go-away reconnect hint spread over a window so clients do not return together."""
    return random.randint(low, high)
