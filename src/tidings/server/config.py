"""Gateway configuration: frozen dataclasses, named defaults, and the one loader.

Precedence is CLI flags > ``TIDINGS_*`` environment > TOML file > defaults. With nothing set,
the gateway runs one development app (``demo`` / ``dev-secret`` / ``dev-admin-key``) and says so
loudly at start (see :attr:`GatewayConfig.uses_dev_defaults`).

TOML layout::

    host = "127.0.0.1"
    port = 8765
    admin_port = 8766
    db = "tidings.db"
    durability = "full"     # or "relaxed" (see DEFAULT_DURABILITY)
    clock = "simulated"     # development only: time the admin API can speed up, pause and
                            # move forward (GET/PUT /v1/clock); every app must have dev = true
    event_loop = "asyncio"  # or "uvloop" (pip install 'tidings[fast]')

    [[apps]]
    id = "shop"
    secret = "..."          # signs device tokens
    admin_key = "..."       # Bearer key for the admin API
    banner_title_max = 30
    banner_body_max = 50
    dev = false             # a development app (the built-in demo app is one)
    categories = ["promotions", "news"]     # marketing and transactional are always there
    value_event = {name = "order_paid", amount = "total"}   # default: purchase / amount

    [apps.caps]                             # which cap binds: see campaigns/capping.py
    lifecycle = {active = {limit = 4, days = 7}, new = "none"}
    tier = {basic = {limit = 2, days = 7}}
    min_gap_hours = 4

    [apps.thresholds]
    dormant_after_days = 7
    churned_after_days = 30

The per-app policy keys (``categories``, ``value_event``, ``caps``, ``thresholds``) are those of
:class:`~tidings.server.policy.AppPolicy`; what the file leaves out keeps its default, and the
admin API (``PUT /v1/settings``) may change them again at run time.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tidings.protocol import limits
from tidings.protocol.errors import ConfigError, InvalidField
from tidings.server.policy import DEFAULT_POLICY, AppPolicy

__all__ = [
    "DEV_ADMIN_KEY",
    "DEV_APP",
    "DEV_SECRET",
    "AppConfig",
    "GatewayConfig",
    "load_config",
]

DEV_APP = "demo"
DEV_SECRET = "dev-secret"
DEV_ADMIN_KEY = "dev-admin-key"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_ADMIN_PORT = 8766
DEFAULT_DB = "tidings.db"
DURABILITY_CHOICES = ("full", "relaxed")
DEFAULT_DURABILITY = "full"
"""What "stored" means when the gateway answers (a 202, an ``ok`` to a device): ``full``
fsyncs every group commit first, so the answer survives a power loss; ``relaxed`` answers
after the commit without the fsync: it survives a crash of the gateway, but a power loss or
kernel crash may lose the last commits (see BENCHMARKS.md for the cost)."""
DEFAULT_HEARTBEAT_S = 25.0
"""Seconds between server WebSocket pings; a ping unanswered for another interval closes the
connection with 4103 (so a silent peer is gone within two intervals)."""
DEFAULT_HELLO_TIMEOUT_S = 10.0
"""Security limit: seconds a new connection may take to send a valid ``hello``."""
DEFAULT_SEND_QUEUE_BYTES = 256 * 1024
"""Security limit: unsent bytes one connection may hold (frames, pongs, close frames); a frame
that would pass it closes the connection as a slow consumer (4100), output the gateway makes on
its own aborts it. Keep it above ``max_frame_bytes``: a frame larger than the queue never fits."""
DEFAULT_RATE_LIMIT_PER_S = 50.0
"""Security limit: sustained client frames per second per connection."""
DEFAULT_RATE_BURST = 200
"""Security limit: frames a connection may send in a burst above the sustained rate."""
DEFAULT_CLOSE_TIMEOUT_S = 5.0
"""Security limit: seconds a closing connection may take to finish the closing handshake (a
peer that does not read never does) before it is aborted."""
DEFAULT_DEVICE_EVENTS_PER_MIN = 600
"""Security limit: behaviour events one device may report a minute (a burst of a minute's
worth at once is fine); beyond it the batch is refused as ``rate_limited`` and retried."""
DEFAULT_APP_EVENTS_PER_MIN = 600_000
"""Security limit: behaviour events one app may take a minute from all its devices and its
backend together."""
DEFAULT_BANNER_TTL_S = 3600
DEFAULT_INBOX_TTL_S = 7 * 24 * 3600
DEFAULT_BANNER_TITLE_MAX = 30
DEFAULT_BANNER_BODY_MAX = 50
DEFAULT_INBOX_TITLE_MAX = 120
DEFAULT_INBOX_BODY_MAX = 2000
EVENT_LOOP_CHOICES = ("asyncio", "uvloop")
DEFAULT_EVENT_LOOP = "asyncio"
"""The gateway's event loop: asyncio's own, or uvloop (the ``fast`` extra). uvloop is not the
default: on 10,000 devices it changed neither the connect storm nor the broadcast beyond the
run-to-run noise (BENCHMARKS.md, "Event loop")."""

CLOCK_CHOICES = ("system", "simulated")
DEFAULT_CLOCK = "system"
"""``system``: real time. ``simulated``: a :class:`~tidings.client_sdk.clock.SimClock` that the
admin API may speed up, pause and move forward (the simulator's weeks in minutes); allowed only
when every app is a development app (``dev = true``), never in production."""
DEFAULT_DRAIN_S = 5.0
"""Seconds graceful shutdown waits for in-flight work after sending go-away."""

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    """One app hosted by the gateway; nothing of one app is visible to another."""

    id: str
    secret: str
    admin_key: str
    banner_title_max: int = DEFAULT_BANNER_TITLE_MAX
    banner_body_max: int = DEFAULT_BANNER_BODY_MAX
    inbox_title_max: int = DEFAULT_INBOX_TITLE_MAX
    inbox_body_max: int = DEFAULT_INBOX_BODY_MAX
    banner_ttl_s: int = DEFAULT_BANNER_TTL_S
    inbox_ttl_s: int = DEFAULT_INBOX_TTL_S
    device_events_per_min: int = DEFAULT_DEVICE_EVENTS_PER_MIN
    app_events_per_min: int = DEFAULT_APP_EVENTS_PER_MIN
    policy: AppPolicy = DEFAULT_POLICY
    """Caps, thresholds, value event and categories as the file sets them (the defaults of
    what ``PUT /v1/settings`` changes)."""
    dev: bool = False
    """A development app: may run on the simulated clock (``clock = "simulated"``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.dev, bool):
            raise ConfigError(f"apps[{self.id}].dev: must be true or false, got {self.dev!r}")
        if not _ID.match(self.id):
            raise ConfigError(f"apps.id: {self.id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        for name in ("secret", "admin_key"):
            if len(getattr(self, name)) < 8:
                raise ConfigError(f"apps[{self.id}].{name}: must be at least 8 characters")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"apps[{self.id}].{f.name}: must be a positive integer")


def _dev_apps() -> tuple[AppConfig, ...]:
    return (AppConfig(id=DEV_APP, secret=DEV_SECRET, admin_key=DEV_ADMIN_KEY, dev=True),)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Everything the gateway process needs; every limit is named above."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_host: str = DEFAULT_HOST
    admin_port: int = DEFAULT_ADMIN_PORT
    db: str = DEFAULT_DB
    durability: str = DEFAULT_DURABILITY
    broker: str = ""
    """``redis://HOST:PORT/N`` to run as one node of a cluster; empty: this process alone."""
    node_id: str = ""
    """This node's name in a cluster (default: host name and process id)."""
    broker_prefix: str = "tidings:"
    """Prefix of every Redis key and channel of this cluster (two clusters may share a Redis)."""
    apps: tuple[AppConfig, ...] = field(default_factory=_dev_apps)
    max_frame_bytes: int = limits.MAX_FRAME_BYTES
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    hello_timeout_s: float = DEFAULT_HELLO_TIMEOUT_S
    send_queue_bytes: int = DEFAULT_SEND_QUEUE_BYTES
    rate_limit_per_s: float = DEFAULT_RATE_LIMIT_PER_S
    rate_burst: int = DEFAULT_RATE_BURST
    close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S
    drain_s: float = DEFAULT_DRAIN_S
    clock: str = DEFAULT_CLOCK
    """``system`` or ``simulated`` (development apps only; see :data:`DEFAULT_CLOCK`)."""
    event_loop: str = DEFAULT_EVENT_LOOP
    """``asyncio`` or ``uvloop`` (see :data:`DEFAULT_EVENT_LOOP`)."""

    def __post_init__(self) -> None:
        if not self.apps:
            raise ConfigError("apps: at least one app is required")
        ids = [a.id for a in self.apps]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"apps: duplicate app ids in {ids}")
        keys = [a.admin_key for a in self.apps]
        if len(set(keys)) != len(keys):
            raise ConfigError("apps: every app needs its own admin_key")
        for name in ("port", "admin_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 65535:
                raise ConfigError(f"{name}: must be a port number 0-65535, got {value!r}")
        if not 1024 <= self.max_frame_bytes <= 16 * 1024 * 1024:
            raise ConfigError("max_frame_bytes: must be between 1024 and 16 MiB")
        for name in (
            "heartbeat_s",
            "hello_timeout_s",
            "rate_limit_per_s",
            "close_timeout_s",
            "drain_s",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be a positive number")
        if self.send_queue_bytes < 1024 or self.rate_burst < 1:
            raise ConfigError("send_queue_bytes and rate_burst: too small")
        if self.broker and not self.broker.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"broker: must be a redis:// URL, got {self.broker!r}")
        if self.node_id and not _ID.match(self.node_id):
            raise ConfigError(f"node_id: {self.node_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if self.broker and not self.uses_postgres:
            raise ConfigError(
                "broker: the nodes of a cluster share one PostgreSQL database; give --db "
                "postgresql://USER@HOST:PORT/DB (SQLite is for a single process)"
            )
        if self.durability not in DURABILITY_CHOICES:
            raise ConfigError(f"durability: {_choices(self.durability)}")
        if self.clock not in CLOCK_CHOICES:
            raise ConfigError(f"clock: must be 'system' or 'simulated', got {self.clock!r}")
        if self.event_loop not in EVENT_LOOP_CHOICES:
            raise ConfigError(f"event_loop: must be one of {', '.join(EVENT_LOOP_CHOICES)},"
                              f" got {self.event_loop!r}")  # fmt: skip
        if self.clock == "simulated" and self.broker:
            raise ConfigError(
                "clock: the simulated clock is one gateway's own; run it without --broker "
                "(the nodes of a cluster share real time)"
            )
        production = [a.id for a in self.apps if not a.dev]
        if self.clock == "simulated" and production:
            raise ConfigError(
                f"clock: the simulated clock is for development apps only, and app(s) "
                f"{', '.join(map(repr, production))} are not marked dev = true; mark them "
                "(never in production) or run on the system clock"
            )

    @property
    def uses_postgres(self) -> bool:
        """True when ``db`` is a PostgreSQL URL rather than a SQLite file."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def uses_dev_defaults(self) -> bool:
        """True when any app still has the published development secret or admin key."""
        return any(a.secret == DEV_SECRET or a.admin_key == DEV_ADMIN_KEY for a in self.apps)

    def app(self, app_id: str) -> AppConfig | None:
        """Return the app with this id, or None."""
        for a in self.apps:
            if a.id == app_id:
                return a
        return None


_SCALARS = {f.name: f for f in fields(GatewayConfig) if f.name != "apps"}


def _choices(value: Any) -> str:
    return f"must be {' or '.join(map(repr, DURABILITY_CHOICES))}, got {value!r}"


def _coerce(name: str, value: Any, where: str) -> Any:
    kind = _SCALARS[name].type
    if name == "durability" and value not in DURABILITY_CHOICES:
        raise ConfigError(f"{where}: durability {_choices(value)}")
    if name == "event_loop" and value not in EVENT_LOOP_CHOICES:
        raise ConfigError(f"{where}: event_loop must be one of {', '.join(EVENT_LOOP_CHOICES)},"
                          f" got {value!r}")  # fmt: skip
    if name == "clock" and value not in CLOCK_CHOICES:
        raise ConfigError(f"{where}: clock must be 'system' or 'simulated', got {value!r}")
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {name} must be {kind}, got {value!r}") from None


_POLICY_KEYS = ("categories", "value_event", "caps", "thresholds")


def _apps_from(raw: Any, where: str) -> tuple[AppConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: apps must be a non-empty list of tables")
    known = {f.name for f in fields(AppConfig)} - {"policy"}
    apps = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: apps[{i}] must be a table")
        item = dict(item)
        settings = {k: item.pop(k) for k in _POLICY_KEYS if k in item}
        unknown = set(item) - known
        if unknown:
            raise ConfigError(f"{where}: apps[{i}] has unknown keys {sorted(unknown)}")
        try:
            item["policy"] = DEFAULT_POLICY.updated(settings)
        except InvalidField as exc:
            raise ConfigError(f"{where}: apps[{i}].{exc.reason}") from None
        try:
            apps.append(AppConfig(**item))
        except TypeError as exc:
            raise ConfigError(f"{where}: apps[{i}]: {exc}") from None
    return tuple(apps)


def load_config(
    *,
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GatewayConfig:
    """Build the configuration from a TOML file, the environment and CLI overrides.

    Args:
        path: TOML file; ``None`` reads ``TIDINGS_CONFIG`` from ``env`` if set.
        env: Environment (defaults to ``os.environ``). ``TIDINGS_<NAME>`` sets a scalar
            (``TIDINGS_PORT``, ``TIDINGS_DB`` …); ``TIDINGS_APP``, ``TIDINGS_APP_SECRET`` and
            ``TIDINGS_ADMIN_KEY`` together define a single app.
        overrides: Values from CLI flags; ``None`` values are ignored.

    Raises:
        ConfigError: naming the file or variable and the bad key.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("TIDINGS_CONFIG")
    if path:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read config file ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None
        for key, value in data.items():
            if key == "apps":
                values["apps"] = _apps_from(value, where)
            elif key in _SCALARS:
                values[key] = _coerce(key, value, where)
            else:
                raise ConfigError(f"{where}: unknown setting {key!r}")
    for name in _SCALARS:
        var = f"TIDINGS_{name.upper()}"
        if var in env:
            values[name] = _coerce(name, env[var], var)
    app_vars = ("TIDINGS_APP", "TIDINGS_APP_SECRET", "TIDINGS_ADMIN_KEY")
    present = [v for v in app_vars if env.get(v)]
    if present and len(present) != len(app_vars):
        missing = sorted(set(app_vars) - set(present))
        raise ConfigError(f"environment: {', '.join(present)} set but {', '.join(missing)} missing")
    if present:
        values["apps"] = (
            AppConfig(id=env[app_vars[0]], secret=env[app_vars[1]], admin_key=env[app_vars[2]]),
        )
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in _SCALARS:
                raise ConfigError(f"option: unknown setting {key!r}")
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    return replace(GatewayConfig(), **values)
