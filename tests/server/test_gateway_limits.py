"""Connection limits of the gateway over real sockets: bounded output whatever the peer sends,
control frames under the rate limit, heartbeat and hello timeouts with their Tidings codes, and
frame-size caps in both directions (PROTOCOL.md §2, §5, §7, §10)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio
from helpers import gateway_config, timeout
from rawclient import RawClient, open_session
from websockets.client import ClientProtocol
from websockets.frames import CLOSE, PING, Close
from websockets.frames import Frame as WsFrame
from websockets.protocol import State
from websockets.uri import parse_uri

from tidings.protocol import SUBPROTOCOL, codes
from tidings.protocol.codec import encode, encode_message
from tidings.protocol.frames import Error, Hello, Ping, Pong, Welcome
from tidings.server.node import Node, SendRequest
from tidings.server.storage import Outcome, OutMessage

Mint = Callable[..., str]


@pytest_asyncio.fixture
async def make_node(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> AsyncIterator[Callable[..., Any]]:
    """Start nodes with configuration overrides; stop them all at the end."""
    nodes: list[Node] = []

    async def make(**overrides: Any) -> Node:
        node = Node(gateway_config(tmp_path / f"n{len(nodes)}.db", **overrides))
        await node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.stop()


class RawSocket:
    """A WebSocket client made of a plain socket and websockets' sans-I/O protocol: it sends
    exactly what a test says and reads only when told, so it can ignore pings or never read."""

    def __init__(self, sock: socket.socket, proto: ClientProtocol) -> None:
        self.sock = sock
        self.proto = proto
        self.loop = asyncio.get_running_loop()
        self.pings_seen = 0

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> RawSocket:
        sock = socket.socket()
        if rcvbuf is not None:  # a small window: what the server writes stays on its side
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"), subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        proto.send_request(proto.connect())
        raw = cls(sock, proto)
        await raw.flush()
        while proto.state is State.CONNECTING:
            await raw.read()
        assert proto.handshake_exc is None, proto.handshake_exc
        return raw

    async def flush(self) -> None:
        """Send what the protocol queued (frames, and answers to pings if any)."""
        await self.loop.sock_sendall(self.sock, b"".join(self.proto.data_to_send()))

    async def read(self) -> None:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout(5))
        if data:
            self.proto.receive_data(data)
        else:
            self.proto.receive_eof()

    async def send_frame(self, payload: bytes) -> None:
        self.proto.send_binary(payload)
        await self.flush()

    async def close_code_ignoring_pings(self, seconds: float) -> int | None:
        """Read until the server's close frame, never answering its pings; its code."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.read()
            self.proto.data_to_send()  # drop the automatic pongs: this peer never answers
            for event in self.proto.events_received():
                if isinstance(event, WsFrame) and event.opcode is PING:
                    self.pings_seen += 1
                if isinstance(event, WsFrame) and event.opcode is CLOSE:
                    return Close.parse(event.data).code
            if self.proto.state is State.CLOSED:
                return None
        raise AssertionError("no close frame in time")

    def close(self) -> None:
        self.sock.close()


def ping_flood(count: int) -> bytes:
    """``count`` masked WebSocket PING frames with the largest control payload (125 bytes)."""
    proto = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=State.OPEN)
    for i in range(count):
        proto.send_ping(i.to_bytes(4, "big") * 31 + b"x")
    return b"".join(proto.data_to_send())


async def flood_until_aborted(raw: RawSocket, seconds: float, pings: int = 2000) -> float:
    """Send PINGs, ``pings`` at a time, and read nothing until the server drops the
    connection; how long it took."""
    chunk = ping_flood(pings)  # 131 bytes each
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            await asyncio.wait_for(raw.loop.sock_sendall(raw.sock, chunk), 1)
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        except TimeoutError:
            # Our own send buffer is full: the server stopped reading us. Check it is gone.
            try:
                raw.sock.send(b"")
                if raw.sock.recv(1, socket.MSG_PEEK) == b"":
                    return time.monotonic() - start
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - start
            except BlockingIOError:
                pass
    raise AssertionError(f"the server still holds the connection after {seconds} s")


