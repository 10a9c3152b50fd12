"""A fleet of simulated devices: real SDK clients spread over worker processes.

Each worker process runs an asyncio loop with its share of devices, every one a real
:class:`~tidings.client_sdk.TidingsClient` with an in-memory store. The parent talks to workers
over pipes with small commands; workers answer with counts and measurements, never with one
message per event. Device ``i`` has device id ``d{i}`` and user id ``u{i}``.

With personas on, each device follows its :func:`~tidings.simulator.engine.personas.plan`: it
identifies with the plan's attributes and tracks the plan's events once connected, and on
:meth:`Fleet.shop` it adds to its cart (and perhaps buys) as the plan says. Every campaign
message a device receives is logged (user, campaign, message id, title, times) for the ground
truth checks in :mod:`~tidings.simulator.engine.truth`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import multiprocessing as mp
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tidings.admin_client import AdminClient, AdminError
from tidings.client_sdk.clock import ClockState, SimClock
from tidings.server.heap import HeapKeeper
from tidings.simulator.engine.living import (
    DAY,
    Session,
    day_sessions,
    local_date,
    react_session,
    reaction,
)
from tidings.simulator.engine.personas import DevicePlan, click_probability, plan
from tidings.simulator.engine.truth import shown_in_quiet_hours

__all__ = [
    "CLOCK_POLL_S",
    "DEFAULT_RAMP",
    "Activity",
    "CampaignReceipt",
    "Coordinator",
    "DeviceReport",
    "Fleet",
    "FleetConfig",
    "LoadMeter",
    "clock_offset",
    "raise_nofile",
    "run_remote_worker",
]

DEFAULT_RAMP = 200
"""Connections each worker opens at once: a bounded ramp instead of a SYN flood."""


CLOCK_POLL_S = 0.5
"""Real seconds between two reads of the gateway's clock by a worker that follows it. Changes
the parent makes reach the workers at once; changes made by others (``PUT /v1/clock`` from
outside) within this, so a device's clock is then behind by at most this times the speed."""

LIVING_FLUSH_S = 0.02
"""Living devices report events this soon (real seconds): at a high speed every real second
is many simulated minutes, and a purchase must reach the gateway before a cart reminder is due."""


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of process ``pid`` (this one by default), in MiB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def read_clock(admin: AdminClient) -> ClockState:
    """The clock of the gateway behind ``admin`` (``GET /v1/clock``)."""
    body = admin.call("GET", "/v1/clock")
    return ClockState(float(body["now"]), float(body["speed"]), bool(body["paused"]),
                      float(body["real_time"]))  # fmt: skip


def raise_nofile() -> int:
    """Lift this process's soft open-files limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    """Where the devices connect and how many there are."""

    url: str | tuple[str, ...]  # several: the nodes of a cluster, spread over the devices
    devices: int
    workers: int = 2
    app: str = "demo"
    secret: str = "dev-secret"
    ramp: int = DEFAULT_RAMP
    kind: str = "sdk"
    """"sdk": real SDK devices (TidingsClient, personas); "wire": lean devices speaking the
    protocol through its sans-I/O session (pure fan-out); "bare": a raw websockets client of
    the baseline server."""
    seed: int = 0
    personas: bool = True
    quiet_override: tuple[str, str] | None = None  # force every device's quiet window
    fault: str | None = None
    """For the tests of the checkers: "ignore_quiet_hours" (devices break the rule), "busy"
    (each worker's event loop is blocked 100 ms in every 200: a fleet that is the bottleneck)."""
    admin: str | None = None  # http://host:port of a gateway on the simulated clock: follow it
    admin_key: str = "dev-admin-key"
    living: bool = False  # devices live their personas' days (needs personas and ``admin``)
    epoch: float | None = None  # simulated unix time of day 0 of the run (default: at start)


@dataclass(slots=True)
class DeviceReport:
    """What the devices of the whole fleet saw, merged from every worker."""

    latencies_ms: list[float] = field(default_factory=list)  # wire
    handled_ms: list[float] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)  # each one's load (LoadMeter)
    received: dict[str, int] = field(default_factory=dict)  # message id -> devices
    displayed_twice: int = 0
    shown_in_quiet_hours: int = 0
    duplicates_dropped: int = 0
    reconnects: int = 0
    clicks: dict[str, int] = field(default_factory=dict)
    campaign: list[CampaignReceipt] = field(default_factory=list)
    cart_at: dict[str, float] = field(default_factory=dict)  # user -> add_to_cart time (ms)
    activity: dict[str, Activity] = field(default_factory=dict)  # living devices, by user
    connected_at: dict[str, list[float]] = field(default_factory=dict)  # user -> hellos (s)
    rehello_ms: list[float] = field(default_factory=list)
    """Lean devices coming back after their connection was lost: each new connection's start
    to its welcome (the backoff before it not counted)."""


@dataclass(slots=True)
class Activity:
    """What one living device did, on its own (simulated) clock: the ground truth of its
    lifecycle, value tier and active hours."""

    sessions: list[tuple[float, str, int]] = field(default_factory=list)  # (at, why, events)
    carts: list[float] = field(default_factory=list)
    purchases: list[tuple[float, float]] = field(default_factory=list)  # (at, amount)


@dataclass(frozen=True, slots=True)
class CampaignReceipt:
    """One campaign message as a device received it (times in unix milliseconds)."""

    user: str
    campaign: str
    message_id: str
    title: str
    received_ms: float
    sent_ms: float | None
    category: str = "marketing"
    topic: str | None = None


# --- inside a worker process -------------------------------------------------------------------


WIRE_DRAIN_S = 0.005
"""Lean devices handle the frames they read once no frame came for this long (a burst read
whole before any is decoded or acked)."""

LAG_TICK_S = 0.01
"""How often a worker's load meter looks at its event loop."""


LOAD_WINDOW_S = 1.0
"""The shortest window a worker's load is judged over: a phase shorter than this (a small
broadcast) is judged with the second before it ended."""


class LoadMeter:
    """A worker's own load: how late its event loop wakes (lag), its share of a core, and
    its share of time spent ready to run but waiting for a core that other processes held."""

    def __init__(self) -> None:
        # (monotonic time, loop lag in ms or None, process CPU seconds, seconds waited for a
        # core) every tick, the last minute; a tick that overlapped deferred work has no lag
        # (see ``deferring``)
        self._ticks: collections.deque[tuple[float, float | None, float, float]] = (
            collections.deque()
        )
        self._since = time.monotonic()
        self._deferred = 0  # deferred work started so far
        self._deferring = False

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Work done after the frames it handles were stamped (the lean devices' drain): it
        costs CPU, but the loop lag it causes delays no measurement, so it is not counted."""
        self._deferred += 1
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, deferred = loop.time(), self._deferred
            await asyncio.sleep(LAG_TICK_S)
            late = max(0.0, (loop.time() - before - LAG_TICK_S) * 1000)
            lag = None if self._deferring or self._deferred != deferred else late
            now = time.monotonic()
            self._ticks.append((now, lag, time.process_time(), _waited_for_a_core()))
            while self._ticks and self._ticks[0][0] < now - 60:
                self._ticks.popleft()

    def read(self) -> dict[str, Any]:
        """Loop lag p50/p99 and CPU share since the last read (at least the last
        :data:`LOAD_WINDOW_S`); starts a new window."""
        now = time.monotonic()
        start = min(self._since, now - LOAD_WINDOW_S)
        self._since = now
        window = [t for t in self._ticks if t[0] >= start]
        lags = sorted(lag for _, lag, _, _ in window if lag is not None)
        share = waited = 0.0
        if len(window) > 1:
            (t0, _, cpu0, wait0), (t1, _, cpu1, wait1) = window[0], window[-1]
            share = 100 * (cpu1 - cpu0) / max(t1 - t0, 1e-9)
            waited = 100 * (wait1 - wait0) / max(t1 - t0, 1e-9)

        def rank(p: float) -> float:
            return round(lags[min(len(lags) - 1, int(p * len(lags)))], 1) if lags else 0.0

        return {"cpu_pct": round(share, 1), "loop_lag_ms": {"p50": rank(0.5), "p99": rank(0.99)},
                "waited_for_cpu_pct": round(waited, 1)}  # fmt: skip


def _waited_for_a_core() -> float:
    """Seconds this process's main thread was ready to run but waited for a core (Linux's
    ``/proc/self/schedstat``; 0 where there is none)."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Worker:
    def __init__(self, cfg: FleetConfig, indexes: list[int]) -> None:
        self.cfg = cfg
        self.indexes = indexes
        self.clients: list[Any] = []
        self.bare: list[Any] = []
        self.hello_ms: list[float] = []  # each device: connect started to welcomed
        self.rehello_ms: list[float] = []  # lean devices again, after a lost connection
        self.connect_s = 0.0  # this worker's devices: first connect to the last welcomed
        self.wire_tasks: list[asyncio.Task[None]] = []
        self.wire_open: set[int] = set()  # lean devices whose session is open now
        self._frames: list[tuple[float, Any, Any, Any]] = []  # (read at, data, session, ws)
        self._draining: asyncio.Task[None] | None = None
        self.latencies: list[float] = []  # wire: sent_at to the frame read off the socket
        self.handled: list[float] = []  # sent_at to the SDK done with it (the app's callback)
        self.load = LoadMeter()
        self.received: dict[str, int] = {}
        self.displayed: dict[tuple[int, str], int] = {}
        # (quiet window, zone, shown at, urgent transactional): judged at report time, so the
        # ground truth check costs nothing on the receive path being measured.
        self.shown: list[tuple[Any, str, float, bool]] = []
        self.quiet_violations = 0  # of the banners judged so far
        # (user, campaign, message id, title, received ms, sent ms, category, topic)
        self.campaign_log: list[tuple[str, str, str, str, float, float | None, str, str | None]]
        self.campaign_log = []
        self.cart_at: dict[str, float] = {}  # user -> when add_to_cart was tracked (unix ms)
        self.clicks = {"relevant_shown": 0, "relevant_clicked": 0,
                       "generic_shown": 0, "generic_clicked": 0}  # fmt: skip
        self.rng = random.Random(cfg.seed * 1_000_003 + (indexes[0] if indexes else 0))
        self.clock: SimClock | None = None  # following the gateway's simulated clock
        self.plans: dict[int, DevicePlan] = {}
        self.by_index: dict[int, Any] = {}
        self.activity: dict[str, Activity] = {}
        self.connected_at: dict[str, list[float]] = {}
        self._agenda: list[tuple[float, int, int, Session]] = []  # (at, seq, device, session)
        self._seq = itertools.count()
        self._agenda_changed: asyncio.Event | None = None

    def now(self) -> float:
        """The devices' time: the simulated clock they follow, or the real one."""
        return self.clock.now() if self.clock is not None else time.time()

    async def follow_clock(self) -> None:
        """Read the gateway's clock once now, then every :data:`CLOCK_POLL_S` (forever)."""
        state = await asyncio.to_thread(read_clock, self._admin())
        self.clock = SimClock(state.now, state.speed, paused=state.paused)
        self.clock.follow(state)

    async def poll_clock(self) -> None:
        assert self.clock is not None
        admin = self._admin()
        while True:
            await asyncio.sleep(CLOCK_POLL_S)
            try:
                state = await asyncio.to_thread(read_clock, admin)
            except AdminError:
                continue  # the gateway restarts (or stops): keep the last reading
            self.set_clock(state)

    def _admin(self) -> AdminClient:
        assert self.cfg.admin is not None
        return AdminClient(self.cfg.admin, self.cfg.admin_key, timeout=10.0)

    def set_clock(self, state: ClockState) -> None:
        """Take a reading of the gateway's clock if it differs from ours (speed, pause, time)."""
        clock = self.clock
        if clock is None:
            return
        ours = clock.now()
        theirs = state.now + (0.0 if state.paused else (time.time() - state.real) * state.speed)
        if (clock.speed, clock.paused) != (state.speed, state.paused) or abs(ours - theirs) > 1:
            clock.follow(state)

    async def connect(self, progress: Callable[[int], None]) -> None:
        sem = asyncio.Semaphore(self.cfg.ramp)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            async with sem:
                t0 = time.perf_counter()
                if self.cfg.kind == "bare":
                    await self._bare(i)
                elif self.cfg.kind == "wire":
                    await self._wire(i)
                else:
                    await self._sdk(i)
                self.hello_ms.append((time.perf_counter() - t0) * 1000)
            done += 1
            if done % 100 == 0:
                progress(done)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in self.indexes))
        self.connect_s = time.perf_counter() - t0
        progress(done)

    async def _sdk(self, i: int) -> None:
        from tidings.client_sdk import QuietHours, TidingsClient
        from tidings.client_sdk.client import DEFAULT_FLUSH_DELAY_S

        device_plan = plan(self.cfg.seed, i) if self.cfg.personas else None
        persona = device_plan.persona if device_plan else None
        tz = persona.tz if persona else "UTC"
        window = self.cfg.quiet_override or (persona.quiet if persona else None)
        quiet = QuietHours(*window) if window else None
        token, urls = self._token(i), self._urls(i)
        rotated = list(urls) if len(urls) > 1 else urls[0]
        client = TidingsClient(
            url=rotated, token=token, device_id=f"d{i}", device_tz=tz,
            quiet_hours=None if self.cfg.fault == "ignore_quiet_hours" else quiet,
            backoff_base=0.5, backoff_cap=5.0, clock=self.clock,
            flush_delay=LIVING_FLUSH_S if self.cfg.living else DEFAULT_FLUSH_DELAY_S,
        )  # fmt: skip
        if device_plan is not None:
            self.plans[i] = device_plan
        self.by_index[i] = client

        def on_message(msg: Any, received_at: float) -> None:
            if self.clock is not None:  # the device's (simulated) time; latency in real ms
                received_at = self.clock.now()
                if msg.sent_at:
                    self.latencies.append((received_at * 1000 - msg.sent_at) / self.clock.speed)
            elif msg.sent_at:
                # Wire: the frame read off the socket; handled: the SDK stored it, and now
                # calls the app (this callback).
                self.latencies.append(received_at * 1000 - msg.sent_at)
                self.handled.append(time.time() * 1000 - msg.sent_at)
            self.received[msg.id] = self.received.get(msg.id, 0) + 1
            if msg.campaign:
                topic = (msg.data or {}).get("topic")
                topic = topic if isinstance(topic, str) else None
                self.campaign_log.append((
                    f"u{i}", msg.campaign, msg.id, msg.title, received_at * 1000, msg.sent_at,
                    msg.category, topic,
                ))  # fmt: skip
                if self.cfg.living and device_plan is not None:
                    self.react(device_plan, msg.campaign, topic, received_at)

        def on_overlay(item: Any, *, modal: bool = False) -> None:
            """A banner or modal shown: count it; the persona clicks it or (a modal waits for
            an answer) dismisses it."""
            key = (i, item.id)
            self.displayed[key] = self.displayed.get(key, 0) + 1
            if quiet is not None:
                urgent = item.priority == "urgent" and item.category == "transactional"
                self.shown.append((quiet, tz, self.now(), urgent))
            if persona is not None:
                topic = (item.data or {}).get("topic")
                kind = "relevant" if topic in persona.interests else "generic"
                self.clicks[f"{kind}_shown"] += 1
                if self.rng.random() < click_probability(persona, topic):
                    self.clicks[f"{kind}_clicked"] += 1
                    asyncio.get_running_loop().create_task(client.click(item.id, "open"))
                    return
            if modal:
                asyncio.get_running_loop().create_task(client.dismiss(item.id))

        client.on_message(on_message)
        client.on_banner(on_overlay)
        client.on_modal(lambda item: on_overlay(item, modal=True))
        self.connected_at.setdefault(f"u{i}", []).append(self.now())
        await client.start()
        await client.wait_connected(timeout=120)
        if device_plan is not None:
            await client.identify(f"u{i}", dict(device_plan.attrs))
            for name, props in device_plan.events:
                client.track(name, dict(props))
            if self.cfg.living:  # the plan's first events are the device's first session
                self._log_events(f"u{i}", "plan", device_plan.events)
        self.clients.append(client)

    async def _bare(self, i: int) -> None:
        import msgpack
        from websockets.asyncio.client import connect

        url = self.cfg.url if isinstance(self.cfg.url, str) else self.cfg.url[0]
        ws = await connect(url, compression=None, max_size=None, ping_interval=None,
                           open_timeout=120)  # fmt: skip
        self.bare.append(ws)

        async def receive() -> None:
            async for data in ws:
                now = time.time()
                msg = msgpack.unpackb(data)["msg"]
                self.latencies.append(now * 1000 - msg["sent_at"])  # wire = handled here
                self.handled.append(now * 1000 - msg["sent_at"])
                self.received[msg["id"]] = self.received.get(msg["id"], 0) + 1

        asyncio.get_running_loop().create_task(receive())

    def _token(self, i: int) -> str:
        """Device ``i``'s token (device ``d<i>`` of user ``u<i>``), minted on the fleet's
        clock."""
        from tidings.protocol.limits import MAX_TOKEN_TTL
        from tidings.protocol.tokens import mint_token

        return mint_token(secret=self.cfg.secret, app=self.cfg.app, device=f"d{i}",
                          user=f"u{i}", ttl=MAX_TOKEN_TTL, now=self.now())  # fmt: skip

    def _urls(self, i: int) -> tuple[str, ...]:
        """The gateways device ``i`` tries, in order: each device starts on its own node of a
        cluster (``i`` modulo the nodes) and fails over to the others, in an order that
        differs from one device to the next, as a fleet given shuffled lists (or behind a load
        balancer) does: the devices of a node that dies spread over the ones left."""
        urls = (self.cfg.url,) if isinstance(self.cfg.url, str) else tuple(self.cfg.url)
        own = i % len(urls)
        others = urls[own + 1 :] + urls[:own]
        turn = (i // len(urls)) % max(1, len(others))
        return (urls[own], *others[turn:], *others[:turn])

    async def _wire(self, i: int) -> None:
        """A lean device: ``tidings.v1`` through the protocol's sans-I/O session over a bare
        WebSocket — hello and resume after a reconnect, an ack per delivery, duplicates
        dropped by message id — with no store, no personas and no SDK: a few KiB each."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        from tidings.protocol import SUBPROTOCOL
        from tidings.protocol.errors import ProtocolError
        from tidings.protocol.frames import DeviceInfo, Welcome
        from tidings.protocol.session import ClientSession

        token, urls = self._token(i), self._urls(i)
        session, device = ClientSession(), DeviceInfo(platform="loadtest-wire")
        welcomed = asyncio.Event()

        async def live() -> None:
            attempt = 0
            while True:
                started = time.perf_counter()
                try:
                    async with connect(urls[attempt % len(urls)], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                       compression=None, max_size=None, ping_interval=None,
                                       open_timeout=120) as ws:  # fmt: skip
                        session.connect(token, device)
                        await ws.send(session.data_to_send()[0])
                        first = session.receive(await ws.recv())
                        if not isinstance(first, Welcome):
                            raise ProtocolError(f"no welcome: {first!r}")
                        self.wire_open.add(i)
                        if welcomed.is_set():
                            self.rehello_ms.append((time.perf_counter() - started) * 1000)
                        welcomed.set()
                        async for data in ws:
                            # Stamp and queue: the frames of a burst are all read before any
                            # is decoded, so the stamp is the read, not the work before it.
                            self._frames.append((time.time(), data, session, ws))
                            if self._draining is None or self._draining.done():
                                self._draining = asyncio.get_running_loop().create_task(
                                    self._drain_frames()
                                )
                except (OSError, TimeoutError, WebSocketException, ProtocolError):
                    pass
                self.wire_open.discard(i)
                session.connection_lost()
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(5.0, 0.25 * 2 ** min(attempt, 5))))

        self.wire_tasks.append(asyncio.get_running_loop().create_task(live()))
        await asyncio.wait_for(welcomed.wait(), 120)

    async def _drain_frames(self) -> None:
        """Handle the frames the lean devices read (a moment later, all of a burst at once):
        decode, drop duplicates, count, ack."""
        seen = -1
        while len(self._frames) != seen:  # wait for the burst to pause: every frame is read
            seen = len(self._frames)
            await asyncio.sleep(WIRE_DRAIN_S)
        with self.load.deferring():
            await self._handle_frames()

    async def _handle_frames(self) -> None:
        from tidings.protocol.errors import ProtocolError
        from tidings.protocol.session import Delivery

        while self._frames:
            frames, self._frames = self._frames, []
            for n, (read_at, data, session, ws) in enumerate(frames):
                if n % 200 == 199:
                    await asyncio.sleep(0)  # let frames still arriving be read (and stamped)
                try:
                    event = session.receive(data)
                except ProtocolError:
                    await ws.close()
                    continue
                if isinstance(event, Delivery):
                    if not event.duplicate:
                        msg = event.msg
                        if msg.sent_at:  # 0: replayed from the store, not a live fan-out
                            self.latencies.append(read_at * 1000 - msg.sent_at)
                            self.handled.append(time.time() * 1000 - msg.sent_at)
                        self.received[msg.id] = self.received.get(msg.id, 0) + 1
                    session.processed(event.seq)
                    session.ack()
                for out in session.data_to_send():
                    with contextlib.suppress(Exception):  # closed meanwhile: it resumes
                        await ws.send(out)

    def connected(self) -> int:
        if self.cfg.kind == "bare":
            return len(self.bare)
        if self.cfg.kind == "wire":
            return len(self.wire_open)
        return sum(1 for c in self.clients if c.connected)

    async def wait_received(
        self,
        message_id: str,
        timeout: float,  # noqa: ASYNC109
        users: tuple[int, int] | None = None,
    ) -> None:
        """Wait until each of this worker's devices in ``users`` (first, end), or every one,
        got ``message_id``."""
        first, end = users or (0, sys.maxsize)
        expected = sum(1 for i in self.indexes if first <= i < end)
        deadline = time.monotonic() + timeout
        while self.received.get(message_id, 0) < expected:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.02)

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while self.connected() < len(self.indexes) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def shop(self, buy_after: float) -> int:
        """Every device whose plan has a cart adds to it; buyers buy ``buy_after`` s later."""
        if not self.cfg.personas:
            return 0
        buyers = []
        for client in self.clients:
            index = int(client.device_id[1:])
            cart = plan(self.cfg.seed, index).cart
            if cart == "none":
                continue
            self.cart_at[f"u{index}"] = time.time() * 1000
            client.track("add_to_cart", {"item": "kettle", "price": 59})
            if cart == "purchase":
                buyers.append(client)
        await asyncio.sleep(buy_after)
        for client in buyers:
            client.track("purchase", {"item": "kettle", "amount": 59})
        return len(self.cart_at)

    # --- living devices ---------------------------------------------------------------------

    def _push(self, index: int, session: Session) -> None:
        entry = (session.at, next(self._seq), index, session)
        heapq.heappush(self._agenda, entry)
        if self._agenda[0] is entry and self._agenda_changed is not None:
            self._agenda_changed.set()

    def react(self, device: DevicePlan, campaign: str, topic: object, received_at: float) -> None:
        """A campaign message arrived: perhaps the device comes to the app because of it."""
        r = reaction(self.cfg.seed, device, campaign, topic, received_at)
        if r.at is not None:
            self._push(device.index, react_session(device, r, campaign))

    async def live(self) -> None:
        """Run every device's days: plan each local day a day ahead, run sessions when due.

        One heap for the worker's devices; it sleeps until the next session (re-planning when
        the clock changes or an earlier session is added), so idle devices cost nothing.
        """
        assert self.clock is not None
        loop = asyncio.get_running_loop()
        changed = self._agenda_changed = asyncio.Event()
        self.clock.subscribe(lambda: _call_soon(loop, changed.set))
        epoch = self.cfg.epoch if self.cfg.epoch is not None else self.clock.now()
        first = {i: local_date(p.persona, epoch) for i, p in self.plans.items()}
        planned = -1

        def plan_day(day: int) -> None:
            now = self.clock.now() if self.clock is not None else epoch
            for i, device in self.plans.items():
                for session in day_sessions(self.cfg.seed, device, first[i], day):
                    if session.at >= now:
                        self._push(i, session)

        while True:
            now = self.clock.now()
            while planned < 1 + int((now - epoch) // DAY) + 1:  # always a day ahead
                planned += 1
                plan_day(planned)
            ran = 0
            while self._agenda and self._agenda[0][0] <= now:
                _, _, index, session = heapq.heappop(self._agenda)
                self.run_session(index, session)
                ran += 1
                if ran % 500 == 0:
                    await asyncio.sleep(0)
            next_plan = epoch + planned * DAY - DAY
            head = self._agenda[0][0] if self._agenda else next_plan
            wait = self.clock.real_seconds(min(head, next_plan) - self.clock.now())
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(1.0, wait))

    def _log_events(self, user: str, reason: str, events: Any) -> None:
        """Keep what the device just tracked in its activity log (the ground truth)."""
        now = self.now()
        log = self.activity.setdefault(user, Activity())
        log.sessions.append((now, reason, len(events)))
        for name, props in events:
            if name == "add_to_cart":
                log.carts.append(now)
            elif name == "purchase":
                log.purchases.append((now, float(props.get("amount", 0))))

    def run_session(self, index: int, session: Session) -> None:
        """The device opens the app: app_open, articles, maybe a cart and a purchase."""
        client = self.by_index.get(index)
        if client is None:
            return
        events: list[tuple[str, dict[str, Any]]] = [("app_open", {})]
        events += [("view_content", {"category": category}) for category in session.views]
        if session.cart:
            events.append(("add_to_cart", {"item": "basket", "price": session.amount}))
        if session.buy:
            events.append(("purchase", {"item": "basket", "amount": session.amount}))
        for name, props in events:
            client.track(name, props)
        self._log_events(f"u{index}", session.reason, events)

    def campaign_count(self, campaign: str) -> int:
        """Campaign messages of ``campaign`` received so far (by this worker's devices)."""
        return sum(1 for entry in self.campaign_log if entry[1] == campaign)

    def _size(self) -> dict[str, Any]:
        """This worker's devices and its memory, beside its load."""
        return {"devices": len(self.indexes), "rss_mib": round(rss_mib(), 1)}

    def report(self) -> dict[str, Any]:
        self.quiet_violations += sum(
            1 for quiet, tz, at, urgent in self.shown
            if shown_in_quiet_hours(quiet, tz, at, urgent_transactional=urgent)
        )  # fmt: skip
        self.shown = []
        out = {
            "latencies": self.latencies,
            "handled": self.handled,
            "load": self.load.read() | self._size(),
            "received": self.received,
            "displayed_twice": sum(1 for n in self.displayed.values() if n > 1),
            "quiet_violations": self.quiet_violations,
            "clicks": dict(self.clicks),
            "duplicates": sum(c.stats.duplicates for c in self.clients),
            "reconnects": sum(c.stats.reconnects for c in self.clients),
            "campaign_log": list(self.campaign_log),
            "cart_at": dict(self.cart_at),
            "activity": {u: (a.sessions, a.carts, a.purchases) for u, a in self.activity.items()},
            "connected_at": dict(self.connected_at),
            "rehello_ms": self.rehello_ms,
        }
        self.latencies, self.handled, self.rehello_ms = [], [], []
        return out

    async def settle(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until every device's queued requests were answered by the gateway."""
        deadline = time.monotonic() + timeout
        while any(c.pending_requests for c in self.clients) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        """Counters since the last call (latencies) and totals (the rest)."""
        latencies, self.latencies = self.latencies, []
        self.handled = []
        return {
            "connected": self.connected(),
            "received": sum(self.received.values()),
            "displayed": sum(self.displayed.values()),
            "latencies": latencies,
            "load": self.load.read(),
            "sessions": sum(len(a.sessions) for a in self.activity.values()),
            "purchases": sum(len(a.purchases) for a in self.activity.values()),
        }

    def inbox(self, index: int) -> list[dict[str, Any]]:
        """The inbox of device ``index`` as the SDK holds it (newest first)."""
        for client in self.clients:
            if client.device_id == f"d{index}":
                return [
                    {"id": i.id, "title": i.title, "body": i.body, "read": i.read,
                     "category": i.category, "held": i.held}
                    for i in client.inbox.items()
                ]  # fmt: skip
        return []

    async def close(self) -> None:
        for task in self.wire_tasks:
            task.cancel()
        await asyncio.gather(*self.wire_tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in self.bare), return_exceptions=True)


async def _hog() -> None:
    """Block the event loop 100 ms in every 200 ms (the "busy" fault)."""
    while True:
        await asyncio.sleep(0.1)
        time.sleep(0.1)  # noqa: ASYNC251 - the point: a loop that cannot keep up


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(callback)


def _worker_main(cfg: FleetConfig, indexes: list[int], conn: Any) -> None:
    async def main() -> None:
        raise_nofile()
        heap = HeapKeeper()  # devices are long-lived: keep full collections off the receive path
        heap.start()
        worker = _Worker(cfg, indexes)
        background = []
        if cfg.admin is not None:
            await worker.follow_clock()
            background.append(asyncio.get_running_loop().create_task(worker.poll_clock()))
        try:
            await worker.connect(lambda n: conn.send(("progress", n)))
        except (TimeoutError, OSError) as exc:  # said once, to the coordinator, in words
            conn.send(("failed", 0, f"{type(exc).__name__}: {exc}" if str(exc) else
                       "a device was not welcomed in time"))  # fmt: skip
            return
        heap.settle()
        if cfg.living and cfg.personas and worker.clock is not None:
            background.append(asyncio.get_running_loop().create_task(worker.live()))
        background.append(asyncio.get_running_loop().create_task(worker.load.run()))
        if cfg.fault == "busy":
            background.append(asyncio.get_running_loop().create_task(_hog()))
        conn.send(("connected", len(indexes), {"devices": len(indexes),
                                                "seconds": round(worker.connect_s, 3),
                                                "hello_ms": worker.hello_ms}))  # fmt: skip
        while True:
            cmd, *args = await asyncio.to_thread(conn.recv)
            if cmd == "wait_received":
                await worker.wait_received(*args)
                conn.send(("report", worker.report()))
            elif cmd == "wait_connected":
                t0 = time.monotonic()
                await worker.wait_connected(args[0])
                heap.settle()
                conn.send(("connected", worker.connected(), time.monotonic() - t0))
            elif cmd == "settle":
                await worker.settle(args[0])
                heap.settle()
                worker.load.read()  # the measured phase starts now
                conn.send(("settled",))
            elif cmd == "report":
                conn.send(("report", worker.report()))
            elif cmd == "shop":
                conn.send(("shopped", await worker.shop(args[0])))
            elif cmd == "campaign_count":
                conn.send(("count", worker.campaign_count(args[0])))
            elif cmd == "stats":
                conn.send(("stats", worker.stats()))
            elif cmd == "inbox":
                conn.send(("inbox", worker.inbox(args[0])))
            elif cmd == "clock":
                worker.set_clock(args[0])
                conn.send(("clock",))
            elif cmd == "stop":
                for task in background:
                    task.cancel()
                await worker.close()
                conn.send(("stopped",))
                return

    asyncio.run(main())


# --- the parent side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coordinator:
    """Workers on other machines (``tidings loadtest-worker``) join the run over TCP: the
    fleet listens on ``host:port`` for ``workers`` of them, authenticated by ``key``."""

    host: str
    port: int
    workers: int
    key: bytes
    accept_s: float = 120.0


OFFSET_ROUNDS = 16
"""Clock readings a coordinator takes of each worker; the one with the shortest round trip
sets the offset (NTP's rule): its uncertainty is half that round trip."""


def clock_offset(conn: Any, rounds: int = OFFSET_ROUNDS) -> tuple[float, float]:
    """(The worker's clock minus ours, its uncertainty), in seconds."""
    best: tuple[float, float] | None = None
    for _ in range(rounds):
        t0 = time.time()
        conn.send(("time",))
        _, theirs = conn.recv()
        t1 = time.time()
        half = (t1 - t0) / 2
        if best is None or half < best[1]:
            best = (theirs - (t0 + t1) / 2, half)
    assert best is not None
    return best


def run_remote_worker(host: str, port: int, key: bytes, wait_s: float = 120.0) -> None:
    """``tidings loadtest-worker``: join a coordinator, answer its clock readings, then run
    the devices it assigns as one worker of its fleet until it says stop."""
    from multiprocessing.connection import Client

    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = Client((host, port), authkey=key)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    while True:
        message = conn.recv()
        if message[0] == "time":
            conn.send(("time", time.time()))
        elif message[0] == "start":
            _, cfg, indexes = message
            _worker_main(cfg, indexes, conn)
            return


class Fleet:
    """The parent's handle on the worker processes (local, or joined over TCP)."""

    def __init__(self, cfg: FleetConfig, coordinator: Coordinator | None = None) -> None:
        self.cfg = cfg
        self.coordinator = coordinator
        self._procs: list[Any] = []
        self._pipes: list[Any] = []
        self._lock = threading.Lock()
        self.connects: list[dict[str, Any]] = []
        """Each worker's connect phase: ``devices``, ``seconds``, ``hello_ms`` (per device)."""
        self.offsets: list[tuple[float, float]] = []
        """Each worker's clock minus this process's, and its uncertainty (s): its latencies
        are corrected by it (0 for local workers: one clock)."""

    def connect_report(self) -> dict[str, Any]:
        """The connect storm in figures: per worker, devices welcomed per second and hello
        latency (connect started to welcome) p99; and the hello percentiles of every device."""
        from tidings.simulator.engine.report import percentiles

        workers = [
            {"devices": c["devices"], "seconds": c["seconds"],
             "rate_per_s": round(c["devices"] / c["seconds"], 1) if c["seconds"] else None,
             "hello_p99_ms": round(percentiles(c["hello_ms"])["p99"], 1)}
            for c in self.connects if c
        ]  # fmt: skip
        hellos = [ms for c in self.connects if c for ms in c["hello_ms"]]
        return {"workers": workers, "hello_ms": percentiles(hellos)}

    def start(self, progress: Callable[[int, int], None] | None = None) -> float:
        """Spawn the workers and connect every device; return the seconds it took."""
        t0 = time.perf_counter()
        if self.coordinator is not None:
            self._join_remote(self.coordinator)
        else:
            ctx = mp.get_context("spawn")
            for w in range(self.cfg.workers):
                indexes = list(range(w, self.cfg.devices, self.cfg.workers))
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(self.cfg, indexes, child),
                                   daemon=True)  # fmt: skip
                proc.start()
                child.close()  # the worker's end: this process sees EOF if the worker dies
                self._procs.append(proc)
                self._pipes.append(parent)
                self.offsets.append((0.0, 0.0))
        counts = [0] * len(self._pipes)
        self.connects = [{} for _ in self._pipes]
        pending = set(range(len(self._pipes)))
        shown = -1
        while pending:
            for w in list(pending):
                pipe = self._pipes[w]
                while pipe.poll(0.02):
                    try:
                        kind, n, *more = pipe.recv()
                    except EOFError:
                        kind, more = "failed", ["it stopped"]
                    if kind == "failed":
                        raise RuntimeError(
                            f"device worker {w + 1} could not connect its devices ({more[0]}):"
                            " the gateway did not welcome them in time; try fewer --devices,"
                            " more --workers, or workers on more machines"
                        )
                    counts[w] = n
                    if kind == "connected":
                        self.connects[w] = more[0]
                        pending.discard(w)
                        break
            if progress is not None and sum(counts) != shown:  # each state once
                shown = sum(counts)
                progress(shown, self.cfg.devices)
        return time.perf_counter() - t0

    def _join_remote(self, c: Coordinator) -> None:
        """Accept ``c.workers`` workers, read each one's clock, assign each its devices."""
        from multiprocessing.connection import Listener

        listener = Listener((c.host, c.port), authkey=c.key)
        listener._listener._socket.settimeout(c.accept_s)  # type: ignore[attr-defined]
        try:
            while (w := len(self._pipes)) < c.workers:
                try:
                    conn = listener.accept()
                except TimeoutError:
                    raise TimeoutError(f"{w} of {c.workers} workers joined within"
                                       f" {c.accept_s:.0f} s") from None  # fmt: skip
                except mp.AuthenticationError:
                    continue  # a worker with another key is refused; the run waits on
                self.offsets.append(clock_offset(conn))
                indexes = list(range(w, self.cfg.devices, c.workers))
                conn.send(("start", self.cfg, indexes))
                self._pipes.append(conn)
        finally:
            listener.close()

    def _ask(self, *command: Any) -> list[Any]:
        with self._lock:  # the TUI asks from more than one thread
            for pipe in self._pipes:
                pipe.send(command)
            return [pipe.recv() for pipe in self._pipes]

    def stats(self) -> dict[str, Any]:
        """Connected devices, messages received and shown, and latencies since the last call."""
        merged: dict[str, Any] = {"connected": 0, "received": 0, "displayed": 0, "latencies": [],
                                  "sessions": 0, "purchases": 0, "loads": []}  # fmt: skip
        for _, part in self._ask("stats"):
            for key in ("connected", "received", "displayed", "sessions", "purchases"):
                merged[key] += part[key]
            merged["latencies"] += part["latencies"]
            merged["loads"].append(part["load"])
        return merged

    def inbox(self, index: int) -> list[dict[str, Any]]:
        """The inbox of device ``index``."""
        pipe = self._pipes[index % len(self._pipes)]
        with self._lock:
            pipe.send(("inbox", index))
            return list(pipe.recv()[1])

    def wait_received(
        self, message_id: str, timeout: float = 60.0, users: tuple[int, int] | None = None
    ) -> DeviceReport:
        """Wait until every device got ``message_id`` (or the timeout); merge the reports.

        ``users``: the message went to the users of devices ``first`` to ``end - 1`` only.
        """
        return self._merge(self._ask("wait_received", message_id, timeout, users))

    def report(self) -> DeviceReport:
        """What the devices saw so far, merged (latencies since the last report)."""
        return self._merge(self._ask("report"))

    def _merge(self, answers: list[Any]) -> DeviceReport:
        """The workers' reports as one; each worker's latencies on this process's clock."""
        report = DeviceReport()
        for (_, r), (offset, _) in zip(answers, self.offsets, strict=True):
            shift = offset * 1000  # a worker's clock ahead makes its latencies too long
            report.latencies_ms.extend(ms - shift for ms in r["latencies"])
            report.handled_ms.extend(ms - shift for ms in r["handled"])
            report.workers.append(r["load"])
            for mid, n in r["received"].items():
                report.received[mid] = report.received.get(mid, 0) + n
            report.displayed_twice += r["displayed_twice"]
            report.shown_in_quiet_hours += r["quiet_violations"]
            for key, n in r["clicks"].items():
                report.clicks[key] = report.clicks.get(key, 0) + n
            report.duplicates_dropped += r["duplicates"]
            report.reconnects += r["reconnects"]
            report.campaign += [CampaignReceipt(*entry) for entry in r["campaign_log"]]
            report.cart_at.update(r["cart_at"])
            for user, (sessions, carts, purchases) in r["activity"].items():
                report.activity[user] = Activity(list(sessions), list(carts), list(purchases))
            report.connected_at.update(r["connected_at"])
            report.rehello_ms.extend(r["rehello_ms"])
        return report

    def shop(self, buy_after: float = 0.5) -> int:
        """Devices with a cart in their plan add to it, buyers buy; return the carts."""
        return sum(n for _, n in self._ask("shop", buy_after))

    def set_clock(self, state: ClockState) -> None:
        """Every worker takes this reading of the gateway's clock now (after a change)."""
        self._ask("clock", state)

    def campaign_count(self, campaign: str) -> int:
        """Campaign messages of ``campaign`` received by the whole fleet so far."""
        return sum(n for _, n in self._ask("campaign_count", campaign))

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the devices' start-up requests (identify, events) are all answered."""
        self._ask("settle", timeout)

    def wait_connected(self, timeout: float = 120.0) -> tuple[int, float]:
        """Wait until every device is connected again; return (connected, seconds)."""
        answers = self._ask("wait_connected", timeout)
        return sum(a[1] for a in answers), max(a[2] for a in answers)

    def stop(self) -> None:
        """Close every device and end the workers."""
        with contextlib.suppress(EOFError, OSError):
            self._ask("stop")
        if self.coordinator is not None:
            for conn in self._pipes:
                conn.close()
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
