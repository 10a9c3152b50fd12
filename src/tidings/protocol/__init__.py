"""Sans-I/O core of the ``tidings.v1`` wire protocol (see PROTOCOL.md beside this file).

Frames, their MessagePack codec with safe limits, the phase table, the server's per-connection
state machine (``session``), error and close codes, the reconnect backoff policy and device
tokens. Imports no asyncio, websockets or aiosqlite.
"""

from __future__ import annotations

from tidings.protocol import codes, limits
from tidings.protocol.backoff import Backoff, backoff_delay
from tidings.protocol.codec import (
    decode_client,
    decode_server,
    encode,
    encode_deliver,
    encode_message,
)
from tidings.protocol.codes import should_reconnect
from tidings.protocol.errors import (
    AuthError,
    ConfigError,
    FrameTooLarge,
    InvalidField,
    MalformedFrame,
    ProtocolError,
    TidingsError,
    UnexpectedFrame,
    UnknownFrame,
)
from tidings.protocol.frames import (
    Ack,
    Action,
    Deliver,
    DeviceInfo,
    Error,
    Event,
    Events,
    Frame,
    GoAway,
    Hello,
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
from tidings.protocol.session import (
    ClientSession,
    DeliverySkipped,
    ReplayNeeded,
    ServerSession,
)
from tidings.protocol.state import CLIENT_ALLOWED, SERVER_ALLOWED, Phase, advance
from tidings.protocol.tokens import TokenClaims, mint_token, verify_token

SUBPROTOCOL = "tidings.v1"
"""The WebSocket subprotocol both peers must negotiate."""

__all__ = [
    "CLIENT_ALLOWED",
    "SERVER_ALLOWED",
    "SUBPROTOCOL",
    "Ack",
    "Action",
    "AuthError",
    "Backoff",
    "ClientSession",
    "ConfigError",
    "Deliver",
    "DeliverySkipped",
    "DeviceInfo",
    "Error",
    "Event",
    "Events",
    "Frame",
    "FrameTooLarge",
    "GoAway",
    "Hello",
    "Identify",
    "InboxChange",
    "InboxState",
    "InboxUpdate",
    "InvalidField",
    "MalformedFrame",
    "Message",
    "Ok",
    "Phase",
    "Ping",
    "Pong",
    "Prefs",
    "ProtocolError",
    "Receipt",
    "ReplayNeeded",
    "Revoke",
    "ServerSession",
    "TidingsError",
    "TokenClaims",
    "UnexpectedFrame",
    "UnknownFrame",
    "Welcome",
    "advance",
    "backoff_delay",
    "codes",
    "decode_client",
    "decode_server",
    "encode",
    "encode_deliver",
    "encode_message",
    "limits",
    "mint_token",
    "should_reconnect",
    "verify_token",
]