@pytest.mark.parametrize(
    ("after_hello", "pings"), [(False, 2000), (True, 2000), (False, 20), (True, 20)]
)
async def test_a_peer_flooding_pings_and_never_reading_is_aborted_with_bounded_output(
    make_node: Callable[..., Any], mint: Mint, after_hello: bool, pings: int
) -> None:
    # A rate limit out of reach, so that only the bound on unsent bytes can stop the flood.
    queue = 64 * 1024
    node = await make_node(send_queue_bytes=queue, rate_limit_per_s=1e9, rate_burst=10**9)
    raw = await RawSocket.connect(node.port, rcvbuf=4096)
    try:
        if after_hello:
            await raw.send_frame(encode(Hello(token=mint("flooder", user="u1"))))
            await asyncio.sleep(0.2)
            assert node.connected_devices() == 1
        took = await flood_until_aborted(raw, timeout(10), pings)
    finally:
        raw.close()
    assert took < timeout(5)
    assert node.metrics.write_overflows >= 1
    assert node.metrics.write_buffer_peak <= queue  # never more unsent than the limit
    if pings < 100:  # small batches: pongs did pile up in the gateway, up to the limit
        assert node.metrics.write_buffer_peak > 0
    await asyncio.sleep(0.1)
    assert node.connected_devices() == 0


async def test_websocket_pings_count_toward_the_rate_limit(
    make_node: Callable[..., Any], mint: Mint
) -> None:
    node = await make_node(rate_limit_per_s=5.0, rate_burst=10)
    client = await open_session(node.port, mint("d1", user="u1"))
    for i in range(40):
        await client.ws.ping(f"p{i}")  # control frames, never seen by the pump
    err = await client.recv_until(Error)
    assert err.code == "rate_limited"
    assert await client.close_code() == codes.CLOSE_RATE_LIMITED
    assert node.metrics.rate_limited == 1


async def test_a_peer_that_ignores_pings_is_closed_with_4103(
    make_node: Callable[..., Any], mint: Mint
) -> None:
    node = await make_node(heartbeat_s=0.2)
    raw = await RawSocket.connect(node.port)
    try:
        await raw.send_frame(encode(Hello(token=mint("deaf", user="u1"))))
        code = await raw.close_code_ignoring_pings(timeout(3))
    finally:
        raw.close()
    assert code == codes.CLOSE_HEARTBEAT_TIMEOUT
    assert raw.pings_seen >= 1  # pinged, and closed because the ping went unanswered
    assert codes.should_reconnect(code)
    assert node.metrics.heartbeat_timeouts == 1


async def test_a_peer_that_answers_pings_stays_through_many_intervals(
    make_node: Callable[..., Any], mint: Mint
) -> None:
    node = await make_node(heartbeat_s=0.2)
    raw = await RawSocket.connect(node.port)
    try:
        await raw.send_frame(encode(Hello(token=mint("alive", user="u1"))))
        deadline = time.monotonic() + 1.5  # seven intervals
        while time.monotonic() < deadline:
            await raw.read()
            await raw.flush()  # the automatic pongs go back
            for event in raw.proto.events_received():
                assert not (isinstance(event, WsFrame) and event.opcode is CLOSE), event
                raw.pings_seen += isinstance(event, WsFrame) and event.opcode is PING
    finally:
        raw.close()
    assert raw.pings_seen >= 4
    assert node.metrics.heartbeat_timeouts == 0


async def test_no_hello_in_time_closes_with_a_code_the_client_may_retry(
    make_node: Callable[..., Any],
) -> None:
    node = await make_node(hello_timeout_s=0.2)
    client = await RawClient.connect(node.port)
    code = await client.close_code()
    assert code == codes.CLOSE_HELLO_TIMEOUT
    assert codes.should_reconnect(code)
    assert node.metrics.hello_timeouts == 1


@pytest.mark.parametrize("after_hello", [False, True])
async def test_a_frame_over_the_cap_gets_frame_too_large_before_the_1009_close(
    gateway: Node, mint: Mint, after_hello: bool
) -> None:
    if after_hello:
        client = await open_session(gateway.port, mint("d1", user="u1"))
    else:
        client = await RawClient.connect(gateway.port)
    await client.ws.send(b"\x00" * (gateway.config.max_frame_bytes + 1))
    err = await client.recv_until(Error)
    assert err.code == "frame_too_large"
    assert await client.close_code() == 1009


def _stored(message_id: str, body: str, now_ms: int) -> tuple[OutMessage, bytes]:
    from tidings.protocol.frames import Message

    msg = Message(id=message_id, kind="inbox", title="t", body=body, category="transactional",
                  created_at=now_ms, expires_at=now_ms + 60_000)  # fmt: skip
    wire = encode_message(msg)
    fields = {"kind": "inbox", "category": "transactional", "priority": "normal",
              "created_at": now_ms / 1000, "expires_at": now_ms / 1000 + 60}  # fmt: skip
    return OutMessage(message_id=message_id, fields=fields, wire=wire,
                      targets=(("d1", "u1"),)), wire  # fmt: skip


async def test_a_stored_delivery_over_the_frame_cap_is_skipped_on_replay_and_live(
    make_node: Callable[..., Any], mint: Mint
) -> None:
    # Stored before the cap was lowered (or by a node with a larger cap): over 1,024 bytes.
    node = await make_node(max_frame_bytes=1024)
    await (await open_session(node.port, mint("d1", user="u1"))).close()  # d1 is known
    # That session's hello (and its replay of the queue) must be over before anything is stored.
    for _ in range(int(timeout(5) / 0.01)):
        if node.hub.get("demo", "d1") is None:
            break
        await asyncio.sleep(0.01)
    assert node.hub.get("demo", "d1") is None
    now_ms = int(node.clock() * 1000)
    big, _ = _stored("big", "x" * 2000, now_ms)
    await node.store.commit("demo", Outcome(), [big])  # seq 1
    client = await RawClient.connect(node.port)
    assert isinstance(await client.hello(mint("d1", user="u1")), Welcome)
    sizes: list[int] = []

    async def next_deliver() -> dict[str, Any]:
        while True:
            data = await asyncio.wait_for(client.ws.recv(), timeout(5))
            assert isinstance(data, bytes)
            sizes.append(len(data))
            frame: dict[str, Any] = msgpack.unpackb(data)
            if frame["t"] == "deliver":
                return frame

    small = await node.send(SendRequest(app="demo", devices=("d1",), title="t", body="small"))
    first = await next_deliver()
    assert (first["seq"], first["msg"]["id"]) == (2, small.message_id)
    # Live: a delivery over the cap reaches the node from the broker; it is skipped too, and
    # the next one still goes out.
    big_live, wire = _stored("big-live", "y" * 2000, now_ms)
    committed = await node.store.commit("demo", Outcome(), [big_live])  # seq 3
    node.broker.deliver("demo", committed.deliveries["big-live"], wire)
    after = await node.send(SendRequest(app="demo", devices=("d1",), title="t", body="after"))
    second = await next_deliver()
    assert (second["seq"], second["msg"]["id"]) == (4, after.message_id)
    assert await client.nothing_for()
    assert node.metrics.oversized_deliveries == 2
    assert max(sizes) <= 1024


async def test_welcome_announces_the_send_queue_limit(gateway: Node, mint: Mint) -> None:
    client = await RawClient.connect(gateway.port)
    welcome = await client.hello(mint("d1", user="u1"))
    assert isinstance(welcome, Welcome)
    assert welcome.limits["send_queue_bytes"] == gateway.config.send_queue_bytes
    assert welcome.limits["max_frame_bytes"] == gateway.config.max_frame_bytes


async def test_a_bystander_keeps_its_session_while_a_flooder_is_dropped(
    make_node: Callable[..., Any], mint: Mint
) -> None:
    node = await make_node(send_queue_bytes=64 * 1024, rate_limit_per_s=1e9, rate_burst=10**9)
    bystander = await open_session(node.port, mint("calm", user="u0"))
    raw = await RawSocket.connect(node.port, rcvbuf=4096)
    try:
        await flood_until_aborted(raw, timeout(10))
    finally:
        raw.close()
    await bystander.send(Ping(ts=3))
    assert await bystander.recv_until(Pong) == Pong(ts=3)
