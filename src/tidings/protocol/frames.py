"""Frame types of ``tidings.v1`` (PROTOCOL.md §Frames).

Frames are frozen, slotted, keyword-only dataclasses. ``to_wire()`` gives the MessagePack-ready
map; ``from_wire()`` validates an untrusted map and raises only :class:`ProtocolError`
subclasses naming the bad field. Free-form maps (event props, attributes, message data) are
checked for depth, size, key types and finite numbers.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, fields
from itertools import chain, compress, repeat
from operator import is_
from typing import Any, ClassVar, Literal, TypeAlias

from tidings.protocol import kinds, limits
from tidings.protocol.errors import (
    InvalidField,
    MalformedFrame,
    ProtocolError,
    UnexpectedFrame,
    UnknownFrame,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_NAME",
    "CLIENT_FRAMES",
    "INBOX_STATES",
    "KINDS",
    "PRIORITIES",
    "RECEIPT_KINDS",
    "SERVER_FRAMES",
    "Ack",
    "Action",
    "ClientFrame",
    "Deliver",
    "DeviceInfo",
    "Error",
    "Event",
    "Events",
    "Frame",
    "GoAway",
    "Hello",
    "Identify",
    "InboxChange",
    "InboxState",
    "InboxUpdate",
    "Message",
    "Ok",
    "Ping",
    "Pong",
    "Prefs",
    "Receipt",
    "Revoke",
    "ServerFrame",
    "Welcome",
    "check_id",
    "check_json",
    "frame_from_wire",
]

Kind: TypeAlias = kinds.KindName
Category: TypeAlias = str
"""A message category: ``marketing``, ``transactional`` or one the app declares (PROTOCOL.md
§Message); any name matching :data:`CATEGORY_NAME`."""
Priority = Literal["normal", "urgent"]
ReceiptKind = Literal["displayed", "clicked", "dismissed", "expired"]
InboxStateName = Literal["read", "unread", "deleted"]

KINDS: frozenset[str] = frozenset(kinds.NAMES)
"""The message kinds this version knows (the table is :mod:`tidings.protocol.kinds`)."""
CATEGORIES: frozenset[str] = frozenset({"marketing", "transactional"})
"""The categories every app has; an app may declare more (the gateway checks which)."""
CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
"""What a category name looks like: 1-32 of a-z 0-9 _ -, starting with a letter."""
PRIORITIES: frozenset[str] = frozenset({"normal", "urgent"})
RECEIPT_KINDS: frozenset[str] = frozenset({"displayed", "clicked", "dismissed", "expired"})
INBOX_STATES: frozenset[str] = frozenset({"read", "unread", "deleted"})

Json: TypeAlias = Any
Wire: TypeAlias = dict[str, Any]


# --- field validation helpers ------------------------------------------------------------------


def _get(m: Wire, key: str, where: str, *, required: bool = True, default: Any = None) -> Any:
    if key in m:
        return m[key]
    if required:
        raise InvalidField(f"{where}.{key}", "is required")
    return default


def _str(value: Any, name: str, max_len: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidField(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidField(name, f"is {len(value)} characters, the limit is {max_len}")
    if not empty and not value:
        raise InvalidField(name, "must not be empty")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_id(value: Any, name: str) -> str:
    """Validate an identifier from outside: 1–128 characters of text that encodes as UTF-8
    (no lone surrogates) with no control characters — the rule of the admin API's ids too.

    Raises:
        InvalidField: naming ``name`` and the problem.
    """
    text = _str(value, name, limits.MAX_ID_LEN)
    if _CONTROL.search(text):
        raise InvalidField(name, "must not contain control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(name, "must be valid Unicode text (no lone surrogates)") from None
    return text


def _opt_str(value: Any, name: str, max_len: int) -> str | None:
    return None if value is None else _str(value, name, max_len)


def _int(value: Any, name: str, *, low: int = 0, high: int = limits.MAX_INT) -> int:
    # bool is an int subclass in Python; on the wire it is its own type.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidField(name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidField(name, f"must be between {low} and {high}, got {value}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(name, f"must be true or false, got {type(value).__name__}")
    return value


def _choice(value: Any, name: str, allowed: frozenset[str]) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidField(name, f"must be one of {sorted(allowed)}, got {value!r}")
    return value


def _growing(value: Any, name: str, known: frozenset[str], fallback: str) -> Any:
    """A value of a set a later version may extend (PROTOCOL.md §6, forward compatibility):
    one this version does not know reads as ``fallback``; only a non-string is an error."""
    if not isinstance(value, str) or len(value) > limits.MAX_ID_LEN:
        raise InvalidField(name, f"must be one of {sorted(known)}, got {value!r}")
    return value if value in known else fallback


def _category(value: Any, name: str) -> str:
    if not isinstance(value, str) or not CATEGORY_NAME.fullmatch(value):
        raise InvalidField(name, "must be a category name (1-32 of a-z 0-9 _ -, starting with "
                           f"a letter, e.g. 'marketing'), got {value!r}")  # fmt: skip
    return value


def _list(value: Any, name: str, max_len: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise InvalidField(name, f"must be an array, got {type(value).__name__}")
    if len(value) > max_len:
        raise InvalidField(name, f"has {len(value)} items, the limit is {max_len}")
    return list(value)


def _map(value: Any, name: str) -> Wire:
    if not isinstance(value, dict):
        raise InvalidField(name, f"must be a map, got {type(value).__name__}")
    return value


def check_json(value: Any, name: str, depth: int = 0) -> Json:
    """Validate a free-form value: maps with string keys, arrays, strings, finite numbers.

    Raises:
        InvalidField: naming the first offending path.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -limits.MAX_INT <= value <= limits.MAX_INT:
            raise InvalidField(name, "integer out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidField(name, "must be a finite number")
        return value
    if isinstance(value, str):
        return _str(value, name, limits.MAX_TEXT_LEN, empty=True)
    if depth >= limits.MAX_DEPTH:
        raise InvalidField(name, f"nests deeper than {limits.MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        items = _list(value, name, limits.MAX_KEYS)
        return [check_json(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(items)]
    if isinstance(value, dict):
        if len(value) > limits.MAX_KEYS:
            raise InvalidField(name, f"has {len(value)} keys, the limit is {limits.MAX_KEYS}")
        out = {}
        for k, v in value.items():
            key = _str(k, f"{name} key", limits.MAX_NAME_LEN)
            out[key] = check_json(v, f"{name}.{key}", depth + 1)
        return out
    raise InvalidField(name, f"unsupported type {type(value).__name__}")


def _json_map(value: Any, name: str) -> dict[str, Json]:
    return check_json(_map(value, name), name)  # type: ignore[no-any-return]


# --- nested values -----------------------------------------------------------------------------


_DEVICE_FIELDS = ("platform", "app_version", "locale", "tz", "sdk_version")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """Facts a device reports in ``hello``; all optional strings."""

    platform: str = ""
    app_version: str = ""
    locale: str = ""
    tz: str = ""
    sdk_version: str = ""

    def to_wire(self) -> Wire:
        return {k: getattr(self, k) for k in _DEVICE_FIELDS if getattr(self, k)}

    @classmethod
    def from_wire(cls, m: Any, where: str = "device") -> DeviceInfo:
        m = _map(m, where)
        return cls(
            **{
                k: _str(m.get(k, ""), f"{where}.{k}", limits.MAX_NAME_LEN, empty=True)
                for k in _DEVICE_FIELDS
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One behaviour event; ``id`` is chosen by the client and de-duplicates resends."""

    id: str
    name: str
    ts: int
    props: dict[str, Json] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return {"id": self.id, "name": self.name, "ts": self.ts, "props": self.props}

    @classmethod
    def from_wire(cls, m: Any, where: str) -> Event:
        m = _map(m, where)
        return cls(
            id=_str(_get(m, "id", where), f"{where}.id", limits.MAX_ID_LEN),
            name=_str(_get(m, "name", where), f"{where}.name", limits.MAX_NAME_LEN),
            ts=_int(_get(m, "ts", where), f"{where}.ts"),
            props=_json_map(m.get("props", {}), f"{where}.props"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """A button or deep link on a message."""

    id: str
    label: str
    url: str = ""

    def to_wire(self) -> Wire:
        return {"id": self.id, "label": self.label, "url": self.url}

    @classmethod
    def from_wire(cls, m: Any, where: str) -> Action:
        m = _map(m, where)
        return cls(
            id=_str(_get(m, "id", where), f"{where}.id", limits.MAX_ID_LEN),
            label=_str(_get(m, "label", where), f"{where}.label", limits.MAX_NAME_LEN),
            url=_str(m.get("url", ""), f"{where}.url", limits.MAX_URL_LEN, empty=True),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """The content of a delivery (PROTOCOL.md §Message). Times are Unix milliseconds."""

    id: str
    kind: Kind
    title: str
    body: str
    category: Category = "marketing"
    priority: Priority = "normal"
    created_at: int = 0
    expires_at: int = 0
    sent_at: int = 0
    campaign: str | None = None
    variant: str | None = None
    collapse_key: str | None = None
    image: str | None = None
    actions: tuple[Action, ...] = ()
    data: dict[str, Json] = field(default_factory=dict)
    expire_after_read: bool = False
    ttl_default: bool = False
    """``expires_at`` is the server's default lifetime, not one the sender chose: a device
    holding the banner for its quiet hours counts the lifetime from the end of the window."""

    def to_wire(self) -> Wire:
        m: Wire = {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "body": self.body,
            "category": self.category,
            "priority": self.priority,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "sent_at": self.sent_at,
        }
        for key in ("campaign", "variant", "collapse_key", "image"):
            value = getattr(self, key)
            if value is not None:
                m[key] = value
        if self.actions:
            m["actions"] = [a.to_wire() for a in self.actions]
        if self.data:
            m["data"] = self.data
        if self.expire_after_read:
            m["expire_after_read"] = True
        if self.ttl_default:
            m["ttl_default"] = True
        return m

    @classmethod
    def from_wire(cls, m: Any, where: str = "msg") -> Message:
        m = _map(m, where)
        n = _message_names(where)  # field paths for errors, built once per ``where``
        actions = _list(m.get("actions", []), n["actions"], limits.MAX_ACTIONS)
        return cls(
            id=_str(_get(m, "id", where), n["id"], limits.MAX_ID_LEN),
            # Kinds and priorities may grow: a message of a kind this version cannot show is
            # kept as inbox content, never refused (a refused deliver would come back forever).
            kind=_growing(_get(m, "kind", where), n["kind"], KINDS, kinds.UNKNOWN_KIND_READS_AS),
            title=_str(_get(m, "title", where), n["title"], limits.MAX_TITLE_LEN, empty=True),
            body=_str(_get(m, "body", where), n["body"], limits.MAX_BODY_LEN, empty=True),
            category=_category(m.get("category", "marketing"), n["category"]),
            priority=_growing(m.get("priority", "normal"), n["priority"], PRIORITIES, "normal"),
            created_at=_int(m.get("created_at", 0), n["created_at"]),
            expires_at=_int(m.get("expires_at", 0), n["expires_at"]),
            sent_at=_int(m.get("sent_at", 0), n["sent_at"]),
            campaign=_opt_str(m.get("campaign"), n["campaign"], limits.MAX_ID_LEN),
            variant=_opt_str(m.get("variant"), n["variant"], limits.MAX_ID_LEN),
            collapse_key=_opt_str(m.get("collapse_key"), n["collapse_key"], limits.MAX_ID_LEN),
            image=_opt_str(m.get("image"), n["image"], limits.MAX_URL_LEN),
            actions=tuple(
                Action.from_wire(a, f"{where}.actions[{i}]") for i, a in enumerate(actions)
            ),
            data=_json_map(m["data"], n["data"]) if "data" in m else {},
            expire_after_read=_bool(m.get("expire_after_read", False), n["expire_after_read"]),
            ttl_default=_bool(m.get("ttl_default", False), n["ttl_default"]),
        )


@functools.cache
def _message_names(where: str) -> dict[str, str]:
    return {f.name: f"{where}.{f.name}" for f in fields(Message)}


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxChange:
    """A change of one inbox item's state; ``ver`` is set by the server (0 from clients)."""

    id: str
    state: InboxStateName
    ver: int = 0

    def to_wire(self) -> Wire:
        m: Wire = {"id": self.id, "state": self.state}
        if self.ver:
            m["ver"] = self.ver
        return m

    @classmethod
    def from_wire(cls, m: Any, where: str) -> InboxChange:
        m = _map(m, where)
        return cls(
            id=_str(_get(m, "id", where), f"{where}.id", limits.MAX_ID_LEN),
            state=_choice(_get(m, "state", where), f"{where}.state", INBOX_STATES),
            ver=_int(m.get("ver", 0), f"{where}.ver"),
        )


# --- frames ------------------------------------------------------------------------------------


class Frame:
    """Base of every frame; ``TYPE`` is the value of the wire key ``t``."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def to_wire(self) -> Wire:  # pragma: no cover - every frame overrides
        raise NotImplementedError

    @classmethod
    def from_wire(cls, m: Wire) -> Frame:  # pragma: no cover - every frame overrides
        raise NotImplementedError


def _simple_wire(frame: Any, *names: str) -> Wire:
    m: Wire = {"t": frame.TYPE}
    for n in names:
        value = getattr(frame, n)
        if value is not None:
            m[n] = value
    return m


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Frame):
    """Client → server, first frame: authenticate and resume (PROTOCOL.md §Handshake)."""

    TYPE: ClassVar[str] = "hello"
    token: str
    device: DeviceInfo = field(default_factory=DeviceInfo)
    resume: int = 0
    inbox_ver: int = 0
    v: int = 1

    def to_wire(self) -> Wire:
        return {
            "t": self.TYPE,
            "v": self.v,
            "token": self.token,
            "device": self.device.to_wire(),
            "resume": self.resume,
            "inbox_ver": self.inbox_ver,
        }

    @classmethod
    def from_wire(cls, m: Wire) -> Hello:
        return cls(
            token=_str(_get(m, "token", "hello"), "hello.token", limits.MAX_TOKEN_LEN),
            device=DeviceInfo.from_wire(m.get("device", {}), "hello.device"),
            resume=_int(m.get("resume", 0), "hello.resume"),
            inbox_ver=_int(m.get("inbox_ver", 0), "hello.inbox_ver"),
            v=_int(m.get("v", 1), "hello.v", low=1, high=1000),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome(Frame):
    """Server → client: the session is open (PROTOCOL.md §Handshake)."""

    TYPE: ClassVar[str] = "welcome"
    session: str
    device: str
    user: str | None
    server_time: int
    heartbeat_ms: int
    limits: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return _simple_wire(
            self, "session", "device", "user", "server_time", "heartbeat_ms", "limits"
        )

    @classmethod
    def from_wire(cls, m: Wire) -> Welcome:
        raw_limits = _map(m.get("limits", {}), "welcome.limits")
        return cls(
            session=_str(_get(m, "session", "welcome"), "welcome.session", limits.MAX_ID_LEN),
            device=_str(_get(m, "device", "welcome"), "welcome.device", limits.MAX_ID_LEN),
            user=_opt_str(m.get("user"), "welcome.user", limits.MAX_ID_LEN),
            server_time=_int(_get(m, "server_time", "welcome"), "welcome.server_time"),
            heartbeat_ms=_int(_get(m, "heartbeat_ms", "welcome"), "welcome.heartbeat_ms"),
            limits={
                _str(k, "welcome.limits key", limits.MAX_NAME_LEN): _int(v, f"welcome.limits.{k}")
                for k, v in raw_limits.items()
            },
        )


def _rid(m: Wire, where: str) -> int:
    return _int(_get(m, "rid", where), f"{where}.rid")


@dataclass(frozen=True, slots=True, kw_only=True)
class Events(Frame):
    """Client → server: a batch of behaviour events. Answered by ``ok`` with the same rid."""

    TYPE: ClassVar[str] = "events"
    rid: int
    events: tuple[Event, ...]

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "rid": self.rid, "events": [e.to_wire() for e in self.events]}

    @classmethod
    def from_wire(cls, m: Wire) -> Events:
        items = _list(_get(m, "events", "events"), "events.events", limits.MAX_EVENTS_PER_BATCH)
        return cls(
            rid=_rid(m, "events"),
            events=tuple(Event.from_wire(e, f"events.events[{i}]") for i, e in enumerate(items)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Identify(Frame):
    """Client → server: set the device's user (must match the token's) and attributes."""

    TYPE: ClassVar[str] = "identify"
    rid: int
    user: str | None = None
    attrs: dict[str, Json] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return _simple_wire(self, "rid", "user", "attrs")

    @classmethod
    def from_wire(cls, m: Wire) -> Identify:
        return cls(
            rid=_rid(m, "identify"),
            user=_opt_str(m.get("user"), "identify.user", limits.MAX_ID_LEN),
            attrs=_json_map(m.get("attrs", {}), "identify.attrs"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver(Frame):
    """Server → client: one message with this device's sequence number."""

    TYPE: ClassVar[str] = "deliver"
    seq: int
    msg: Message

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "seq": self.seq, "msg": self.msg.to_wire()}

    @classmethod
    def from_wire(cls, m: Wire) -> Deliver:
        return cls(
            seq=_int(_get(m, "seq", "deliver"), "deliver.seq", low=1),
            msg=Message.from_wire(_get(m, "msg", "deliver"), "deliver.msg"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(Frame):
    """Client → server: every delivery with a sequence number ≤ ``seq`` was received."""

    TYPE: ClassVar[str] = "ack"
    seq: int

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "seq": self.seq}

    @classmethod
    def from_wire(cls, m: Wire) -> Ack:
        return cls(seq=_int(_get(m, "seq", "ack"), "ack.seq"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(Frame):
    """Client → server: a message was displayed, clicked (with an action) or dismissed."""

    TYPE: ClassVar[str] = "receipt"
    rid: int
    id: str
    kind: ReceiptKind
    ts: int
    action: str | None = None

    def to_wire(self) -> Wire:
        return _simple_wire(self, "rid", "id", "kind", "ts", "action")

    @classmethod
    def from_wire(cls, m: Wire) -> Receipt:
        return cls(
            rid=_rid(m, "receipt"),
            id=_str(_get(m, "id", "receipt"), "receipt.id", limits.MAX_ID_LEN),
            kind=_choice(_get(m, "kind", "receipt"), "receipt.kind", RECEIPT_KINDS),
            ts=_int(_get(m, "ts", "receipt"), "receipt.ts"),
            action=_opt_str(m.get("action"), "receipt.action", limits.MAX_ID_LEN),
        )


def _changes(m: Wire, where: str) -> tuple[InboxChange, ...]:
    items = _list(_get(m, "changes", where), f"{where}.changes", limits.MAX_IDS_PER_FRAME)
    return tuple(InboxChange.from_wire(c, f"{where}.changes[{i}]") for i, c in enumerate(items))


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxUpdate(Frame):
    """Client → server: the user read, unread or deleted inbox items on this device."""

    TYPE: ClassVar[str] = "inbox_update"
    rid: int
    changes: tuple[InboxChange, ...]

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "rid": self.rid, "changes": [c.to_wire() for c in self.changes]}

    @classmethod
    def from_wire(cls, m: Wire) -> InboxUpdate:
        return cls(rid=_rid(m, "inbox_update"), changes=_changes(m, "inbox_update"))


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxState(Frame):
    """Server → client: inbox state changes made on the user's devices, up to version ``ver``."""

    TYPE: ClassVar[str] = "inbox"
    ver: int
    changes: tuple[InboxChange, ...]

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "ver": self.ver, "changes": [c.to_wire() for c in self.changes]}

    @classmethod
    def from_wire(cls, m: Wire) -> InboxState:
        return cls(ver=_int(_get(m, "ver", "inbox"), "inbox.ver"), changes=_changes(m, "inbox"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Prefs(Frame):
    """Client → server: per-category consent, e.g. ``{"marketing": False}`` opts out."""

    TYPE: ClassVar[str] = "prefs"
    rid: int
    categories: dict[str, bool]

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "rid": self.rid, "categories": self.categories}

    @classmethod
    def from_wire(cls, m: Wire) -> Prefs:
        raw = _map(_get(m, "categories", "prefs"), "prefs.categories")
        cats: dict[str, bool] = {}
        for k, v in raw.items():
            name = _category(k, "prefs.categories key")
            cats[name] = _bool(v, f"prefs.categories.{name}")
        return cls(rid=_rid(m, "prefs"), categories=cats)


@dataclass(frozen=True, slots=True, kw_only=True)
class Revoke(Frame):
    """Server → client: remove these messages; never show them if not yet shown."""

    TYPE: ClassVar[str] = "revoke"
    ids: tuple[str, ...]

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "ids": list(self.ids)}

    @classmethod
    def from_wire(cls, m: Wire) -> Revoke:
        items = _list(_get(m, "ids", "revoke"), "revoke.ids", limits.MAX_IDS_PER_FRAME)
        return cls(
            ids=tuple(_str(x, f"revoke.ids[{i}]", limits.MAX_ID_LEN) for i, x in enumerate(items))
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(Frame):
    """Server → client: the client frame with this ``rid`` was durably stored."""

    TYPE: ClassVar[str] = "ok"
    rid: int

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "rid": self.rid}

    @classmethod
    def from_wire(cls, m: Wire) -> Ok:
        return cls(rid=_rid(m, "ok"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Frame):
    """Server → client: a request failed; with ``rid`` it answers that request."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    rid: int | None = None

    def to_wire(self) -> Wire:
        return _simple_wire(self, "code", "message", "rid")

    @classmethod
    def from_wire(cls, m: Wire) -> Error:
        rid = m.get("rid")
        return cls(
            code=_str(_get(m, "code", "error"), "error.code", limits.MAX_NAME_LEN),
            message=_str(m.get("message", ""), "error.message", limits.MAX_TEXT_LEN, empty=True),
            rid=None if rid is None else _int(rid, "error.rid"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Frame):
    """Either direction: liveness probe; answer with ``pong`` carrying the same ``ts``."""

    TYPE: ClassVar[str] = "ping"
    ts: int = 0

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "ts": self.ts}

    @classmethod
    def from_wire(cls, m: Wire) -> Ping:
        return cls(ts=_int(m.get("ts", 0), "ping.ts"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Frame):
    """Either direction: answer to ``ping``."""

    TYPE: ClassVar[str] = "pong"
    ts: int = 0

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "ts": self.ts}

    @classmethod
    def from_wire(cls, m: Wire) -> Pong:
        return cls(ts=_int(m.get("ts", 0), "pong.ts"))


@dataclass(frozen=True, slots=True, kw_only=True)
class GoAway(Frame):
    """Server → client: the server is draining; reconnect after about ``reconnect_ms``."""

    TYPE: ClassVar[str] = "goaway"
    reconnect_ms: int = 1000
    reason: str = ""

    def to_wire(self) -> Wire:
        return {"t": self.TYPE, "reconnect_ms": self.reconnect_ms, "reason": self.reason}

    @classmethod
    def from_wire(cls, m: Wire) -> GoAway:
        return cls(
            reconnect_ms=_int(m.get("reconnect_ms", 1000), "goaway.reconnect_ms", high=3_600_000),
            reason=_str(m.get("reason", ""), "goaway.reason", limits.MAX_TEXT_LEN, empty=True),
        )


ClientFrame: TypeAlias = (
    Hello | Events | Identify | Ack | Receipt | InboxUpdate | Prefs | Ping | Pong
)
ServerFrame: TypeAlias = Welcome | Deliver | Ok | Error | Revoke | InboxState | GoAway | Ping | Pong

CLIENT_FRAMES: dict[str, type[Frame]] = {
    f.TYPE: f for f in (Hello, Events, Identify, Ack, Receipt, InboxUpdate, Prefs, Ping, Pong)
}
SERVER_FRAMES: dict[str, type[Frame]] = {
    f.TYPE: f for f in (Welcome, Deliver, Ok, Error, Revoke, InboxState, GoAway, Ping, Pong)
}
_REQUESTS: frozenset[type[Frame]] = frozenset({Events, Identify, Receipt, InboxUpdate, Prefs})
"""Client frames answered by ``ok`` or ``error`` with their ``rid`` (PROTOCOL.md §4)."""


def frame_from_wire(m: Any, table: dict[str, type[Frame]]) -> Frame:
    """Validate a decoded map against ``table`` (the frames one side may send) and build it.

    Raises:
        MalformedFrame: ``m`` is not a map.
        UnknownFrame: ``t`` names no frame type of this version.
        UnexpectedFrame: ``t`` names a frame only the other side sends (PROTOCOL.md §9).
        InvalidField: a field is missing, of the wrong type, too long, out of range, or a
            value nests deeper than the limits (PROTOCOL.md §6). For a request, the error
            carries the request's ``rid`` when it could be read.
    """
    if not isinstance(m, dict):
        raise MalformedFrame(f"a frame must be a map, got {type(m).__name__}")
    t = m.get("t")
    if not isinstance(t, str):
        raise InvalidField("t", "is required and must be a string")
    cls = table.get(t)
    if cls is None:
        if t in CLIENT_FRAMES or t in SERVER_FRAMES:
            raise UnexpectedFrame(f"t: {t!r} is a frame of the other side")
        raise UnknownFrame(f"t: unknown frame type {t[:40]!r}")
    try:
        frame = cls.from_wire(m)
        _check_depth(m)
    except ProtocolError as exc:
        if cls in _REQUESTS:
            exc.rid = _readable_rid(m.get("rid"))
        raise
    return frame


def _readable_rid(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limits.MAX_INT:
        return value
    return None


def _check_depth(m: Wire) -> None:
    """Refuse a frame nested deeper than ``MAX_FRAME_DEPTH`` (only unknown keys can be: the
    known fields were checked against their own shapes first).

    One level at a time with C-level iterators: a 64 KiB frame of 60,000 empty arrays costs
    about as much as decoding it, not one Python step per item.
    """
    level: list[Any] = [m]
    for _ in range(limits.MAX_FRAME_DEPTH):
        kinds = list(map(type, level))
        maps = compress(level, map(is_, kinds, repeat(dict)))
        arrays = compress(level, map(is_, kinds, repeat(list)))
        items = list(chain(chain.from_iterable(map(dict.values, maps)), *arrays))
        level = list(compress(items, map(_CONTAINERS.__contains__, map(type, items))))
        if not level:
            return
    raise InvalidField("frame", f"nests deeper than {limits.MAX_FRAME_DEPTH} levels (§6)")


_CONTAINERS: frozenset[type] = frozenset({dict, list})
