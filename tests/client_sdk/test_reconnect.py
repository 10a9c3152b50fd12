"""Reconnecting: a session that fails right after its welcome does not reset the backoff, and the
split of gateway error codes into "retry later" and "refused for good"."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from helpers import timeout
from websockets.asyncio.server import ServerConnection, serve

from tidings.client_sdk import TidingsClient, is_temporary
from tidings.protocol import SUBPROTOCOL, codes, limits
from tidings.protocol.codec import encode
from tidings.protocol.frames import Welcome


async def test_a_device_closed_with_1009_after_every_welcome_waits_longer_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "random", lambda: 0.99)  # every jitter at the top of its window
    sessions: list[float] = []
    close_codes: list[int | None] = []

    async def wedged(ws: ServerConnection) -> None:
        # A gateway whose first delivery is over the SDK's frame limit, every time.
        await ws.recv()  # hello
        sessions.append(time.monotonic())
        await ws.send(encode(Welcome(session="s", device="d1", user=None, server_time=0,
                                     heartbeat_ms=25_000)))  # fmt: skip
        await ws.send(b"\x00" * (limits.MAX_FRAME_BYTES * 4 + 1))
        await ws.wait_closed()
        close_codes.append(ws.close_code)

    async with serve(wedged, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        client = TidingsClient(url=f"ws://127.0.0.1:{port}", token="t", device_id="d1",
                               backoff_base=0.05, backoff_cap=30.0)  # fmt: skip
        await client.start()
        try:
            deadline = time.monotonic() + timeout(10)
            while len(sessions) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await client.close()
    assert len(sessions) >= 5, sessions
    assert set(close_codes[:4]) == {1009}
    gaps = [b - a for a, b in itertools.pairwise(sessions)]
    # Windows of 0.05, 0.1, 0.2, 0.4 s: the welcome alone does not reset the backoff.
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert gaps[-1] > 3 * gaps[0], gaps


@pytest.mark.parametrize(
    ("code", "temporary"),
    [
        (codes.ERR_INTERNAL, True),
        (codes.ERR_RATE_LIMITED, True),
        ("overloaded", True),  # a code from a newer gateway: retry rather than lose data
        ("unavailable", True),
        (codes.ERR_INVALID_FIELD, False),
        (codes.ERR_FORBIDDEN, False),
        (codes.ERR_FRAME_TOO_LARGE, False),
        (codes.ERR_BAD_FRAME, False),
        (codes.ERR_UNKNOWN_FRAME, False),
        (codes.ERR_UNEXPECTED_FRAME, False),
        (codes.ERR_UNAUTHORIZED, False),
        (codes.ERR_TOKEN_EXPIRED, False),
        (codes.ERR_NOT_FOUND, False),
        (codes.ERR_CONFIG, False),
    ],
)
def test_gateway_error_codes_split_into_retry_later_and_refused_for_good(
    code: str, temporary: bool
) -> None:
    assert is_temporary(code) is temporary


def test_every_protocol_error_code_is_classified_on_purpose() -> None:
    permanent = {c for c in codes.ERROR_CODES if not is_temporary(c)}
    assert codes.ERROR_CODES - permanent == {codes.ERR_INTERNAL, codes.ERR_RATE_LIMITED}
