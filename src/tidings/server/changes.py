"""What one node of a cluster tells the others it changed: typed values, and their wire form.

A node announces a change after storing it (:meth:`~tidings.server.feed.Feed.announce`); every
other node reads it from the feed and applies it to its view
(:meth:`~tidings.server.ingest.Ingest.apply`). On the feed a change is a MessagePack array, its
tag first and its fields in declaration order (``["erase", app, user]``), so nodes of two
versions can share a feed while a cluster is upgraded one node at a time.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field, fields
from typing import Any, ClassVar, TypeAlias

import msgpack

__all__ = [
    "AttrsChanged",
    "CampaignChanged",
    "Change",
    "ConsentChanged",
    "DeviceSeen",
    "EventsStored",
    "SettingsReplaced",
    "TagRuleChanged",
    "UserErased",
    "decode",
    "encode",
]


@dataclass(frozen=True, slots=True)
class EventsStored:
    """Behaviour events of a user were stored: ``(name, props, ts)`` each, ``ts`` in seconds."""

    TAG: ClassVar[str] = "events"
    app: str
    user: str
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AttrsChanged:
    """Attributes were merged into a profile (``None`` removes one)."""

    TAG: ClassVar[str] = "attrs"
    app: str
    user: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsentChanged:
    """A user accepted or refused categories of messages."""

    TAG: ClassVar[str] = "consent"
    app: str
    user: str
    categories: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device of the user said hello: its time zone, locale, platform, app version."""

    TAG: ClassVar[str] = "device"
    app: str
    user: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UserErased:
    """A user was erased: forget them, end their sessions (4007)."""

    TAG: ClassVar[str] = "erase"
    app: str
    user: str


@dataclass(frozen=True, slots=True)
class CampaignChanged:
    """A campaign was created, edited, started, paused, cancelled or completed: read it back."""

    TAG: ClassVar[str] = "campaign"
    app: str
    campaign: str


@dataclass(frozen=True, slots=True)
class TagRuleChanged:
    """A tag rule was saved or deleted: read it back."""

    TAG: ClassVar[str] = "tag_rule"
    app: str
    rule: str


@dataclass(frozen=True, slots=True)
class SettingsReplaced:
    """An app's settings were replaced through the admin API: read them back."""

    TAG: ClassVar[str] = "settings"
    app: str
    unused: str = ""  # the wire form keeps a third element


Change: TypeAlias = (
    EventsStored
    | AttrsChanged
    | ConsentChanged
    | DeviceSeen
    | UserErased
    | CampaignChanged
    | TagRuleChanged
    | SettingsReplaced
)

_BY_TAG: dict[str, type[Change]] = {
    c.TAG: c
    for c in (EventsStored, AttrsChanged, ConsentChanged, DeviceSeen, UserErased,
              CampaignChanged, TagRuleChanged, SettingsReplaced)
}  # fmt: skip


def encode(change: Change) -> bytes:
    """The change as it goes on the feed: ``[tag, *fields]`` in MessagePack."""
    packed: bytes = msgpack.packb([change.TAG, *astuple(change)], use_bin_type=True)
    return packed


def decode(body: bytes) -> Change:
    """A change read from the feed.

    Raises:
        ValueError: the body is not a change this version knows (a malformed or newer one).
    """
    try:
        tag, *values = msgpack.unpackb(body, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a change: {exc}") from None
    kind = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if kind is None:
        raise ValueError(f"unknown change {str(tag)[:40]!r}")
    names = [f.name for f in fields(kind)]
    if not 2 <= len(values) <= len(names) or not all(isinstance(v, str) for v in values[:2]):
        raise ValueError(f"change {tag!r}: {len(values)} field(s), expected {names}")
    if kind is EventsStored and len(values) == 3:  # arrays on the wire: tuples here
        try:
            values[2] = [(str(n), dict(p), float(ts)) for n, p, ts in values[2]]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"change 'events': malformed events ({exc})") from None
    return kind(*values)
