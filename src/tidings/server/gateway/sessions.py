"""The device side of a node: opening sessions, their frames, acks and receipts.

:class:`Sessions` authenticates a ``hello``, registers the device (one session per device: a
later ``hello`` wins), welcomes it and replays what it missed (PROTOCOL.md §2); then it handles
every frame of the open phase (§4), writing acks and receipts in batches. On a cluster it also
compares its sessions with the store, which finds what a lost message between nodes did not
say. The WebSocket server (:mod:`~tidings.server.gateway.server`) feeds it; the node's core
(store, hub, broker, ingest) does the work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.protocol import State

from tidings.protocol import codes, limits
from tidings.protocol.errors import AuthError, InvalidField, TidingsError
from tidings.protocol.frames import (
    Ack,
    Events,
    Frame,
    GoAway,
    Hello,
    Identify,
    InboxState,
    InboxUpdate,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Welcome,
)
from tidings.protocol.session import ServerSession
from tidings.protocol.tokens import TokenClaims, peek_app, verify_token
from tidings.server.broker import Broker, InProcessBroker
from tidings.server.config import GatewayConfig
from tidings.server.delivery import as_inbox_only
from tidings.server.errors import DeviceErased
from tidings.server.gateway.connection import GatewayConnection, Session
from tidings.server.hub import Hub
from tidings.server.ingest import Ingest
from tidings.server.metrics import Metrics
from tidings.server.storage import DeliveryStore, DeviceRow, PendingDelivery, anonymous_key

__all__ = ["BATCH_WINDOW_S", "CHECK_BATCH", "CHECK_S", "Sessions", "jitter_ms"]

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


class Sessions:
    """The live device sessions of one node, from ``hello`` to close.

    Args:
        config: The gateway's configuration (apps, limits, heartbeat).
        clock: Unix seconds (the node's clock, simulated or not).
        store, hub, broker, ingest, metrics: The node's core, which this side feeds.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float],
        store: DeliveryStore,
        hub: Hub,
        broker: Broker,
        ingest: Ingest,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.hub = hub
        self.broker = broker
        self.ingest = ingest
        self.metrics = metrics
        # Acks and receipts arrive in bursts after a fan-out: batch them into one write.
        self._acks: dict[tuple[str, str], int] = {}
        self._receipts: list[tuple[Session, Receipt]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # gap replays, route releases under way
        # The latest hello of each device still being opened: an older one must not win.
        self._hello_tickets: dict[tuple[str, str], int] = {}
        self._tickets = itertools.count()
        self._behind: set[Session] = set()  # sessions the last store check found behind
        # Session ids: unique across processes and restarts (a random prefix), and cheap (a
        # uuid4 per hello, an os.urandom call each, was 3 % of a connect storm).
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count(1)

    def start_checks(self) -> None:
        """On a cluster: compare the sessions with the store every :data:`CHECK_S`."""
        self._background(self._check_loop())

    async def stop(self) -> None:
        """Write the acks and receipts still waiting; cancel replays and checks."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        await self._flush_batches(delay=0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def drain(self) -> None:
        """Tell every device to go away and come back later, then close its session."""
        for session in self.hub.all():
            # Spread the hints so that devices do not all come back in the same second.
            session.send(GoAway(reconnect_ms=jitter_ms(), reason="server shutting down"))
            session.close(codes.CLOSE_DRAINING, "server shutting down")

    def rejoin(self) -> None:
        """The broker was away: deliveries other nodes published meanwhile may be lost. Nothing
        was lost from the store: every session replays its queue."""
        for session in self.hub.all():
            session.resume(session.last_sent)
            self._replay_gap(session)

    def authenticate(self, token: str) -> TokenClaims:
        """Verify a device token against the secret of the app it names."""
        app = self.config.app(peek_app(token))
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
            id=f"{self._id_prefix}{next(self._ids):x}",
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
            self.metrics.hello.observe(ws.loop.time() - ws.opened_at)
            resume = min(hello.resume, row.last_seq)
            try:
                if resume > row.acked_seq:
                    await self.store.ack(claims.app, claims.device, resume, now)
                session.resume(resume)
                # The inbox is the user's: what this device does not hold (new, reinstalled,
                # or sent while the user had no device) is queued for it now, as inbox items.
                owed = await self.store.resume_state(claims.app, claims.device,
                                                     session.user_key, resume, hello.inbox_ver,
                                                     now)  # fmt: skip
                for pending in owed.pending:
                    session.replay(pending.seq, _wire(pending))
            finally:
                session.end_replay()
            ver, changes = owed.inbox_ver, owed.changes
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
        cfg = self.config
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


def _wire(pending: PendingDelivery) -> bytes:
    return as_inbox_only(pending.wire) if pending.inbox_only else pending.wire


def jitter_ms(low: int = 500, high: int = 3000) -> int:
    """A go-away reconnect hint spread over a window so clients do not return together."""
    return random.randint(low, high)
