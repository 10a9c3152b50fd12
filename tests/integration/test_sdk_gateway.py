"""The real SDK against the real gateway over real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import APP_A, APP_B, Device, gateway_config, timeout

from tidings.client_sdk import FakeClock, QuietHours, TidingsClient
from tidings.protocol.tokens import mint_token
from tidings.server.node import Node, SendRequest

Mint = Callable[..., str]


async def test_direct_send_reaches_all_devices_of_a_user(gateway: Node, devices: Any) -> None:
    phone = await devices("phone", user="u1")
    tablet = await devices("tablet", user="u1")
    stranger = await devices("stranger", user="u2")
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="Hi", body="both"))
    for d in (phone, tablet):
        await d.until(lambda d=d: len(d.banners) == 1)
        assert d.banners[0].id == sent.message_id
        assert [i.id for i in d.client.inbox.items()] == [sent.message_id]
    await asyncio.sleep(0.1)
    assert stranger.banners == [] and stranger.client.inbox.items() == []


async def test_a_burst_of_deliveries_is_acknowledged_by_one_ack_with_the_reports(
    gateway: Node, devices: Any
) -> None:
    phone = await devices("phone", user="u1")  # default flush_delay: reports wait 1 s
    sends = [
        gateway.send(
            SendRequest(app="demo", category="transactional", users=("u1",), title="t", body=str(i))
        )
        for i in range(5)
    ]
    sent = await asyncio.gather(*sends)
    await phone.until(lambda: len(phone.banners) == 5)
    assert phone.client.stats.acks_sent == 0, "shown at once, acknowledged later"
    await phone.until(lambda: phone.client.stats.acks_sent == 1, seconds=5)
    await phone.until(lambda: not phone.client.pending_requests, seconds=5)  # receipts answered
    await asyncio.sleep(0.1)  # the gateway applies acks in its own short batch window
    assert await gateway.store.pending("demo", "phone", 0, time.time()) == []
    assert {b.id for b in phone.banners} == {r.message_id for r in sent}


async def test_a_device_told_to_go_away_comes_back_after_the_hint_and_gets_what_it_missed(
    tmp_path: Path, mint: Mint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every jitter at the top of its range: backoff would wait 0.99 x 30 s, the hint (0.5-3 s
    # from the gateway) at most 1.49 x 3 s.
    monkeypatch.setattr(random, "random", lambda: 0.99)
    config = gateway_config(tmp_path / "goaway.db")
    first = Node(config)
    await first.start()
    port = first.port
    client = TidingsClient(url=f"ws://127.0.0.1:{port}", token=mint("phone", user="u1"),
                           device_id="phone", backoff_base=30.0, backoff_cap=30.0)  # fmt: skip
    phone = Device(client)
    await client.start()
    second: Node | None = None
    try:
        await client.wait_connected(timeout=timeout(5))
        await first.stop()  # graceful: goaway with a 0.5-3 s hint, then close
        await phone.until(lambda: not client.connected)
        second = Node(dataclasses.replace(config, port=port))
        await second.start()
        sent = await second.send(SendRequest(app="demo", users=("u1",), title="t", body="back"))
        # Coming back within seconds means the hint was used, not the backoff.
        await phone.until(lambda: [b.id for b in phone.banners] == [sent.message_id], seconds=8)
        assert client.stats.reconnects == 1
    finally:
        await client.close()
        if second is not None:
            await second.stop()


async def test_offline_device_gets_the_message_on_reconnect_once(
    gateway: Node, devices: Any, tmp_path: Path
) -> None:
    store = tmp_path / "phone.db"
    phone = await devices("phone", user="u1", store_path=str(store))
    await phone.client.close()
    sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="Hi", body="later"))
    phone = await devices("phone", user="u1", store_path=str(store))
    await phone.until(lambda: len(phone.banners) == 1)
    assert phone.banners[0].id == sent.message_id
    await phone.client.close()
    # A restart of the app with the same store shows nothing again.
    again = await devices("phone", user="u1", store_path=str(store))
    await asyncio.sleep(0.3)
    assert again.banners == []
    assert [i.id for i in again.client.inbox.items()] == [sent.message_id]


async def test_read_on_one_device_shows_as_read_on_the_other(gateway: Node, devices: Any) -> None:
    a = await devices("a", user="u1")
    b = await devices("b", user="u1")
    sent = await gateway.send(
        SendRequest(app="demo", users=("u1",), kind="inbox", title="News", body="b")
    )
    await a.until(lambda: bool(a.client.inbox.items()))
    await b.until(lambda: bool(b.client.inbox.items()))
    assert b.client.inbox.unread_count == 1
    await a.client.inbox.mark_read(sent.message_id)
    await b.until(lambda: b.client.inbox.unread_count == 0)
    await a.client.inbox.delete(sent.message_id)
    await b.until(lambda: b.client.inbox.items() == [])


async def test_expired_and_revoked_messages_are_never_shown(gateway: Node, devices: Any) -> None:
    phone = await devices("phone", user="u1")
    await phone.client.close()
    revoked = await gateway.send(
        SendRequest(app="demo", category="transactional", users=("u1",), title="t", body="oops")
    )
    await gateway.revoke("demo", revoked.message_id)
    expired = await gateway.send(
        SendRequest(
            app="demo", category="transactional", users=("u1",), title="t", body="brief", ttl=1
        )
    )
    await asyncio.sleep(1.1)
    kept = await gateway.send(
        SendRequest(app="demo", category="transactional", users=("u1",), title="t", body="kept")
    )
    phone = await devices("phone", user="u1")
    await phone.until(lambda: len(phone.banners) == 1)
    await asyncio.sleep(0.2)
    assert [b.id for b in phone.banners] == [kept.message_id]
    shown = {i.id for i in phone.client.inbox.items()}
    assert revoked.message_id not in shown and expired.message_id not in shown
    # Revoking a message the device already has removes it.
    await gateway.revoke("demo", kept.message_id)
    await phone.until(lambda: phone.client.inbox.items() == [])


async def test_bad_expired_and_foreign_tokens_are_refused_and_not_retried(
    gateway: Node, devices: Any
) -> None:
    foreign = mint_token(secret=APP_B.secret, app=APP_B.id, device="d", user="u1")
    forged = mint_token(secret="not-the-secret", app=APP_A.id, device="d", user="u1")
    expired = mint_token(secret=APP_A.secret, app=APP_A.id, device="d", ttl=1, now=time.time() - 10)
    for token in (forged, expired, "garbage"):
        d = await devices("d", token=token, connect=False)
        with pytest.raises(Exception) as info:
            await d.client.wait_connected(timeout=timeout(5))
        assert getattr(info.value, "close_code", None) in {4001, 4002}
        assert not d.client.connected
    # A token of app B is valid for app B only: it never sees app A's users.
    b = await devices("d", token=foreign)
    await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="for A"))
    await asyncio.sleep(0.2)
    assert b.banners == []


async def test_quiet_hours_hold_a_banner_and_show_it_when_the_window_ends(
    gateway: Node, devices: Any
) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    now = dt.datetime.now(shanghai)
    night = now.replace(hour=23, minute=0, second=0, microsecond=0)
    if night < now:
        night += dt.timedelta(days=1)
    clock = FakeClock(night.timestamp())
    phone = await devices(
        "phone", user="u1", clock=clock, device_tz="Asia/Shanghai",
        quiet_hours=QuietHours("22:00", "08:00", tz="Asia/Shanghai"),
    )  # fmt: skip
    sent = await gateway.send(
        SendRequest(app="demo", users=("u1",), title="Sale", body="night", ttl=3 * 86400)
    )
    await phone.until(lambda: bool(phone.client.inbox.items()))
    await asyncio.sleep(0.1)
    assert phone.banners == []  # held: it is 23:00 in Shanghai
    clock.advance(8 * 3600 + 60)  # 07:01: still quiet
    await asyncio.sleep(0.1)
    assert phone.banners == []
    clock.advance(3600)  # 08:01
    await phone.until(lambda: len(phone.banners) == 1)
    assert phone.banners[0].id == sent.message_id


async def test_a_device_drop_mid_delivery_is_redelivered_and_shown_once(
    gateway: Node, mint: Mint, tmp_path: Path, loop_errors: list[object]
) -> None:
    proxy = await CuttableProxy.start(gateway.port)
    client = TidingsClient(
        url=f"ws://127.0.0.1:{proxy.port}", token=mint("phone", user="u1"), device_id="phone",
        store_path=str(tmp_path / "phone.db"), backoff_base=0.05, backoff_cap=0.2,
    )  # fmt: skip
    d = Device(client)
    await client.start()
    try:
        await client.wait_connected(timeout=timeout(5))
        proxy.drop_downstream = True  # the delivery is lost on the way to the device
        sent = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="b"))
        await asyncio.sleep(0.2)
        assert d.banners == []
        proxy.cut()  # the connection drops mid-delivery
        proxy.drop_downstream = False
        await d.until(lambda: len(d.banners) == 1, seconds=10)  # resent after resume
        assert d.banners[0].id == sent.message_id
        # Lose the acks too and drop again: the gateway resends, the device shows it once.
        proxy.drop_upstream = True
        second = await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="c"))
        await d.until(lambda: len(d.banners) == 2)
        proxy.cut()
        proxy.drop_upstream = False
        await asyncio.sleep(0.5)
        assert [b.id for b in d.banners] == [sent.message_id, second.message_id]
    finally:
        await client.close()
        proxy.close()


class CuttableProxy:
    """A loopback TCP proxy that can swallow client→server bytes and cut connections."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.drop_upstream = False
        self.drop_downstream = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @classmethod
    async def start(cls, target: int) -> CuttableProxy:
        proxy = cls(target)
        proxy._server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not (self.drop_upstream if up else self.drop_downstream):
                        dst.write(data)
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


# --- a gateway in a subprocess, for kill -9 ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_gateway(db: Path, port: int, admin: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tidings", "gateway", "--port", str(port),
           "--admin-port", str(admin), "--db", str(db)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout(20)
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"gateway did not start: {proc.stderr.read() if proc.stderr else ''}")


def _post(admin: int, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/v1/messages",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer dev-admin-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
        return dict(json.loads(resp.read()))


async def test_gateway_killed_after_accepting_a_send_delivers_exactly_once_after_restart(
    tmp_path: Path, loop_errors: list[object]
) -> None:
    db, port, admin = tmp_path / "gw.db", _free_port(), _free_port()
    token = mint_token(secret="dev-secret", app="demo", device="phone", user="u1")
    gw = _start_gateway(db, port, admin)
    client = TidingsClient(url=f"ws://127.0.0.1:{port}", token=token, device_id="phone",
                           store_path=str(tmp_path / "phone.db"), backoff_base=0.05,
                           backoff_cap=0.3)  # fmt: skip
    d = Device(client)
    try:
        await client.start()
        await client.wait_connected(timeout=timeout(10))
        await client.close()  # offline: the send is accepted but cannot be delivered yet
        body = {"app": "demo", "to": {"users": ["u1"]}, "kind": "both", "title": "Order",
                "body": "shipped", "category": "transactional"}  # fmt: skip
        accepted = await asyncio.to_thread(_post, admin, body)
        os.kill(gw.pid, signal.SIGKILL)
        gw.wait(timeout=10)
        gw = _start_gateway(db, port, admin)
        client = TidingsClient(url=f"ws://127.0.0.1:{port}", token=token, device_id="phone",
                               store_path=str(tmp_path / "phone.db"), backoff_base=0.05,
                               backoff_cap=0.3)  # fmt: skip
        d = Device(client)
        await client.start()
        await d.until(lambda: len(d.banners) == 1, seconds=10)
        assert d.banners[0].id == accepted["message_id"]
        # Kill again mid-session, before the ack could be sure to land; restart; resume.
        os.kill(gw.pid, signal.SIGKILL)
        gw.wait(timeout=10)
        gw = _start_gateway(db, port, admin)
        await client.wait_connected(timeout=timeout(10))
        await asyncio.sleep(0.5)
        assert [b.id for b in d.banners] == [accepted["message_id"]]
        assert [i.id for i in client.inbox.items()] == [accepted["message_id"]]
    finally:
        await client.close()
        gw.terminate()
        gw.wait(timeout=10)


async def test_events_tracked_offline_survive_a_restart_and_are_stored_once(
    gateway: Node, mint: Mint, tmp_path: Path, loop_errors: list[object]
) -> None:
    store = str(tmp_path / "app.db")
    offline = TidingsClient(url=f"ws://127.0.0.1:{_free_port()}", token=mint("d1", user="u1"),
                            device_id="d1", store_path=store, backoff_cap=0.1)  # fmt: skip
    await offline.start()
    for i in range(3):
        offline.track("view_content", {"category": "sports", "i": i})
    await offline.identify("u1", {"first_name": "Li"})
    await asyncio.sleep(0.05)
    await offline.close()
    for _ in range(2):  # the second start must not send anything again
        online = TidingsClient(url=f"ws://127.0.0.1:{gateway.port}", token=mint("d1", user="u1"),
                               device_id="d1", store_path=store)  # fmt: skip
        await online.start()
        await online.wait_connected(timeout=timeout(5))
        deadline = time.monotonic() + timeout(5)
        while online.pending_requests and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await online.close()
    await gateway.store.flush()
    import sqlite3

    with sqlite3.connect(gateway.config.db) as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE device_id='d1'").fetchone() == (3,)
        attrs = db.execute("SELECT attrs FROM users WHERE user_key='u1'").fetchone()
    assert json.loads(attrs[0]) == {"first_name": "Li"}


async def test_a_device_traveling_moves_its_quiet_hours(gateway: Node, devices: Any) -> None:
    shanghai_night = dt.datetime(2026, 11, 22, 23, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    clock = FakeClock(shanghai_night.timestamp())
    phone = await devices("phone", user="u1", clock=clock, device_tz="Asia/Shanghai",
                          quiet_hours=QuietHours("22:00", "08:00"))  # fmt: skip
    await gateway.send(SendRequest(app="demo", users=("u1",), title="t", body="b", ttl=86400 * 30))
    await phone.until(lambda: bool(phone.client.inbox.items()))
    assert phone.banners == []
    phone.client.set_timezone("Europe/London")  # 15:00 there: not quiet any more
    await phone.until(lambda: len(phone.banners) == 1)


def test_the_synchronous_wrapper_receives_and_reads_without_an_event_loop(tmp_path: Path) -> None:
    from tidings.client_sdk import SyncTidingsClient

    db, port, admin = tmp_path / "gw.db", _free_port(), _free_port()
    gw = _start_gateway(db, port, admin)
    try:
        token = mint_token(secret="dev-secret", app="demo", device="kiosk", user="u9")
        banners: list[Any] = []
        with SyncTidingsClient(url=f"ws://127.0.0.1:{port}", token=token,
                               device_id="kiosk") as client:  # fmt: skip
            client.on_banner(banners.append)
            body = {"app": "demo", "to": {"users": ["u9"]}, "kind": "both", "title": "Hi",
                    "body": "sync", "category": "transactional"}  # fmt: skip
            sent = _post(admin, body)
            deadline = time.monotonic() + timeout(5)
            while not banners and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [b.id for b in banners] == [sent["message_id"]]
            client.mark_read(sent["message_id"])
            assert [i.read for i in client.inbox_items()] == [True]
            client.track("opened_app")
    finally:
        gw.terminate()
        gw.wait(timeout=10)
