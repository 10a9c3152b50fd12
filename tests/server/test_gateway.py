"""The gateway over real WebSockets on loopback, driven frame by frame."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
from helpers import APP_B, gateway_config
from rawclient import RawClient, open_session
from websockets.asyncio.client import connect

from tidings.protocol import SUBPROTOCOL, codes
from tidings.protocol.codec import encode, encode_message
from tidings.protocol.frames import (
    Ack,
    Deliver,
    Error,
    Event,
    Events,
    GoAway,
    Identify,
    InboxChange,
    InboxState,
    InboxUpdate,
    Message,
    Ok,
    Ping,
    Pong,
    Prefs,
    Receipt,
    Revoke,
    Welcome,
)
from tidings.server.node import Node, SendRequest
from tidings.server.storage import Outcome, OutMessage, SqliteStore

Mint = Callable[..., str]


def db_rows(node: Node, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(node.config.db) as db:
        return db.execute(sql).fetchall()


async def test_bad_forged_expired_and_foreign_tokens_are_refused_before_a_session(
    gateway: Node, mint: Mint
) -> None:
    expired = mint("d1", ttl=1)
    real_clock = gateway.clock
    gateway.clock = lambda: 10**10  # far future: every token has expired
    client = await RawClient.connect(gateway.port)
    answer = await client.hello(expired)
    assert isinstance(answer, Error) and answer.code == "token_expired"
    assert await client.close_code() == codes.CLOSE_TOKEN_EXPIRED
    gateway.clock = real_clock
    bad = ["not-a-token", mint("d1")[:-4] + "AAAA"]  # garbage; a forged signature
    for token in bad:
        client = await RawClient.connect(gateway.port)
        answer = await client.hello(token)
        assert isinstance(answer, Error) and answer.code == "unauthorized"
        assert await client.close_code() == codes.CLOSE_UNAUTHORIZED
    # A valid token of app B, signed with app A's secret, claiming app B: forged.
    from tidings.protocol.tokens import mint_token

    forged = mint_token(secret="secret-of-demo-app", app=APP_B.id, device="d1")
    client = await RawClient.connect(gateway.port)
    assert isinstance(await client.hello(forged), Error)
    assert await client.close_code() == codes.CLOSE_UNAUTHORIZED
    assert db_rows(gateway, "SELECT * FROM devices") == []
    assert gateway.connected_devices() == 0


async def test_events_before_hello_and_garbage_get_an_error_and_a_close(
    gateway: Node, mint: Mint
) -> None:
    bystander = await open_session(gateway.port, mint("bystander", user="u0"))
    client = await RawClient.connect(gateway.port)
    await client.send(Events(rid=1, events=()))
    assert isinstance(await client.recv(), Error)
    assert await client.close_code() == codes.CLOSE_BAD_FRAME
    for garbage in [b"\xc1", b"\x81\xa1t\xa5nope!", msgpack.packb([1, 2]), b"\xdd\xff\xff\xff\xff"]:
        client = await open_session(gateway.port, mint("g", user="u1"))
        await client.ws.send(garbage)
        error = await client.recv_until(Error)
        assert error.code in {"bad_frame", "unknown_frame", "invalid_field"}
        assert await client.close_code() == codes.CLOSE_BAD_FRAME
    client = await open_session(gateway.port, mint("g", user="u1"))
    await client.ws.send("text is not allowed")
    assert (await client.recv_until(Error)).code == "bad_frame"
    # Oversized: refused by the WebSocket layer with 1009.
    client = await open_session(gateway.port, mint("g", user="u1"))
    await client.ws.send(b"\x00" * (gateway.config.max_frame_bytes + 1))
    assert await client.close_code() == 1009
    # The bystander was never disturbed.
    await bystander.send(Ping(ts=7))
    assert await bystander.recv_until(Pong) == Pong(ts=7)


async def test_send_reaches_every_device_of_a_user_and_resume_resends_only_unacked(
    gateway: Node, mint: Mint
) -> None:
    phone = await open_session(gateway.port, mint("phone", user="u1"))
    tablet = await open_session(gateway.port, mint("tablet", user="u1"))
    result = await gateway.send(SendRequest(app="demo", users=("u1",), title="Hi", body="one"))
    assert result.devices == 2 and result.users == 1
    for device in (phone, tablet):
        d = await device.recv_until(Deliver)
        assert (d.seq, d.msg.id, d.msg.body) == (1, result.message_id, "one")
        assert d.msg.sent_at > 0
    await phone.send(Ack(seq=1))
    await asyncio.sleep(0.05)
    second = await gateway.send(SendRequest(app="demo", users=("u1",), title="Hi", body="two"))
    assert (await phone.recv_until(Deliver)).seq == 2
    await phone.close()
    await tablet.close()
    # Phone acked 1 but not 2: resuming from 1 resends only 2.
    phone = await open_session(gateway.port, mint("phone", user="u1"), resume=1)
    again = await phone.recv_until(Deliver)
    assert (again.seq, again.msg.id) == (2, second.message_id)
    assert await phone.nothing_for()
    # Resume from 2 acknowledges everything: nothing more comes.
    await phone.close()
    phone = await open_session(gateway.port, mint("phone", user="u1"), resume=2)
    assert await phone.nothing_for()


async def test_offline_device_gets_the_message_on_connect_and_sequence_survives_restart(
    tmp_path: Path, mint: Mint, loop_errors: list[object]
) -> None:
    config = gateway_config(tmp_path / "t.db")
    node = Node(config)
    await node.start()
    first = await open_session(node.port, mint("d1", user="u1"))
    await first.close()
    sent = await node.send(SendRequest(app="demo", users=("u1",), title="t", body="offline"))
    await node.stop()
    node = Node(config)
    await node.start()
    try:
        client = await open_session(node.port, mint("d1", user="u1"))
        d = await client.recv_until(Deliver)
        assert (d.seq, d.msg.id) == (1, sent.message_id)
        await client.send(Ack(seq=1))
        await asyncio.sleep(0.05)
        nxt = await node.send(SendRequest(app="demo", devices=("d1",), title="t", body="next"))
        assert nxt.devices == 1
        assert (await client.recv_until(Deliver)).seq == 2
    finally:
        await node.stop()


async def test_revoked_and_expired_messages_are_never_sent(gateway: Node, mint: Mint) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    await client.close()
    revoked = await gateway.send(
        SendRequest(app="demo", category="transactional", users=("u1",), title="t", body="gone")
    )
    assert await gateway.revoke("demo", revoked.message_id)
    assert not await gateway.revoke("other", revoked.message_id)  # not another app's to revoke
    expiring = await gateway.send(
        SendRequest(
            app="demo", category="transactional", users=("u1",), title="t", body="old", ttl=60
        )
    )
    kept = await gateway.send(
        SendRequest(app="demo", category="transactional", users=("u1",), title="t", body="kept")
    )
    real = gateway.clock
    gateway.clock = lambda: real() + 120
    client = await open_session(gateway.port, mint("d1", user="u1"))
    d = await client.recv_until(Deliver)
    assert d.msg.id == kept.message_id  # neither the revoked nor the expired one came first
    # The revocation also reaches the device as inbox state, in case it already had it.
    state = await client.recv_until(InboxState)
    assert [(c.id, c.state) for c in state.changes] == [(revoked.message_id, "deleted")]
    assert await client.nothing_for()
    assert expiring.message_id != kept.message_id


async def test_revoke_reaches_a_connected_device_and_an_offline_one_through_inbox_sync(
    gateway: Node, mint: Mint
) -> None:
    online = await open_session(gateway.port, mint("on", user="u1"))
    offline = await open_session(gateway.port, mint("off", user="u1"))
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="b"))
    await online.recv_until(Deliver)
    d = await offline.recv_until(Deliver)
    await offline.send(Ack(seq=d.seq))
    await asyncio.sleep(0.05)
    await offline.close()
    assert await gateway.revoke("demo", sent.message_id)
    assert (await online.recv_until(Revoke)).ids == (sent.message_id,)
    offline = await open_session(gateway.port, mint("off", user="u1"), resume=d.seq)
    state = await offline.recv_until(InboxState)
    assert state.changes[0].id == sent.message_id and state.changes[0].state == "deleted"


async def test_collapse_key_drops_the_older_pending_delivery(gateway: Node, mint: Mint) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    await client.close()
    for body in ("score 1-0", "score 2-0"):
        await gateway.send(
            SendRequest(app="demo", users=("u1",), title="t", body=body, collapse_key="match")
        )
    client = await open_session(gateway.port, mint("d1", user="u1"))
    d = await client.recv_until(Deliver)
    assert d.msg.body == "score 2-0" and d.msg.collapse_key == "match"
    assert await client.nothing_for()


async def test_requests_are_answered_ok_and_events_are_stored_once(
    gateway: Node, mint: Mint
) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    events = tuple(
        Event(id=f"e{i}", name="view", ts=1_700_000_000_000, props={"i": i}) for i in range(3)
    )
    await client.send(Events(rid=1, events=events))
    assert await client.recv_until(Ok) == Ok(rid=1)
    await client.send(Events(rid=2, events=events))  # a resend after a lost ok
    assert await client.recv_until(Ok) == Ok(rid=2)
    assert db_rows(gateway, "SELECT COUNT(*) FROM events") == [(3,)]
    await client.send(Identify(rid=3, user="u1", attrs={"first_name": "Li'; DROP TABLE users;--"}))
    assert await client.recv_until(Ok) == Ok(rid=3)
    await client.send(Identify(rid=4, user="someone-else"))
    err = await client.recv_until(Error)
    assert (err.code, err.rid) == ("forbidden", 4)
    await client.send(Prefs(rid=5, categories={"transactional": False}))
    err = await client.recv_until(Error)
    assert (err.code, err.rid) == ("invalid_field", 5)
    await client.send(Prefs(rid=6, categories={"marketing": False}))
    assert await client.recv_until(Ok) == Ok(rid=6)
    assert db_rows(gateway, "SELECT attrs FROM users WHERE user_key='u1'") == [
        ('{"first_name": "Li\'; DROP TABLE users;--"}',)
    ]


async def test_marketing_opt_out_is_honoured_and_transactional_still_arrives(
    gateway: Node, mint: Mint
) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    await client.send(Prefs(rid=1, categories={"marketing": False}))
    await client.recv_until(Ok)
    promo = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="sale"))
    assert (promo.devices, promo.skipped) == (0, {"opted_out": 1})
    order = await gateway.send(
        SendRequest(app="demo", users=("u1",), title="t", body="shipped", category="transactional")
    )
    assert (await client.recv_until(Deliver)).msg.id == order.message_id


async def test_receipt_for_a_message_of_another_device_is_refused(
    gateway: Node, mint: Mint
) -> None:
    mine = await open_session(gateway.port, mint("mine", user="u1"))
    thief = await open_session(gateway.port, mint("thief", user="u2"))
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="b"))
    await mine.recv_until(Deliver)
    await thief.send(Receipt(rid=1, id=sent.message_id, kind="displayed", ts=1))
    err = await thief.recv_until(Error)
    assert (err.code, err.rid) == ("forbidden", 1)
    await mine.send(Receipt(rid=2, id=sent.message_id, kind="clicked", ts=1, action="open"))
    assert await mine.recv_until(Ok) == Ok(rid=2)


async def test_read_on_one_device_reaches_the_users_other_device(gateway: Node, mint: Mint) -> None:
    a = await open_session(gateway.port, mint("a", user="u1"))
    b = await open_session(gateway.port, mint("b", user="u1"))
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="b"))
    await a.recv_until(Deliver)
    await b.recv_until(Deliver)
    await a.send(InboxUpdate(rid=1, changes=(InboxChange(id=sent.message_id, state="read"),)))
    assert await a.recv_until(Ok) == Ok(rid=1)
    state = await b.recv_until(InboxState)
    assert state.ver == 1 and state.changes == (
        InboxChange(id=sent.message_id, state="read", ver=1),
    )
    # A device that was offline catches up from its inbox version.
    c = await open_session(gateway.port, mint("c", user="u1"), inbox_ver=0)
    assert (await c.recv_until(InboxState)).ver == 1


async def test_a_flood_of_frames_is_rate_limited(
    tmp_path: Path, mint: Mint, loop_errors: list[object]
) -> None:
    node = Node(gateway_config(tmp_path / "t.db", rate_limit_per_s=5.0, rate_burst=10))
    await node.start()
    try:
        client = await open_session(node.port, mint("d1", user="u1"))
        for i in range(40):
            await client.ws.send(encode(Ping(ts=i)))
        err = await client.recv_until(Error)
        assert err.code == "rate_limited"
        assert await client.close_code() == codes.CLOSE_RATE_LIMITED
    finally:
        await node.stop()


async def test_a_slow_consumer_is_dropped_without_delaying_the_others(
    tmp_path: Path, mint: Mint, loop_errors: list[object]
) -> None:
    node = Node(gateway_config(tmp_path / "t.db", send_queue_bytes=4096))
    await node.start()
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", node.port))
        slow = RawClient(
            await connect(f"ws://127.0.0.1:{node.port}/", sock=sock, subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        )
        assert isinstance(await slow.hello(mint("slow", user="slow")), Welcome)
        server_side = node.hub.get("demo", "slow")
        assert server_side is not None
        server_side.ws.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        slow.ws.transport.pause_reading()  # stops reading: the socket buffers fill up
        fast = await open_session(node.port, mint("fast", user="fast"))
        body = "x" * 2000
        for _ in range(300):
            await node.send(
                SendRequest(
                    app="demo",
                    category="transactional",
                    users=("slow", "fast"),
                    kind="inbox",
                    title="t",
                    body=body,
                )
            )
        seen = 0
        while seen < 300:
            await fast.recv_until(Deliver)
            seen += 1
        assert node.metrics.slow_consumers >= 1
        slow.ws.transport.resume_reading()
        assert await slow.close_code() == codes.CLOSE_SLOW_CONSUMER
    finally:
        await node.stop()


async def test_a_second_connection_of_the_same_device_replaces_the_first(
    gateway: Node, mint: Mint
) -> None:
    first = await open_session(gateway.port, mint("d1", user="u1"))
    second = await open_session(gateway.port, mint("d1", user="u1"))
    assert await first.close_code() == codes.CLOSE_REPLACED
    await second.send(Ping(ts=1))
    assert await second.recv_until(Pong) == Pong(ts=1)
    assert gateway.connected_devices("demo") == 1


async def test_graceful_stop_sends_goaway_then_closes_for_reconnect(
    tmp_path: Path, mint: Mint, loop_errors: list[object]
) -> None:
    node = Node(gateway_config(tmp_path / "t.db"))
    await node.start()
    client = await open_session(node.port, mint("d1", user="u1"))
    await node.stop()
    assert isinstance(await client.recv_until(GoAway), GoAway)
    code = await client.close_code()
    assert code == codes.CLOSE_DRAINING and codes.should_reconnect(code)


async def test_apps_are_isolated(gateway: Node, mint: Mint) -> None:
    a = await open_session(gateway.port, mint("d1", user="u1"))
    b = await open_session(gateway.port, mint("d1", user="u1", app=APP_B))
    sent = await gateway.send(SendRequest(app="other", users=("u1",), title="t", body="B only"))
    assert sent.devices == 1
    assert (await b.recv_until(Deliver)).msg.body == "B only"
    assert await a.nothing_for()


class SlowStore(SqliteStore):
    """A store where every write takes 150 ms longer (a slow disk)."""

    def _submit(self, write):  # type: ignore[no-untyped-def]
        def slowly(db):  # type: ignore[no-untyped-def]
            time.sleep(0.15)  # in the writer thread: the event loop goes on
            return write(db)

        return super()._submit(slowly)


async def test_a_slow_store_loses_nothing_and_shows_nothing_twice(
    tmp_path: Path, mint: Mint, loop_errors: list[object]
) -> None:
    config = gateway_config(tmp_path / "slow.db")
    node = Node(config, store=SlowStore(config.db))
    await node.start()
    try:
        client = await open_session(node.port, mint("d1", user="u1"))
        sends = [
            node.send(
                SendRequest(
                    app="demo", category="transactional", users=("u1",), title="t", body=str(i)
                )
            )
            for i in range(5)
        ]
        results = await asyncio.gather(*sends)
        got = [await client.recv_until(Deliver) for _ in results]
        assert sorted(d.msg.id for d in got) == sorted(r.message_id for r in results)
        assert [d.seq for d in got] == [1, 2, 3, 4, 5]  # in order despite the slow commits
        events = tuple(Event(id=f"e{i}", name="view", ts=1, props={}) for i in range(10))
        for rid in (1, 2):
            await client.send(Events(rid=rid, events=events[(rid - 1) * 5 : rid * 5]))
        assert {(await client.recv_until(Ok)).rid for _ in range(2)} == {1, 2}
        assert await client.nothing_for(0.3)
    finally:
        await node.stop()
    with sqlite3.connect(config.db) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (10,)


async def test_a_delivery_that_skips_a_sequence_number_is_sent_after_the_missing_one(
    gateway: Node, mint: Mint
) -> None:
    client = await open_session(gateway.port, mint("d1", user="u1"))
    # Another writer (a second gateway process on the same store) stored a delivery for d1 and
    # has not fanned it out yet: it holds seq 1, so the next live delivery is seq 2.
    now_ms = int(gateway.clock() * 1000)
    theirs = Message(id="theirs", kind="inbox", title="t", body="first", category="transactional",
                     priority="normal", created_at=now_ms, expires_at=now_ms + 60_000)  # fmt: skip
    stored = OutMessage(
        message_id=theirs.id,
        fields={
            "kind": "inbox",
            "category": "transactional",
            "priority": "normal",
            "created_at": now_ms / 1000,
            "expires_at": now_ms / 1000 + 60,
        },
        wire=encode_message(theirs),
        targets=(("d1", "u1"),),
    )
    committed = await gateway.store.commit("demo", Outcome(), [stored])
    assert committed.deliveries["theirs"] == (("d1", 1),)
    ours = await gateway.send(
        SendRequest(app="demo", category="transactional", users=("u1",), title="t", body="2nd")
    )
    first, second = await client.recv_until(Deliver), await client.recv_until(Deliver)
    assert (first.seq, first.msg.id) == (1, "theirs")
    assert (second.seq, second.msg.id) == (2, ours.message_id)
    assert await client.nothing_for()


async def test_each_welcome_is_timed_from_the_accepted_connection(
    gateway: Node, mint: Mint
) -> None:
    # The gateway's own view of a hello (accepted → welcome written), apart from what the
    # device measures, which also holds its connect and the accept queue.
    before = gateway.metrics.hello.count
    t0 = time.monotonic()
    devices = [await open_session(gateway.port, mint(f"h{i}", user="u1")) for i in range(3)]
    took = time.monotonic() - t0
    hello = gateway.metrics.hello
    assert hello.count == before + 3
    assert 0 < hello.total <= took + 0.01 * hello.count  # each within its device's own wait
    text = gateway.metrics.render()
    assert f"tidings_hello_seconds_count {hello.count}" in text
    assert f'tidings_hello_seconds_bucket{{le="+Inf"}} {hello.count}' in text
    for device in devices:
        await device.close()
