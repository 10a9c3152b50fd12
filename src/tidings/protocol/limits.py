"""Named limits of the wire protocol (PROTOCOL.md §Limits).

Every limit here is a security limit: it bounds what one untrusted frame can make a peer
allocate or do. The gateway may lower ``max_frame_bytes`` and announces the values it enforces in
the ``welcome`` frame.
"""

from __future__ import annotations

__all__ = [
    "FIXED_DEPTH",
    "MAX_ACTIONS",
    "MAX_BODY_LEN",
    "MAX_CONTAINER_LEN",
    "MAX_DEPTH",
    "MAX_EVENTS_PER_BATCH",
    "MAX_FRAME_BYTES",
    "MAX_FRAME_DEPTH",
    "MAX_IDS_PER_FRAME",
    "MAX_ID_LEN",
    "MAX_INT",
    "MAX_KEYS",
    "MAX_NAME_LEN",
    "MAX_TEXT_LEN",
    "MAX_TITLE_LEN",
    "MAX_TOKEN_LEN",
    "MAX_TOKEN_TTL",
    "MAX_URL_LEN",
]

MAX_FRAME_BYTES = 64 * 1024
"""Largest encoded frame accepted by default, in bytes."""

MAX_CONTAINER_LEN = 1_000
"""Largest declared array or map length inside a frame (stops huge-declared containers)."""

MAX_DEPTH = 4
"""Deepest nesting of a free-form value (event props, attributes, message data), counting the
value itself as level 1: ``{"a": {"b": {"c": {}}}}`` is 4 levels, the most allowed.

This is the one nesting limit of the protocol (PROTOCOL.md §6). The fixed structure of every
frame sits at most :data:`FIXED_DEPTH` levels above a free-form value, so no valid frame nests
deeper than :data:`MAX_FRAME_DEPTH`."""

FIXED_DEPTH = 3
"""Deepest fixed structure above a free-form value: ``events`` frame → ``events`` array → event
→ ``props``."""

MAX_FRAME_DEPTH = FIXED_DEPTH + MAX_DEPTH
"""Deepest nesting of a whole frame (the frame map is level 1), derived from :data:`MAX_DEPTH`;
it bounds what unknown keys may hold."""

MAX_ID_LEN = 128
"""Longest identifier: message, event, device, user, campaign, session, action ids."""

MAX_NAME_LEN = 128
"""Longest name: event names, attribute and property keys, categories."""

MAX_TOKEN_LEN = 2_048
"""Longest device token."""

MAX_TOKEN_TTL = 366 * 24 * 3600
"""Longest lifetime of a device token, in seconds (a year and a day): a token whose expiry is
further ahead than this is refused, so a leaked token cannot stay valid for ever."""

MAX_TITLE_LEN = 256
"""Longest message title on the wire (apps enforce tighter display limits)."""

MAX_BODY_LEN = 4_096
"""Longest message body on the wire."""

MAX_TEXT_LEN = 4_096
"""Longest free-form string value in props, attributes and data."""

MAX_URL_LEN = 2_048
"""Longest URL (image, action target)."""

MAX_KEYS = 64
"""Most keys in one free-form map."""

MAX_EVENTS_PER_BATCH = 100
"""Most behaviour events in one ``events`` frame."""

MAX_IDS_PER_FRAME = 500
"""Most ids in one ``revoke``, ``inbox`` or ``inbox_update`` frame."""

MAX_ACTIONS = 5
"""Most actions (buttons) on one message."""

MAX_INT = 2**53 - 1
"""Largest integer field (seq, timestamps): exact in every language's double."""
