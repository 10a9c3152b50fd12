"""A later gateway may send what this SDK does not know: a message kind, a priority, a frame
type. The SDK keeps going (PROTOCOL.md §6, forward compatibility): it never closes over it, so
there is no reconnect loop that resends the same frame forever."""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest
from helpers import timeout
from websockets.asyncio.server import ServerConnection, serve

from tidings.client_sdk import TidingsClient
from tidings.protocol import SUBPROTOCOL
from tidings.protocol.codec import decode_client, encode
from tidings.protocol.errors import InvalidField
from tidings.protocol.frames import Ack, Message, Welcome


def test_a_message_of_a_kind_or_priority_this_version_does_not_know_reads_as_inbox() -> None:
    m = Message.from_wire({"id": "m1", "kind": "hologram", "title": "t", "body": "b",
                           "priority": "critical"})  # fmt: skip
    assert (m.kind, m.priority) == ("inbox", "normal")
    with pytest.raises(InvalidField):  # still a string, though
        Message.from_wire({"id": "m1", "kind": 7, "title": "t", "body": "b"})


async def test_the_sdk_keeps_and_acks_a_message_of_an_unknown_kind_and_skips_unknown_frames() -> (
    None
):
    hellos: list[float] = []
    acked: list[int] = []

    async def newer_gateway(ws: ServerConnection) -> None:
        await ws.recv()  # hello
        hellos.append(time.monotonic())
        await ws.send(encode(Welcome(session="s", device="d1", user=None, server_time=0,
                                     heartbeat_ms=25_000)))  # fmt: skip
        await ws.send(msgpack.packb({"t": "spotlight", "x": 1}))  # a frame type of later
        await ws.send(msgpack.packb({"t": "deliver", "seq": 1, "msg": {
            "id": "m1", "kind": "hologram", "title": "Hello", "body": "from the future",
            "category": "marketing", "priority": "normal", "created_at": 0,
            "expires_at": 4_102_444_800_000, "sent_at": 0}}))  # fmt: skip
        async for data in ws:
            frame = decode_client(data)  # type: ignore[arg-type]
            if isinstance(frame, Ack):
                acked.append(frame.seq)

    async with serve(newer_gateway, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        client = TidingsClient(url=f"ws://127.0.0.1:{port}", token="t", device_id="d1",
                               flush_delay=0.01, backoff_base=0.05)  # fmt: skip
        await client.start()
        try:
            deadline = time.monotonic() + timeout(5)
            while not acked and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # time enough for a reconnect, had it closed
            assert acked == [1]
            assert [(i.id, i.title) for i in client.inbox.items()] == [("m1", "Hello")]
            assert len(hellos) == 1 and client.connected
        finally:
            await client.close()
