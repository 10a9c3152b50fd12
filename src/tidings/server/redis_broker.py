"""The Redis broker: deliveries, revokes and inbox changes reach devices on any gateway node.

Several gateway processes on one store form a cluster; each holds some devices' connections.
Routes live in Redis: ``{prefix}route:{app}`` maps a device to the node holding its session,
and ``{prefix}node:{id}`` is that node's heartbeat key, which expires :data:`NODE_TTL_S` after
its last beat — a dead node's routes lead nowhere. Each node listens on its own channel
``{prefix}to:{id}``.

A fan-out costs one ``HMGET`` of the routes of the devices not connected here and one
``PUBLISH`` per node (pipelined), never one per device. Revokes and inbox changes, which are
rare, go to every node on ``{prefix}all``.

Each route carries the session's *epoch*, which the store gave that hello inside its
transaction (it never goes backwards, whatever happens to Redis): a claim never overwrites the
route of a newer session, a kick closes only older sessions, and a session that ends removes
the route only while it is still its own. A node that finds a newer route over one of its
sessions (when it registers its routes again after an outage) closes that session with 4006.

A node hears itself: every heartbeat also publishes a ping on its own channel. A node that has
not heard its ping for :data:`SILENT_S` (a broker that drops traffic silently, without closing
the connection) or whose heartbeat key vanished (Redis restarted empty) counts Redis as lost.
While lost it keeps serving its own devices and reports itself unhealthy; once it hears its own
ping again (so it listens on its channel) it re-registers its routes, asks each local session
to replay what it may have missed from the store (:attr:`on_reconnect`), and tells every other
node to do the same: deliveries are in the store before they are published, so a lost publish
loses nothing. (Each node also checks its sessions against the store on its own, every second:
see :class:`~tidings.server.node.Node`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tidings.protocol import codes
from tidings.protocol.codec import encode
from tidings.protocol.frames import InboxState
from tidings.server.batches import Batches
from tidings.server.broker import InProcessBroker
from tidings.server.hub import Hub

if TYPE_CHECKING:
    from tidings.server.gateway.connection import Session

__all__ = ["HEARTBEAT_S", "NODE_TTL_S", "SILENT_S", "RedisBroker"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
"""Seconds between a node's heartbeats (and between reconnect attempts when Redis is away)."""

NODE_TTL_S = 6.0
"""A node that has not beaten for this long is dead: its routes are ignored."""

SILENT_S = 2 * HEARTBEAT_S + 1.0
"""A node that has not heard its own ping for this long counts Redis as lost (a silent drop)."""

CLAIM_BATCH = 1_000
"""Route claims sent to Redis in one pipeline (hellos arriving together)."""

RETRY_S = 0.5
"""Seconds between heartbeats while Redis is lost: the way back is found quickly."""

# Route a device to this node for a session of epoch ARGV[3], unless a newer session of it
# holds the route. Answers {1, the route replaced} or {0, the newer route}.
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  if bar and tonumber(string.sub(cur, bar + 1)) > tonumber(ARGV[3]) then
    return {0, cur}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return {1, cur}
