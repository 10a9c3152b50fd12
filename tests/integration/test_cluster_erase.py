"""Erasure on a cluster: a device of the erased user connected to another node is ended there
too, and the user's inbox follows the user to a device on any node."""

from __future__ import annotations

import asyncio

from helpers import APP_A, timeout
from rawclient import open_session
from test_cluster import cluster, token

from tidings.protocol import codes
from tidings.protocol.frames import Deliver
from tidings.server.node import Node, SendRequest

__all__ = ["cluster"]  # the fixture, shared with test_cluster


async def test_erasing_through_one_node_ends_the_users_session_on_the_other(
    cluster: list[Node],
) -> None:
    a, b = cluster
    phone = await open_session(b.port, token("er-phone", "er-u"))
    other = await open_session(b.port, token("er-other", "er-v"))
    assert await a.erase_user(APP_A.id, "er-u") is True
    await asyncio.wait_for(phone.ws.wait_closed(), timeout(5))
    assert phone.ws.close_code == codes.CLOSE_ERASED
    assert await b.store.user(APP_A.id, "er-u") is None
    assert other.ws.close_code is None  # another user's session stays
    await other.close()


async def test_a_new_device_on_another_node_gets_the_inbox_sent_through_the_first(
    cluster: list[Node],
) -> None:
    a, b = cluster
    sent = await a.send(SendRequest(app=APP_A.id, users=("in-u",), kind="inbox", title="t",
                                    body="before any device"))  # fmt: skip
    assert (sent.devices, sent.no_device) == (0, 1)
    tablet = await open_session(b.port, token("in-tablet", "in-u"))
    got = await tablet.recv_until(Deliver, timeout=timeout(5))
    assert (got.msg.id, got.msg.kind, got.seq) == (sent.message_id, "inbox", 1)
    await tablet.close()
