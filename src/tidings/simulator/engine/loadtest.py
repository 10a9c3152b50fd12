"""The headless load test: a gateway process, a fleet of SDK devices, a scenario, a report.

The gateway runs as ``python -m tidings gateway`` in its own process (so it has a core of its
own and its CPU and RSS can be read from /proc); devices run in worker processes; the optional
bare baseline runs the same fleet harness against a minimal websockets broadcast server.

Scenarios:

- ``broadcast``: one message to every device's user through ``POST /v1/messages``.
- ``reconnect-storm``: the gateway is killed (SIGKILL) and restarted; every device must come
  back, then a broadcast.
- ``segment``: a tag rule (:data:`SPORTS_FAN`: three sports articles in a week) and a one-off
  campaign to ``tag:sports_fan and attr.age >= 18`` with the personalised title
  :data:`GREETING`. Devices identify with their plan's attributes and track its events through
  the SDK; the expected audience is computed from the plans alone
  (:func:`~tidings.simulator.engine.truth.segment_audience`), and every received title must
  equal :func:`~tidings.simulator.engine.truth.greeting` for that device.
- ``trigger``: an abandoned-cart campaign (``add_to_cart`` unless ``purchase`` within
  :data:`CART_WAIT_S`, sent then). Devices add to their cart as their plan says, some buy half
  a second later; the expected audience is those who added and did not buy. Latency runs from
  the send's due time (add to cart + :data:`CART_WAIT_S`) to receipt, so it includes the
  scheduler's round; send-to-receipt is reported beside it.
- ``caps``: :data:`CAPS_CAMPAIGNS` one-off marketing campaigns, one after another, to
  :data:`CAPS_SEGMENT` (users who never bought). Each such user is a ``basic`` user and must get
  exactly :data:`~tidings.simulator.engine.truth.NEW_BASIC_WEEKLY_CAP` of them: more is an
  ``over_cap`` violation, fewer a ``short`` one. The cap is the server's business across
  campaigns; the expected count comes from the caps rule and the plans.
- ``week``: ``days`` simulated days at ``speed`` on the gateway's simulated clock, the devices
  living their personas' days, with one-off, local-time, best-time, abandoned-cart and A/B
  campaigns; see :mod:`tidings.simulator.engine.week` for the checks.

Every campaign is checked against the ground truth: precision and recall, titles, how many
messages each user got (one per campaign, capped across campaigns), nothing shown twice or in
quiet hours. Users who got
a campaign they should not have (``not_in_audience``) or missed one they should have
(``missed``) count as violations, so the command fails on any of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tidings.admin_client import AdminClient, AdminError
from tidings.protocol.simtime import check_speed
from tidings.server.campaigns.engine import TICK_S
from tidings.simulator.engine.baseline import BareServer
from tidings.simulator.engine.fleet import (
    CampaignReceipt,
    Coordinator,
    DeviceReport,
    Fleet,
    FleetConfig,
    read_clock,
    rss_mib,
)
from tidings.simulator.engine.personas import plan
from tidings.simulator.engine.report import LoadReport, percentiles
from tidings.simulator.engine.truth import (
    NEW_BASIC_WEEKLY_CAP,
    CountRule,
    accuracy,
    cart_audience,
    count_violations,
    greeting,
    never_bought,
    segment_audience,
)
from tidings.simulator.engine.week import DEFAULT_SPEED, WeekRun, first_midnight

__all__ = [
    "CAPS_CAMPAIGNS",
    "CAPS_SEGMENT",
    "CART_WAIT_S",
    "GREETING",
    "MIN_AGE",
    "SCENARIOS",
    "SPORTS_FAN",
    "GatewayProcess",
    "run_loadtest",
]

SCENARIOS = ("broadcast", "reconnect-storm", "node-failure", "segment", "trigger", "caps", "week")
CAMPAIGN_SCENARIOS = ("segment", "trigger", "caps", "week")
WIRE_SCENARIOS = ("broadcast", "reconnect-storm", "node-failure")
"""The scenarios lean wire devices run (the others need personas and the SDK's behaviour)."""
MAX_TARGETS_PER_SEND = 10_000
FAILOVER_ROUNDS = 5
"""Messages the node-failure scenario sends to everyone: one in flight when a node dies, the
rest while its devices move to the other nodes."""
DEV_ADMIN_KEY = "dev-admin-key"

SPORTS_FAN = CountRule(name="sports_fan", event="view_content", prop="category", value="sports",
                       at_least=3)  # fmt: skip
"""The segment scenario's tag rule: three sports articles within seven days."""

MIN_AGE = 18
"""The segment scenario's age condition (``attr.age >= 18``)."""

GREETING = 'Hi {{ user.first_name | default("there") }}'
"""The personalised title of both campaign scenarios (see :func:`truth.greeting`)."""

ADMIN_TIMEOUT_S = 300.0
"""How long one admin API call of a load test may take (a report over a large run is slow)."""

CAPS_CAMPAIGNS = 3
"""Marketing campaigns the caps scenario sends, one after another, to the same users."""

CAPS_SEGMENT = "not event purchase count >= 1 within 30d"
"""The caps scenario's audience: users who never bought (``basic`` tier)."""

CART_WAIT_S = 3
"""Seconds an abandoned cart waits for a purchase before the reminder goes out."""

BUY_AFTER_S = 0.5
"""Seconds between adding to the cart and buying, for devices that buy."""

GRACE_S = 0.5
"""Seconds to keep listening once every expected message arrived (late extras still count)."""

Progress = Callable[[str, int, int], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``tidings gateway`` in a child process, restartable on the same ports and database.

    With ``broker``, one node of a cluster (``db`` is then a PostgreSQL URL).
    """

    def __init__(
        self, db: str, *, broker: str | None = None, node_id: str | None = None,
        prefix: str | None = None, clock: str | None = None, log: str | None = None,
    ) -> None:  # fmt: skip
        self.db = db
        self.log = log  # a file the gateway's output is added to (else it is discarded)
        self.broker, self.node_id, self.prefix = broker, node_id, prefix
        self.clock = clock  # "simulated": the gateway runs on a simulated clock
        self.port, self.admin_port = _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tidings", "gateway", "--port", str(self.port),
               "--admin-port", str(self.admin_port), "--db", self.db]  # fmt: skip
        env = dict(os.environ)
        if self.clock:
            cmd += ["--clock", self.clock]
        if self.broker:
            cmd += ["--broker", self.broker, "--node-id", self.node_id or f"n{self.port}"]
            env["TIDINGS_BROKER_PREFIX"] = self.prefix or "tidings:"
        if self.log is None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        else:
            with open(self.log, "ab") as out:  # the child keeps its own copy
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.admin.call("GET", "/healthz")
                return
            except AdminError:
                if (code := self.proc.poll()) is not None:
                    raise RuntimeError(
                        f"the gateway exited with status {code} at start; run `{' '.join(cmd[1:])}`"
                        " by itself to see why"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError("the gateway did not start within 30 s")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush (the reconnect-storm scenario)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def admin(self) -> AdminClient:
        """The gateway's admin API (the development app's key)."""
        return AdminClient(self.admin_url, DEV_ADMIN_KEY, timeout=ADMIN_TIMEOUT_S)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.proc is not None
        return rss_mib(self.proc.pid)


class Gateways:
    """The gateway processes of a run: one on SQLite, or ``nodes`` of a cluster on a fresh
    PostgreSQL database (made from ``db`` for this run and dropped after it) and Redis."""

    def __init__(self, tmp: str, *, nodes: int = 1, db: str | None = None,
                 broker: str | None = None, clock: str | None = None,
                 logs: str | None = None) -> None:  # fmt: skip
        self._drop: str | None = None
        self._db = db or ""
        postgres = self._db.startswith(("postgresql://", "postgres://"))
        if nodes > 1 and not (postgres and broker):
            raise ValueError("several nodes need --db postgresql://… and --broker redis://…")
        if db and not postgres:
            raise ValueError("--db takes a postgresql:// URL (SQLite runs in a temporary file)")
        run_db = f"{tmp}/loadtest.db"
        if postgres:
            run_db, self._drop = _fresh_database(self._db)
        prefix = f"loadtest-{uuid.uuid4().hex[:8]}:"
        self._broker, self._prefix = broker, prefix
        if logs is not None:
            os.makedirs(logs, exist_ok=True)
        self.nodes = [
            GatewayProcess(run_db, broker=broker, node_id=f"node-{i}", prefix=prefix, clock=clock,
                           log=None if logs is None else os.path.join(logs, f"node-{i}.log"))
            for i in range(nodes)
        ]  # fmt: skip

    @property
    def first(self) -> GatewayProcess:
        """The node whose admin API the run uses."""
        return self.nodes[0]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(g.url for g in self.nodes)

    def start(self) -> None:
        for g in self.nodes:
            g.start()

    def stop(self) -> None:
        for g in self.nodes:
            g.stop()
        if self._drop is not None:
            _drop_database(self._db, self._drop)
            self._drop = None
        if self._broker:  # the run's keys in Redis (its routes) go with its database
            _drop_keys(self._broker, self._prefix)
            self._broker = None

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds of each running node, by its index."""
        return {i: g.cpu_seconds() for i, g in enumerate(self.nodes)
                if g.proc and g.proc.poll() is None}  # fmt: skip

    def cpu_since(self, before: dict[int, float]) -> float:
        """CPU seconds the nodes running now spent since ``before`` (a killed one's are lost)."""
        return sum(now - before.get(i, 0.0) for i, now in self.cpu_seconds().items())

    def rss_mib(self) -> float:
        return sum(g.rss_mib() for g in self.nodes if g.proc and g.proc.poll() is None)

    def hellos(self) -> dict[int, dict[float, int]]:
        """Each running node's hello histogram (``tidings_hello_seconds``): how many of its
        hellos took at most each bound, in seconds, by the node's index."""
        return {i: _hello_buckets(g) for i, g in enumerate(self.nodes)
                if g.proc and g.proc.poll() is None}  # fmt: skip


def _hello_buckets(gateway: GatewayProcess) -> dict[float, int]:
    prefix = 'tidings_hello_seconds_bucket{le="'
    return {float(series[len(prefix) : -2]): int(count)
            for series, count in gateway.admin.metrics().items()
            if series.startswith(prefix)}  # fmt: skip


def gateway_hello_ms(
    before: dict[int, dict[float, int]], after: dict[int, dict[float, int]]
) -> dict[str, float | int] | None:
    """The gateways' own hello percentiles between two readings of :meth:`Gateways.hellos`
    (the nodes running at both), as the bucket bounds they fall under, in ms: a hello taking
    ``p99`` means at most that long. None when no node welcomed anyone meanwhile."""
    merged: dict[float, int] = {}
    for i, buckets in after.items():
        for bound, n in buckets.items():
            merged[bound] = merged.get(bound, 0) + n - before.get(i, {}).get(bound, 0)
    bounds = sorted(merged)
    total = merged.get(float("inf"), 0)
    if not total:
        return None

    def under(q: float) -> float:
        return next(b for b in bounds if merged[b] >= q * total) * 1000

    return {"count": total, "p50": under(0.5), "p99": under(0.99)}


def _fresh_database(dsn: str) -> tuple[str, str]:
    """Create an empty database next to ``dsn``'s; return its URL and name."""
    name = f"tidings_loadtest_{uuid.uuid4().hex[:12]}"
    _run_sql(dsn, f'CREATE DATABASE "{name}"')
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}", name


def _drop_database(dsn: str, name: str) -> None:
    _run_sql(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_keys(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` on the Redis at ``url``."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _run_sql(dsn: str, sql: str) -> None:
    """One statement on ``dsn``'s server, from this synchronous code."""
    import asyncpg

    async def run() -> None:
        con = await asyncpg.connect(dsn, timeout=10)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(run())


def _broadcast(
    gateway: GatewayProcess, devices: int, then: Callable[[], None] | None = None,
    rounds: int = 1,
) -> dict[str, tuple[int, int]]:  # fmt: skip
    """Send ``rounds`` messages to every device's user, at most 10,000 users per request.

    Returns each message's id and its users, as the device indexes ``(first, end)``. ``then``
    runs right after the first request is answered (stored), while it fans out.
    """
    sent = {}
    starts = [s for _ in range(rounds) for s in range(0, devices, MAX_TARGETS_PER_SEND)]
    for start in starts:
        end = min(devices, start + MAX_TARGETS_PER_SEND)
        result = gateway.admin.call("POST", "/v1/messages", {
            "app": "demo", "to": {"users": [f"u{i}" for i in range(start, end)]},
            "kind": "banner", "title": "Flash sale", "body": "Half price until midnight",
            "category": "transactional",
        })  # fmt: skip
        sent[result["message_id"]] = (start, end)
        if then is not None:
            then()
            then = None
    return sent


def _busiest(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker, the heavier of two windows of its load (saturated in any counts)."""
    if not a:
        return list(b)
    return [
        {"cpu_pct": max(x["cpu_pct"], y["cpu_pct"]), "devices": x["devices"],
         "loop_lag_ms": {k: max(x["loop_lag_ms"][k], y["loop_lag_ms"][k]) for k in ("p50", "p99")},
         **{k: max(x.get(k, 0.0), y.get(k, 0.0)) for k in ("rss_mib", "waited_for_cpu_pct")}}
        for x, y in zip(a, b, strict=True)
    ]  # fmt: skip


def _collect(fleet: Fleet, sent: dict[str, tuple[int, int]], timeout: float) -> DeviceReport:
    merged = DeviceReport()
    for message_id, users in sent.items():
        r = fleet.wait_received(message_id, timeout, users)
        merged.latencies_ms += r.latencies_ms
        merged.handled_ms += r.handled_ms
        merged.workers = _busiest(merged.workers, r.workers)
        for mid, n in r.received.items():
            merged.received[mid] = max(merged.received.get(mid, 0), n)
        merged.displayed_twice += r.displayed_twice
        merged.shown_in_quiet_hours = r.shown_in_quiet_hours
        merged.clicks = r.clicks
        merged.duplicates_dropped = r.duplicates_dropped
        merged.reconnects = r.reconnects
        merged.rehello_ms += r.rehello_ms
    return merged


@dataclass(slots=True)
class _CampaignRun:
    """What campaign scenario expected and what the server said it sent.

    ``campaigns`` are checked together: every user in ``expected`` must get ``per_user``
    messages from them, everyone else none.
    """

    campaigns: tuple[str, ...]
    expected: set[str]
    titles: dict[str, str]
    per_user: int = 1
    sent: int = 0


def _create_campaign(gateway: GatewayProcess, spec: dict[str, Any]) -> None:
    gateway.admin.call("POST", "/v1/campaigns", {"app": "demo", **spec})
    gateway.admin.call("POST", f"/v1/campaigns/{spec['id']}/start?app=demo")


def _sent(gateway: GatewayProcess, campaigns: tuple[str, ...]) -> int:
    total = 0
    for campaign in campaigns:
        stats = gateway.admin.call("GET", f"/v1/campaigns/{campaign}/stats?app=demo")
        total += int(stats["total"]["sent"])
    return total


def _wait_campaign(
    fleet: Fleet, gateway: GatewayProcess, run: _CampaignRun, timeout: float, not_before: float
) -> None:
    """Wait until the fleet holds every message expected and every message sent, then a grace.

    ``not_before`` (monotonic): the server may still be deciding until then (pending sends).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if time.monotonic() >= not_before:
            run.sent = _sent(gateway, run.campaigns)
            got = sum(fleet.campaign_count(c) for c in run.campaigns)
            if got >= max(run.sent, len(run.expected) * run.per_user):
                break
        time.sleep(0.05)
    time.sleep(GRACE_S)
    run.sent = _sent(gateway, run.campaigns)


def _segment(gateway: GatewayProcess, fleet: Fleet, devices: int, seed: int,
             timeout: float) -> _CampaignRun:  # fmt: skip
    plans = [plan(seed, i) for i in range(devices)]
    run = _CampaignRun(
        campaigns=("loadtest-segment",),
        expected=segment_audience(plans, SPORTS_FAN, MIN_AGE),
        titles={p.user: greeting(p) for p in plans},
    )
    _create_campaign(gateway, {
        "id": run.campaigns[0], "name": "Sports fans", "kind": "one_off",
        "segment": f"tag:{SPORTS_FAN.name} and attr.age >= {MIN_AGE}",
        "content": {"kind": "banner", "title": GREETING, "body": "The derby is on tonight",
                    "category": "marketing", "data": {"topic": "sports"}},
        "frequency": {"per_user_limit": 1},
    })  # fmt: skip
    _wait_campaign(fleet, gateway, run, timeout, time.monotonic())
    return run


def _trigger(gateway: GatewayProcess, fleet: Fleet, devices: int, seed: int,
             timeout: float) -> _CampaignRun:  # fmt: skip
    plans = [plan(seed, i) for i in range(devices)]
    run = _CampaignRun(
        campaigns=("loadtest-cart",),
        expected=cart_audience(plans),
        titles={p.user: greeting(p) for p in plans},
    )
    _create_campaign(gateway, {
        "id": run.campaigns[0], "name": "Abandoned cart", "kind": "triggered",
        "trigger": {"event": "add_to_cart", "delay_s": CART_WAIT_S,
                    "unless": {"event": "purchase", "within_s": CART_WAIT_S}},
        "content": {"kind": "banner", "title": GREETING,
                    "body": 'Your {{ event.item | default("cart") }} is waiting',
                    "category": "marketing", "data": {"topic": "sale"}},
        "frequency": {"per_user_limit": 1},
    })  # fmt: skip
    fleet.shop(BUY_AFTER_S)
    # Sends fall due CART_WAIT_S after the carts; the scheduler runs about once a second.
    _wait_campaign(fleet, gateway, run, timeout, time.monotonic() + CART_WAIT_S)
    return run


def _caps(gateway: GatewayProcess, fleet: Fleet, devices: int, seed: int,
          timeout: float) -> _CampaignRun:  # fmt: skip
    plans = [plan(seed, i) for i in range(devices)]
    run = _CampaignRun(
        campaigns=tuple(f"loadtest-caps-{k}" for k in range(1, CAPS_CAMPAIGNS + 1)),
        expected=never_bought(plans),
        titles={p.user: greeting(p) for p in plans},
        per_user=min(CAPS_CAMPAIGNS, NEW_BASIC_WEEKLY_CAP),
    )
    for k, campaign in enumerate(run.campaigns, 1):
        # One after another: each start decides against the sends the previous ones stored.
        _create_campaign(gateway, {
            "id": campaign, "name": f"Weekly deal {k}", "kind": "one_off",
            "segment": CAPS_SEGMENT,
            "content": {"kind": "banner", "title": GREETING, "body": f"Deal number {k}",
                        "category": "marketing", "data": {"topic": "sale"}},
            "frequency": {"per_user_limit": 1},
        })  # fmt: skip
    _wait_campaign(fleet, gateway, run, timeout, time.monotonic())
    return run


def run_loadtest(
    *,
    devices: int,
    scenario: str,
    baseline: bool = False,
    workers: int = 2,
    frame_size: int = 260,
    timeout: float = 120.0,
    progress: Progress | None = None,
    seed: int = 0,
    personas: bool = True,
    quiet_override: tuple[str, str] | None = None,
    fault: str | None = None,
    nodes: int = 1,
    db: str | None = None,
    broker: str | None = None,
    days: int = 7,
    speed: float | None = None,
    device_kind: str = "sdk",
    coordinator: Coordinator | None = None,
    gateway_logs: str | None = None,
) -> LoadReport:
    """Run one scenario end to end and return its report.

    ``device_kind``: "sdk" (real SDK devices with personas: every scenario) or "wire" (lean
    devices speaking the protocol through its sans-I/O session: :data:`WIRE_SCENARIOS`, pure
    fan-out, where the fleet should cost as little as it can).

    ``coordinator``: the devices run on workers that join over TCP (``tidings
    loadtest-worker``), possibly on other machines; their clocks are read at the start and
    their latencies corrected (``extra["worker_clocks"]``).

    ``nodes`` > 1: that many gateway processes of one cluster (``db`` a PostgreSQL URL, a fresh
    database is made next to it for the run; ``broker`` a Redis URL); each device is given
    every node's URL, starting from its own, and the admin calls go to the first node.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    if device_kind not in ("sdk", "wire"):
        raise ValueError(f"--device-kind: sdk or wire, got {device_kind!r}")
    if device_kind == "wire" and scenario not in WIRE_SCENARIOS:
        raise ValueError(f"the {scenario} scenario needs SDK devices (--device-kind sdk): lean"
                         f" devices run {', '.join(WIRE_SCENARIOS)}")  # fmt: skip
    if scenario == "node-failure" and nodes < 2:
        raise ValueError("the node-failure scenario needs --nodes 2 or more")
    if scenario in CAMPAIGN_SCENARIOS and not personas:
        raise ValueError(f"the {scenario} scenario needs personas (drop --no-personas)")
    if scenario == "week":
        if nodes != 1:
            raise ValueError("the week scenario runs on one gateway (its simulated clock)")
        if days < 1:
            raise ValueError(f"--days must be at least 1, got {days}")
        try:
            speed = check_speed(DEFAULT_SPEED if speed is None else speed)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
    elif speed is not None:
        raise ValueError("--speed and --days are for the week scenario")
    extra: dict[str, Any] = {}
    sent: dict[str, tuple[int, int]] = {}
    run: _CampaignRun | None = None
    week: WeekRun | None = None
    with tempfile.TemporaryDirectory() as tmp:
        gateways = Gateways(tmp, nodes=nodes, db=db, broker=broker, logs=gateway_logs,
                            clock="simulated" if scenario == "week" else None)  # fmt: skip
        gateways.start()
        gateway = gateways.first
        epoch = None
        if scenario == "week":
            # Day 0 starts at the next UTC midnight; everyone connects then, the clock paused.
            epoch = first_midnight(read_clock(gateway.admin).now)
            gateway.admin.call("PUT", "/v1/clock", {"now": epoch, "paused": True})
        if scenario == "segment":
            # Defined before anyone connects: the tag is earned live, as events arrive.
            gateway.admin.call(
                "PUT", f"/v1/tag-rules/{SPORTS_FAN.name}?app=demo", SPORTS_FAN.to_json()
            )
        config = FleetConfig(
            url=gateways.urls,
            devices=devices,
            workers=workers if coordinator is None else coordinator.workers,
            kind=device_kind,
            seed=seed,
            personas=personas,
            quiet_override=quiet_override,
            fault=fault,
            admin=gateway.admin_url if scenario == "week" else None,
            admin_key=DEV_ADMIN_KEY,
            living=scenario == "week",
            epoch=epoch,
        )
        fleet = Fleet(config, coordinator)
        if scenario == "week":
            assert epoch is not None and speed is not None
            week = WeekRun(admin=gateway.admin, fleet=fleet, devices=devices, seed=seed,
                           days=days, speed=speed, epoch=epoch, progress=progress)  # fmt: skip
            week.before_connect()
        try:
            connect_s = fleet.start(
                None if progress is None else (lambda n, total: progress("connecting", n, total))
            )
            connect_report = fleet.connect_report()
            connect_report["gateway_hello_ms"] = gateway_hello_ms({}, gateways.hellos())
            if coordinator is not None:
                extra["worker_clocks"] = [
                    {"offset_ms": round(o * 1000, 3), "uncertainty_ms": round(u * 1000, 3)}
                    for o, u in fleet.offsets
                ]
            fleet.settle(timeout)  # measure the fan-out, not the start-up traffic
            cpu0 = gateways.cpu_seconds()
            if scenario == "reconnect-storm":
                for g in gateways.nodes:
                    g.kill()
                gateways.start()
                t0 = time.perf_counter()
                back, _ = fleet.wait_connected(timeout)
                extra["reconnected"] = back
                extra["reconnect_s"] = round(time.perf_counter() - t0, 3)
                cpu0 = gateways.cpu_seconds()
            if scenario == "segment":
                run = _segment(gateway, fleet, devices, seed, timeout)
            elif scenario == "trigger":
                run = _trigger(gateway, fleet, devices, seed, timeout)
            elif scenario == "caps":
                run = _caps(gateway, fleet, devices, seed, timeout)
            elif week is not None:
                events0 = _events_total(gateway)
                week.run()
                fleet.settle(timeout)
                time.sleep(TICK_S + 0.5)  # a scheduler round at the paused end: stages current
                extra["events_per_s"] = round((_events_total(gateway) - events0) / week.real_s)
            elif scenario == "node-failure":
                # SIGKILL the last node while the fan-out is on its way: its devices come
                # back on the others and get what they had not acknowledged, once.
                # The later messages are stored while it is down: they reach its devices on
                # the node each reconnects to.
                victim = gateways.nodes[-1]
                hellos0 = gateways.hellos()
                t0 = time.perf_counter()
                sent = _broadcast(gateway, devices, then=victim.kill, rounds=FAILOVER_ROUNDS)
                extra["killed_node_after_s"] = round(time.perf_counter() - t0, 3)
            else:
                sent = _broadcast(gateway, devices)
            campaigns = run is not None or week is not None
            report = fleet.report() if campaigns else _collect(fleet, sent, timeout)
            if scenario == "node-failure":  # the survivors' own view of the devices' return
                own = gateway_hello_ms(hellos0, gateways.hellos())
                extra["gateway_reconnect_hello_ms"] = own
            cpu = gateways.cpu_since(cpu0)
            rss = gateways.rss_mib()
            extra["nodes"] = len(gateways.nodes)
            if report.rehello_ms:  # lean devices that came back (reconnect storm, failover)
                again = percentiles(report.rehello_ms)
                extra["reconnected_devices"] = len(report.rehello_ms)
                extra["reconnect_hello_p50_ms"] = round(again["p50"], 1)
                extra["reconnect_hello_p99_ms"] = round(again["p99"], 1)
            violations: dict[str, int] = {}
            if week is not None:
                latencies, precision, recall, audience = week.judge(report, violations, extra)
                delivery = 1.0
        finally:
            fleet.stop()
            gateways.stop()
    if report.displayed_twice:
        violations["displayed_twice"] = report.displayed_twice
    if report.shown_in_quiet_hours:
        violations["shown_in_quiet_hours"] = report.shown_in_quiet_hours
    handled: list[float] | None = None  # the campaign scenarios time send to receipt (_judge)
    if week is not None:
        extra["reconnects"] = report.reconnects
    elif run is None:
        # Each message went to the users of its slice of devices, at most 10,000.
        expected = sum(end - first for first, end in sent.values())
        got = sum(min(end - first, report.received.get(mid, 0))
                  for mid, (first, end) in sent.items())  # fmt: skip
        unexpected = sum(n for mid, n in report.received.items() if mid not in sent)
        delivery = got / expected if expected else 1.0
        precision = got / (got + unexpected) if got + unexpected else 1.0
        recall = delivery
        latencies, handled = report.latencies_ms, report.handled_ms
        audience = devices
    else:
        latencies, delivery, precision, recall = _judge(run, report, violations, extra)
        audience = len(run.expected)
    baseline_lat = None
    if baseline:
        # The same number of messages as the run delivered, as one bare broadcast.
        baseline_lat, baseline_connect = _run_baseline(max(1, audience), workers, frame_size,
                                                       timeout, progress)  # fmt: skip
        if audience == devices:  # the same number of clients connected to each
            extra["baseline_connect_s"] = round(baseline_connect, 2)
            extra["connect_ratio_vs_baseline"] = round(connect_s / baseline_connect, 2)
    return LoadReport(
        devices=devices,
        scenario=scenario,
        connect_s=connect_s,
        latencies_ms=latencies,
        delivery_ratio=delivery,
        precision=precision,
        recall=recall,
        violations=violations,
        gateway_cpu_s=cpu,
        gateway_rss_mib=rss,
        baseline_latencies_ms=baseline_lat,
        handled_latencies_ms=handled,
        fleet_workers=report.workers,
        device_kind=device_kind,
        connect=connect_report,
        extra={
            **extra,
            "duplicates_dropped_by_devices": report.duplicates_dropped,
            "banner_clicks": report.clicks,
        },
    )


def _judge(
    run: _CampaignRun, report: DeviceReport, violations: dict[str, int], extra: dict[str, Any]
) -> tuple[list[float], float, float, float]:
    """Compare a campaign's receipts with the ground truth; fill violations and extras.

    Returns (latencies, delivery ratio, precision, recall).
    """
    mine = [r for r in report.campaign if r.campaign in run.campaigns]
    actual = {r.user for r in mine}
    acc = accuracy(run.expected, actual)
    if acc.false_positives:
        violations["not_in_audience"] = acc.false_positives
    if acc.false_negatives:
        violations["missed"] = acc.false_negatives
    over, short = count_violations(
        ((r.user, r.campaign, r.message_id) for r in mine),
        {user: run.per_user for user in run.expected},
    )
    if over:
        violations["over_cap"] = over
    short -= acc.false_negatives * run.per_user  # users missed entirely count once, above
    if short:
        violations["short"] = short
    wrong = [r for r in mine if r.title != run.titles.get(r.user)]
    if wrong:
        violations["wrong_title"] = len(wrong)
        extra["wrong_title_example"] = f"{wrong[0].user}: {wrong[0].title!r}"
    send_ms = _send_latencies(mine)
    extra.update(audience=len(run.expected), server_sent=run.sent, received=len(mine))
    latencies = send_ms
    if report.cart_at:
        due = {u: at + CART_WAIT_S * 1000 for u, at in report.cart_at.items()}
        latencies = [r.received_ms - due[r.user] for r in mine if r.user in due]
        extra["send_to_receipt_ms"] = _rounded(send_ms)
        extra["due_to_send_ms"] = _rounded(
            [r.sent_ms - due[r.user] for r in mine if r.sent_ms and r.user in due]
        )
        extra["latency_measured_from"] = "trigger due time (cart + wait)"
    delivered = len({(r.user, r.message_id) for r in mine})
    delivery = min(1.0, delivered / run.sent) if run.sent else 1.0
    return latencies, delivery, acc.precision, acc.recall


def _events_total(gateway: GatewayProcess) -> float:
    """The gateway's ``tidings_events_total`` counter (behaviour events taken)."""
    return gateway.admin.metrics().get("tidings_events_total", 0.0)


def _rounded(samples: list[float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in percentiles(samples).items()}


def _send_latencies(receipts: list[CampaignReceipt]) -> list[float]:
    return [r.received_ms - r.sent_ms for r in receipts if r.sent_ms]


def _run_baseline(
    devices: int, workers: int, frame_size: int, timeout: float, progress: Progress | None
) -> tuple[list[float], float]:
    """The bare broadcast: its latencies, and how long its clients took to connect."""
    server = BareServer(frame_size)
    server.start()
    fleet = Fleet(FleetConfig(url=server.url, devices=devices, workers=workers, kind="bare"))
    try:
        connect_s = fleet.start(
            None if progress is None else (lambda n, t: progress("baseline", n, t))
        )
        message_id = server.broadcast(devices)
        return fleet.wait_received(message_id, timeout).latencies_ms, connect_s
    finally:
        fleet.stop()
        server.stop()