"""

# Remove a device's route only if it is still this session's (node|epoch).
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


_RouteOp = tuple[str, str, int, bool]
"""A route claim (True) or release (False) of app, device and session epoch."""


class RedisBroker:
    """Broker for one node of a cluster: local devices directly, the others through Redis."""

    def __init__(
        self,
        url: str,
        hub: Hub,
        node_id: str,
        *,
        prefix: str = "tidings:",
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.local = InProcessBroker(hub)
        """This node's own devices are reached as a single node reaches them."""
        self.node_id = node_id
        self.prefix = prefix
        self.redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.healthy = False
        self.on_reconnect = on_reconnect
        """Called when Redis is reachable again after an outage (the node replays sessions)."""
        self.fanout_publishes = 0  # PUBLISH commands of deliveries, for metrics and tests
        self._outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._heard = time.monotonic()  # when this node last heard its own ping
        self._lost_at = 0.0  # when Redis was last counted as lost
        self._listener: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._routing: Batches[_RouteOp, bool | None] = Batches(self._route_batch,
                                                                limit=CLAIM_BATCH)  # fmt: skip

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Beat once (failing loudly if Redis is unreachable), then listen and beat on."""
        await self._beat()
        self.healthy = True
        self._heard = time.monotonic()
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen(), name="tidings-broker-listen")
        self._tasks = [
            loop.create_task(self._heartbeat(), name="tidings-broker-heartbeat"),
            loop.create_task(self._send_loop(), name="tidings-broker-send"),
        ]

    async def stop(self) -> None:
        """Stop listening; this node's routes and heartbeat go away with it."""
        self._routing.cancel()
        tasks = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self._node_key(self.node_id))
        await self.redis.aclose()

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _routes(self, app: str) -> str:
        return f"{self.prefix}route:{app}"

    def _channel(self, node_id: str) -> str:
        return f"{self.prefix}to:{node_id}"

    async def _beat(self) -> bool:
        """Beat and ping this node's own channel; False if the heartbeat key had vanished."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(self.node_id), b"1", px=int(NODE_TTL_S * 1000), get=True)
            pipe.publish(self._channel(self.node_id), _pack(("ping", self.node_id)))
            was, _ = await pipe.execute()
        return was is not None

    def _lost(self, why: str) -> None:
        if self.healthy:
            log.warning("broker: %s; serving local devices only until it is back", why)
        self.healthy = False
        self._lost_at = time.monotonic()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S if self.healthy else RETRY_S)
            try:
                kept = await self._beat()
            except (RedisError, OSError) as exc:
                self._lost(f"Redis unreachable ({exc})")
                continue
            if not kept and self.healthy:
                self._lost("Redis lost this node's keys (restarted empty, or away too long)")
            silent = time.monotonic() - self._heard
            if silent > SILENT_S and not await self._hears_a_ping():
                self._lost(f"nothing heard from Redis for {silent:.1f} s")
                self._relisten()
            elif not self.healthy and self._heard > self._lost_at:
                # It hears its own ping again, so it listens on its channel: come back.
                await self._rejoin()

    async def _hears_a_ping(self) -> bool:
        """Ping once more and give the listener :data:`HEARTBEAT_S` to hear it.

        A process whose event loop was busy for seconds (a connect storm) wakes this task and
        the listener together, with the answer to the last ping unread in the socket: judged
        before the listener runs, the subscription would look dead and every session would
        replay its queue, on top of the storm. A dead subscription hears nothing either way.
        """
        asked = time.monotonic()
        try:
            await self.redis.publish(self._channel(self.node_id), _pack(("ping", self.node_id)))
        except (RedisError, OSError):
            return False
        while time.monotonic() - asked < HEARTBEAT_S:
            await asyncio.sleep(0.05)
            if self._heard >= asked:
                return True
        return False

    def _relisten(self) -> None:
        """Drop the subscription, which may be dead without knowing it, and subscribe again."""
        if self._listener is not None:
            self._listener.cancel()
        self._heard = time.monotonic()  # give the new subscription its own SILENT_S
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name="tidings-broker-listen"
        )

    async def _rejoin(self) -> None:
        try:
            replaced = await self._reregister()
        except (RedisError, OSError) as exc:
            self._lost(f"Redis unreachable ({exc})")
            return
        log.info("broker: Redis is back; routes registered again, sessions replaying")
        for session in replaced:
            session.close(codes.CLOSE_REPLACED, "the same device connected elsewhere")
        self.healthy = True
        if self.on_reconnect is not None:
            self.on_reconnect()
        # What this node published meanwhile is lost for the others too: they replay
        # their sessions as well.
        self._outbox.put_nowait(("all", ("rejoined",)))

    async def _reregister(self) -> list[Session]:
        """Claim every local session's route again (by epoch); the sessions a newer one
        replaced meanwhile, on another node, are returned to be closed."""
        sessions = self.hub.all()
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in sessions:
                pipe.eval(_CLAIM, 1, self._routes(session.app), session.device, self.node_id,
                          session.epoch)  # fmt: skip
            answers = await pipe.execute()
        return [
            session
            for session, answer in zip(sessions, answers, strict=True)
            if not self._claimed(session.app, session.device, session.epoch, answer)
        ]

    # --- routes -------------------------------------------------------------------------------

    async def claim_device(self, app: str, device: str, epoch: int) -> bool:
        """Route ``device`` here for its session of ``epoch``; an older session on another
        node is closed there. False when a newer session holds the route.

        Claims made together share a round trip: while one batch is on its way, the next
        gathers (at most :data:`CLAIM_BATCH`), in the order they were made, so one device's
        later claim follows its earlier one. A connect storm costs Redis one connection and a
        pipeline per batch instead of a connection per hello.
        """
        claimed = await self._routing((app, device, epoch, True))
        return bool(claimed)

    async def _route_batch(self, ops: list[_RouteOp]) -> list[bool | None]:
        """Send route claims and releases, in order, in one pipeline; each claim's answer."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for app, device, epoch, claim in ops:
                    if claim:
                        pipe.eval(_CLAIM, 1, self._routes(app), device, self.node_id, epoch)
                    else:
                        pipe.eval(_RELEASE, 1, self._routes(app), device,
                                  f"{self.node_id}|{epoch}")  # fmt: skip
                answers = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            answers = [exc] * len(ops)
        out: list[bool | None] = []
        for (app, device, epoch, claim), answer in zip(ops, answers, strict=True):
            if not claim:  # a failed release leaves a stale route: the next claim replaces it
                out.append(None)
            elif isinstance(answer, Exception):
                self._lost(f"cannot route {app}/{device} here ({answer})")
                out.append(True)  # served here; routes are registered again when Redis is back
            else:
                out.append(self._claimed(app, device, epoch, answer))
        return out

    def _claimed(self, app: str, device: str, epoch: int, answer: list[Any]) -> bool:
        """Act on :data:`_CLAIM`'s answer: kick the older session another node held; False
        when a newer session holds the route."""
        ok, old = answer
        if ok and old is not None and _node_of(old) != self.node_id:
            self._outbox.put_nowait(("kick", (_node_of(old), app, device, epoch)))
        return bool(ok)

    async def release_device(self, app: str, device: str, epoch: int) -> None:
        """Forget ``device``'s route, if it is still this session's (with the claims and
        releases made together, in one pipeline: a crowd leaving at once costs one round
        trip per batch, and never a connection each)."""
        await self._routing((app, device, epoch, False))

    # --- the Broker interface -----------------------------------------------------------------

    def deliver(self, app: str, targets: Sequence[tuple[str, int]], msg_wire: bytes) -> int:
        """Write to devices connected here now; publish the rest to their nodes."""
        written = 0
        remote: list[tuple[str, int]] = []
        get = self.hub.get
        for device, seq in targets:
            session = get(app, device)
            if session is None:
                remote.append((device, seq))
            elif session.push_delivery(seq, msg_wire):
                written += 1
        if remote:
            self._outbox.put_nowait(("deliver", (app, remote, msg_wire)))
        return written

    def revoke(self, app: str, devices: Sequence[str], message_ids: Sequence[str]) -> None:
        self.local.revoke(app, devices, message_ids)
        self._outbox.put_nowait(("all", ("revoke", app, list(devices), list(message_ids))))

    def inbox(self, app: str, user_key: str, state: InboxState, exclude: str | None) -> None:
        frame = encode(state)
        self.local.inbox_frame(app, user_key, frame, exclude)
        self._outbox.put_nowait(("all", ("inbox", app, user_key, frame, exclude)))

    # --- to Redis, in order -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            kind, payload = await self._outbox.get()
            try:
                if kind == "deliver":
                    await self._publish_deliveries(*payload)
                elif kind == "kick":
                    node, app, device, epoch = payload
                    await self._publish(node, ("kick", app, device, epoch, self.node_id))
                else:
                    await self._publish("*", (*payload, self.node_id))
            except (RedisError, OSError) as exc:
                # The store has it: the node holding the device finds it there (it checks its
                # sessions against the store every second, and replays when Redis is back).
                self._lost(f"publish failed, devices will replay ({exc})")

    async def _publish_deliveries(
        self, app: str, targets: list[tuple[str, int]], msg_wire: bytes
    ) -> None:
        devices = [d for d, _ in targets]
        routes = await self.redis.hmget(self._routes(app), devices)  # type: ignore[misc]
        per_node: dict[str, list[tuple[str, int]]] = {}
        for (device, seq), route in zip(targets, routes, strict=True):
            node = None if route is None else _node_of(route)
            if node is not None and node != self.node_id:
                per_node.setdefault(node, []).append((device, seq))
        if not per_node:
            return
        nodes = list(per_node)
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.exists(self._node_key(node))
            alive = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for node, up in zip(nodes, alive, strict=True):
                if up:  # a dead node's devices reconnect elsewhere and replay from the store
                    pipe.publish(self._channel(node), _pack(("deliver", app, per_node[node],
                                                             msg_wire)))  # fmt: skip
            self.fanout_publishes += len(await pipe.execute())

    async def _publish(self, node: str, message: tuple[Any, ...]) -> None:
        channel = f"{self.prefix}all" if node == "*" else self._channel(node)
        await self.redis.publish(channel, _pack(message))

    # --- from Redis ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._channel(self.node_id), f"{self.prefix}all")
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        self._on_message(item["data"])
            except (RedisError, OSError) as exc:
                self._lost(f"subscription lost ({exc})")
                await asyncio.sleep(RETRY_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_message(self, data: bytes) -> None:
        try:
            message = msgpack.unpackb(data, raw=False, use_list=True)
            kind = message[0]
            if kind == "deliver":
                _, app, batch, msg_wire = message
                for device, seq in batch:
                    session = self.hub.get(app, device)
                    if session is not None:
                        session.push_delivery(seq, msg_wire)
            elif kind == "ping":
                if message[1] == self.node_id:
                    self._heard = time.monotonic()
            elif kind == "kick":
                # Only a session older than the one that claimed the route: a kick can arrive
                # late, after the device came back here with a newer session.
                _, app, device, epoch, new_node = message
                session = self.hub.get(app, device)
                if session is not None and new_node != self.node_id and session.epoch < epoch:
                    session.close(codes.CLOSE_REPLACED, "the same device connected elsewhere")
            elif message[-1] != self.node_id:  # our own broadcasts were done locally
                if kind == "revoke":
                    self.local.revoke(message[1], message[2], message[3])
                elif kind == "inbox":
                    self.local.inbox_frame(message[1], message[2], message[3], message[4])
                elif kind == "rejoined" and self.on_reconnect is not None:
                    self.on_reconnect()
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            log.warning("broker: dropped a malformed message: %s", exc)


def _node_of(route: bytes | str) -> str:
    """The node of a route (``node|epoch``)."""
    text = route.decode() if isinstance(route, bytes) else route
    return text.split("|", 1)[0]


def _pack(message: tuple[Any, ...]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed
