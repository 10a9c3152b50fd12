"""The SDK given several gateways (no load balancer): when one stops, the client moves to the next
and keeps working there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import Device, gateway_config, timeout

from tidings.client_sdk import TidingsClient
from tidings.server.node import Node, SendRequest

Mint = Callable[..., str]


async def test_a_client_given_two_gateways_reconnects_to_the_second_when_the_first_stops(
    gateway: Node, tmp_path: Path, mint: Mint
) -> None:
    second = Node(gateway_config(tmp_path / "b.db"))
    await second.start()
    url_a, url_b = f"ws://127.0.0.1:{gateway.port}", f"ws://127.0.0.1:{second.port}"
    client = TidingsClient(url=[url_a, url_b], token=mint("phone", user="u1"),
                           device_id="phone", flush_delay=0.05)  # fmt: skip
    phone = Device(client)
    await client.start()
    try:
        await client.wait_connected(timeout=timeout(5))
        assert client.url == url_a
        client.track("before")
        await phone.until(lambda: not client.pending_requests)
        assert await gateway.store.count_events("demo") == 1

        await gateway.stop()  # graceful: goaway with a 0.5-3 s hint, then close
        await phone.until(lambda: not client.connected)
        await client.wait_connected(timeout=timeout(10))  # A refuses at once: B, no backoff
        assert client.url == url_b

        await client.identify("u1", {"plan": "pro"})
        client.track("after", {"n": 1})
        await phone.until(lambda: not client.pending_requests)
        assert await second.store.count_events("demo") == 1
        (profile,) = [p for p in await second.store.profile_rows("demo") if p.user_key == "u1"]
        assert profile.attrs["plan"] == "pro"
        sent = await second.send(SendRequest(app="demo", users=("u1",), title="t", body="b"))
        await phone.until(lambda: [b.id for b in phone.banners] == [sent.message_id])
    finally:
        await client.close()
        await second.stop()
