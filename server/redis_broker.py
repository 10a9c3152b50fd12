"""The Redis broker: deliveries, revokes and inbox changes reach devices on any gateway node.

Several gateway processes on one store form a cluster; each holds some devices' connections.
Routes live in Redis: ``{prefix}route:{app}`` maps a device to the node holding its session,
and ``{prefix}node:{id}`` is that node's heartbeat key, which expires :data:`NODE_TTL_S` after
its last beat — a dead node's routes lead nowhere. Each node listens on its own channel
``{prefix}to:{id}``.

A fan-out costs one ``HMGET`` of the routes of the devices not connected here and one
``PUBLISH`` per node (pipelined), never one per device. Revokes and inbox changes, which are
rare, go to every node on ``{prefix}all``.

When Redis is out of reach a node keeps serving its own devices, reports itself unhealthy, and
once Redis is back re-registers its routes, asks each local session to replay what it may have
missed from the store (:attr:`on_reconnect`), and tells every other node to do the same (what
it could not publish meanwhile was meant for them): deliveries are in the store before they are
published, so a lost publish loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tidings.protocol import codes
from tidings.protocol.codec import encode
from tidings.protocol.frames import InboxState
from tidings.server.broker import InProcessBroker
from tidings.server.hub import Hub

__all__ = ["HEARTBEAT_S", "NODE_TTL_S", "RedisBroker"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
"""Seconds between a node's heartbeats (and between reconnect attempts when Redis is away)."""

NODE_TTL_S = 6.0
"""A node that has not beaten for this long is dead: its routes are ignored."""

# Swap a device's route to this node (atomically) and number the claim: a claim made later
# gets a higher ticket, so a kick that arrives late cannot close a newer session. Answers the
# ticket and the node that held the route.
_CLAIM = """
local ticket = redis.call('INCR', KEYS[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {ticket, old}
"""

# Remove a device's route only if it still leads here (a newer session elsewhere keeps its own).
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


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
        on_change: Callable[[tuple[Any, ...]], None] | None = None,
    ) -> None:
        self.hub = hub
        self.local = InProcessBroker(hub)
        """This node's own devices are reached as a single node reaches them."""
        self.on_change = on_change
        """Called with each change another node announced (:meth:`announce`)."""
        self.node_id = node_id
        self.prefix = prefix
        self.redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.healthy = False
        self.on_reconnect = on_reconnect
        """Called when Redis is reachable again after an outage (the node replays sessions)."""
        self.fanout_publishes = 0  # PUBLISH commands of deliveries, for metrics and tests
        self._outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # The hello ticket of each device session held here (a kick names the claim's ticket).
        self._tickets: dict[tuple[str, str], int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Beat once (failing loudly if Redis is unreachable), then listen and beat on."""
        await self._beat()
        self.healthy = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="tidings-broker-listen"),
            loop.create_task(self._heartbeat(), name="tidings-broker-heartbeat"),
            loop.create_task(self._send_loop(), name="tidings-broker-send"),
        ]

    async def stop(self) -> None:
        """Stop listening; this node's routes and heartbeat go away with it."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
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

    async def _beat(self) -> None:
        await self.redis.set(self._node_key(self.node_id), b"1", px=int(NODE_TTL_S * 1000))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("broker: Redis unreachable, serving local devices only: %s", exc)
                self.healthy = False
                continue
            if not self.healthy:
                log.info("broker: Redis is back; re-registering routes and replaying sessions")
                await self._reregister()
                self.healthy = True
                if self.on_reconnect is not None:
                    self.on_reconnect()
                # What this node published meanwhile is lost for the others too: they replay
                # their sessions and re-read the audience as well.
                self._outbox.put_nowait(("all", ("rejoined",)))

    async def _reregister(self) -> None:
        by_app: dict[str, dict[str, str]] = {}
        for session in self.hub.all():
            by_app.setdefault(session.app, {})[session.device] = self.node_id
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=False) as pipe:
                for app, routes in by_app.items():
                    pipe.hset(self._routes(app), mapping=routes)  # type: ignore[arg-type]
                await pipe.execute()

    # --- routes -------------------------------------------------------------------------------

    async def claim_device(self, app: str, device: str) -> None:
        """Route ``device`` to this node; a session it had on another node is closed there."""
        try:
            ticket, old = await self.redis.eval(  # type: ignore[misc]
                _CLAIM, 2, self._routes(app), f"{self.prefix}claims:{app}", device, self.node_id
            )
        except (RedisError, OSError) as exc:
            self.healthy = False
            log.warning("broker: cannot route %s/%s here: %s", app, device, exc)
            return  # served here; routes are re-registered when Redis is back
        self._tickets[(app, device)] = int(ticket)
        if old is not None and _text(old) != self.node_id:
            self._outbox.put_nowait(("kick", (_text(old), app, device, int(ticket))))

    async def release_device(self, app: str, device: str) -> None:
        """Forget ``device``'s route, if it still leads here."""
        self._tickets.pop((app, device), None)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.eval(_RELEASE, 1, self._routes(app), device, self.node_id)  # type: ignore[misc]

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

    def announce(self, change: tuple[Any, ...]) -> None:
        self._outbox.put_nowait(("all", ("change", list(change))))

    # --- to Redis, in order -------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            kind, payload = await self._outbox.get()
            try:
                if kind == "deliver":
                    await self._publish_deliveries(*payload)
                elif kind == "kick":
                    node, app, device, ticket = payload
                    await self._publish(node, ("kick", app, device, ticket, self.node_id))
                else:
                    await self._publish("*", (*payload, self.node_id))
            except (RedisError, OSError) as exc:
                # The store has it: the device gets it at its next replay (reconnect, or the
                # replay every session does when Redis is back).
                if self.healthy:
                    log.warning("broker: publish failed, devices will replay: %s", exc)
                self.healthy = False

    async def _publish_deliveries(
        self, app: str, targets: list[tuple[str, int]], msg_wire: bytes
    ) -> None:
        devices = [d for d, _ in targets]
        routes = await self.redis.hmget(self._routes(app), devices)  # type: ignore[misc]
        per_node: dict[str, list[tuple[str, int]]] = {}
        for (device, seq), route in zip(targets, routes, strict=True):
            node = None if route is None else _text(route)
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
                self.healthy = False
                log.debug("broker: subscription lost: %s", exc)
                await asyncio.sleep(HEARTBEAT_S)
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
            elif kind == "kick":
                # Only a session older than the claim that replaced it: a kick can arrive late,
                # after the device came back here with a newer session.
                _, app, device, ticket, new_node = message
                session = self.hub.get(app, device)
                mine = self._tickets.get((app, device), 0)
                if session is not None and new_node != self.node_id and mine < ticket:
                    self._tickets.pop((app, device), None)
                    session.close(codes.CLOSE_REPLACED, "the same device connected elsewhere")
            elif message[-1] != self.node_id:  # our own broadcasts were done locally
                if kind == "revoke":
                    self.local.revoke(message[1], message[2], message[3])
                elif kind == "inbox":
                    self.local.inbox_frame(message[1], message[2], message[3], message[4])
                elif kind == "change" and self.on_change is not None:
                    self.on_change(tuple(message[1]))
                elif kind == "rejoined" and self.on_reconnect is not None:
                    self.on_reconnect()
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            log.warning("broker: dropped a malformed message: %s", exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pack(message: tuple[Any, ...]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed
