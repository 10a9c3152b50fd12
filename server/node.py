"""The gateway node: hub + broker + store, and the operations the admin API calls.

A node owns this process's live sessions (:class:`~tidings.server.hub.Hub`), a
:class:`~tidings.server.broker.Broker` that routes deliveries to the node holding a device, and a
:class:`~tidings.server.storage.Store`. Sends are durable before they are fanned out: the message
and every per-device delivery are group-committed, then written to connected devices without
waiting on any of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.protocol import codes, limits
from tidings.protocol.codec import encode_message
from tidings.protocol.errors import AuthError, InvalidField, TidingsError
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
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Welcome,
)
from tidings.protocol.tokens import TokenClaims, peek_app, verify_token
from tidings.server.broker import Broker, InProcessBroker
from tidings.server.campaigns.engine import CampaignEngine
from tidings.server.config import GatewayConfig
from tidings.server.gateway.connection import RateLimiter, Session, monotonic
from tidings.server.hub import Hub
from tidings.server.metrics import Metrics
from tidings.server.storage import (
    DeviceRow,
    Outcome,
    OutMessage,
    SendRow,
    SqliteStore,
    Store,
    anonymous_key,
)
from websockets.asyncio.server import Server, ServerConnection

__all__ = ["BATCH_WINDOW_S", "Node", "Outgoing", "SendRequest", "SendResult"]

BATCH_WINDOW_S = 0.02
"""Seconds acks and receipts wait to be written together."""

log = logging.getLogger(__name__)

_NOTHING_ELSE = Outcome()


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    """A direct send to users and/or devices of one app (validated by the caller)."""

    app: str
    users: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    kind: Literal["banner", "inbox", "both"] = "both"
    title: str = ""
    body: str = ""
    category: Literal["marketing", "transactional"] = "marketing"
    priority: Literal["normal", "urgent"] = "normal"
    ttl: int | None = None  # seconds; None = the app's default for the kind
    collapse_key: str | None = None
    image: str | None = None
    actions: tuple[Action, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    expire_after_read: bool = False
    campaign: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message and the devices it goes to."""

    message: Message
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendResult:
    """What a send did, once every delivery is durably stored."""

    message_id: str
    devices: int  # device deliveries queued
    users: int  # distinct users reached
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, e.g. opted_out


class Node:
    """One gateway process: device WebSocket server, hub, broker and store."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] | None = None,
        store: Store | None = None,
        broker: Broker | None = None,
    ) -> None:
        self._config = config
        self.clock = clock or time.time
        self.hub = Hub()
        self.store: Store = store or SqliteStore(config.db)
        self.broker: Broker = broker or InProcessBroker(self.hub)
        self.metrics = Metrics()
        self.engine = CampaignEngine(self)
        self._server: Server | None = None
        self._last_seq: dict[tuple[str, str], int] = {}
        self._started = False
        # Acks and receipts arrive in bursts after a fan-out: batch them into one write.
        self._acks: dict[tuple[str, str], int] = {}
        self._receipts: list[tuple[Session, Receipt]] = []
        self._flusher: asyncio.Task[None] | None = None

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
            await self.engine.start()
            self._server = await start_server(self, self._config.host, self._config.port)
        except BaseException:
            await self.engine.stop()
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
        await self.engine.stop()
        for session in self.hub.all():
            # Spread the hints so that devices do not all come back in the same second.
            session.send(GoAway(reconnect_ms=jitter_ms(), reason="server shutting down"))
            session.close(codes.CLOSE_DRAINING, "server shutting down")
        try:
            await asyncio.wait_for(self._server.wait_closed(), self._config.drain_s)
        except TimeoutError:
            log.warning("shutdown: connections still open after %.1f s", self._config.drain_s)
        await self.store.close()

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
        if request.category == "marketing" and targets:
            out = await self.store.opted_out(request.app, sorted(set(targets.values())))
            if out:
                before = len(targets)
                targets = {d: u for d, u in targets.items() if u not in out}
                skipped["opted_out"] = before - len(targets)
        now = self.clock()
        ttl = request.ttl or (
            app_cfg.banner_ttl_s if request.kind == "banner" else app_cfg.inbox_ttl_s
        )
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
        )
        users = sorted(set(targets.values()))
        sends = [
            SendRow(user_key=u, at=now, category=request.category, message_id=message.id,
                    campaign=request.campaign, variant=request.variant)
            for u in users
        ]  # fmt: skip
        await self.publish(request.app, [Outgoing(message, tuple(targets))], Outcome(sends=sends))
        self.metrics.observe_fanout(time.perf_counter() - t0)
        return SendResult(
            message_id=message.id, devices=len(targets), users=len(users), skipped=skipped
        )

    async def publish(
        self, app: str, outgoing: Sequence[Outgoing], outcome: Outcome = _NOTHING_ELSE
    ) -> None:
        """Store messages and their deliveries durably (with what else the send decided), then
        fan them out to connected devices without waiting on any of them."""
        await self._load_seqs(app, [d for o in outgoing for d in o.devices])
        stored = []
        for o in outgoing:
            m = o.message
            stored.append(
                OutMessage(
                    message_id=m.id,
                    fields={
                        "kind": m.kind,
                        "category": m.category,
                        "priority": m.priority,
                        "campaign": m.campaign,
                        "variant": m.variant,
                        "created_at": m.created_at / 1000,
                        "expires_at": m.expires_at / 1000,
                    },
                    wire=encode_message(m),
                    deliveries=tuple(self._next_seqs(app, o.devices)),
                    collapse_key=m.collapse_key,
                )
            )
        await self.store.commit(app, outcome, stored)
        self.metrics.sends += len(stored)
        # Durable: now fan out. The live copy carries sent_at for latency measurement.
        sent_at = int(self.clock() * 1000)
        for o, out in zip(outgoing, stored, strict=True):
            if out.deliveries:
                live = Message(**{**_fields(o.message), "sent_at": sent_at})
                self.broker.deliver(app, out.deliveries, encode_message(live))

    async def _load_seqs(self, app: str, devices: list[str]) -> None:
        """Load the last sequence numbers of devices this node has not seen (one store read)."""
        missing = list(dict.fromkeys(d for d in devices if (app, d) not in self._last_seq))
        if missing:
            loaded = await self.store.last_seqs(app, missing)
            for d in missing:
                self._last_seq.setdefault((app, d), loaded.get(d, 0))

    def _next_seqs(self, app: str, devices: Sequence[str]) -> list[tuple[str, int]]:
        """Give each device its next sequence number (loaded by :meth:`_load_seqs`)."""
        out = []
        last = self._last_seq
        for d in devices:
            key = (app, d)
            seq = last[key] + 1
            last[key] = seq
            out.append((d, seq))
        return out

    async def revoke(self, app: str, message_id: str) -> bool:
        """Revoke a message: undelivered copies are dropped, devices are told to remove it."""
        recipients = await self.store.revoke(app, message_id)
        if recipients is None:
            return False
        self.broker.revoke(app, [d for d, _ in recipients], [message_id])
        return True

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
        self, ws: ServerConnection, claims: TokenClaims, hello: Hello
    ) -> Session | None:
        """Register the device, welcome it, replay what it missed (PROTOCOL.md §2)."""
        now = self.clock()
        dev = hello.device
        row = await self.store.upsert_device(
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
        self.engine.on_device(
            claims.app,
            claims.user or anonymous_key(claims.device),
            tz=dev.tz,
            locale=dev.locale,
            platform=dev.platform,
            app_version=dev.app_version,
        )
        key = (claims.app, claims.device)
        last_seq = max(self._last_seq.get(key, 0), row.last_seq)
        self._last_seq[key] = last_seq
        cfg = self._config
        session = Session(
            ws=ws,
            id=uuid.uuid4().hex,
            app=claims.app,
            device=claims.device,
            user=claims.user,
            user_key=claims.user or anonymous_key(claims.device),
            queue_limit=cfg.send_queue_bytes,
            limiter=RateLimiter(cfg.rate_limit_per_s, cfg.rate_burst, monotonic()),
            metrics=self.metrics,
        )
        old = self.hub.add(session)
        if old is not None:
            old.close(codes.CLOSE_REPLACED, "the same device connected again")
        self.metrics.connections[claims.app] += 1
        session.send(
            Welcome(
                session=session.id,
                device=claims.device,
                user=claims.user,
                server_time=int(now * 1000),
                heartbeat_ms=int(cfg.heartbeat_s * 1000),
                limits={
                    "max_frame_bytes": cfg.max_frame_bytes,
                    "max_events_per_batch": limits.MAX_EVENTS_PER_BATCH,
                    "rate_limit_per_s": int(cfg.rate_limit_per_s),
                    "rate_burst": cfg.rate_burst,
                },
            )
        )
        resume = min(hello.resume, last_seq)
        try:
            if resume > row.acked_seq:
                await self.store.ack(claims.app, claims.device, resume)
            session.last_sent = resume
            for pending in await self.store.pending(claims.app, claims.device, resume, now):
                session.replay(pending.seq, pending.wire)
        finally:
            session.end_replay()
        ver, changes = await self.store.inbox_since(claims.app, session.user_key, hello.inbox_ver)
        for i in range(0, len(changes), limits.MAX_IDS_PER_FRAME):
            chunk = changes[i : i + limits.MAX_IDS_PER_FRAME]
            last = i + limits.MAX_IDS_PER_FRAME >= len(changes)
            session.send(InboxState(ver=ver if last else chunk[-1].ver, changes=tuple(chunk)))
        return session

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
                await self.store.ack_many([(a, d, seq) for (a, d), seq in acks.items()])
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
        self.hub.remove(session)

    # --- client frames ------------------------------------------------------------------------

    async def dispatch(self, session: Session, frame: Frame) -> None:
        """Handle one frame of the open phase (PROTOCOL.md §4)."""
        store, app, now = self.store, session.app, self.clock()
        if isinstance(frame, Ack):
            seq = min(frame.seq, self._last_seq.get((app, session.device), 0))
            key = (app, session.device)
            if seq > self._acks.get(key, 0):
                self._acks[key] = seq
                self._schedule_flush()
        elif isinstance(frame, Events):
            self.metrics.events += len(frame.events)
            await store.insert_events(app, session.device, session.user_key, frame.events, now)
            session.send(Ok(rid=frame.rid))
            await self.engine.on_events(
                app, session.user_key, [(e.name, e.props, e.ts / 1000) for e in frame.events]
            )
        elif isinstance(frame, Identify):
            if frame.user is not None and frame.user != session.user:
                raise TidingsError(
                    "identify.user: must match the user of the device token; mint a token"
                    " for that user",
                    code=codes.ERR_FORBIDDEN,
                )
            if frame.attrs:
                await store.merge_attrs(app, session.user_key, frame.attrs, now)
                self.engine.on_attrs(app, session.user_key, frame.attrs)
            session.send(Ok(rid=frame.rid))
        elif isinstance(frame, Receipt):
            self._receipts.append((session, frame))
            self._schedule_flush()
        elif isinstance(frame, InboxUpdate):
            ver, applied = await store.inbox_update(app, session.user_key, frame.changes)
            session.send(Ok(rid=frame.rid))
            if applied:
                state = InboxState(ver=ver, changes=tuple(applied))
                self.broker.inbox(app, session.user_key, state, exclude=session.device)
        elif isinstance(frame, Prefs):
            if frame.categories.get("transactional") is False:
                raise InvalidField(
                    "prefs.categories.transactional", "transactional messages cannot be refused"
                )
            await store.set_consent(app, session.user_key, frame.categories, now)
            self.engine.on_consent(app, session.user_key, frame.categories)
            session.send(Ok(rid=frame.rid))
        elif isinstance(frame, Ping):
            session.send(Pong(ts=frame.ts))
        # Pong needs no answer.


def _fields(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in Message.__dataclass_fields__}


def jitter_ms(low: int = 500, high: int = 3000) -> int:
    """A go-away reconnect hint spread over a window so clients do not return together."""
    return random.randint(low, high)
