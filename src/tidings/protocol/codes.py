"""Error codes and WebSocket close codes (PROTOCOL.md §Errors, §Close codes).

Close codes carry the reconnect policy in their range, so the SDK and the gateway cannot drift:

=============  =============================================================
1000–2999      WebSocket standard codes: reconnect with backoff
4000–4099      terminal: the client must not reconnect with the same token
4100–4199      reconnect with backoff (overload, draining, timeouts)
=============  =============================================================

:func:`should_reconnect` is the one place that reads the ranges.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_BAD_FRAME",
    "CLOSE_ERASED",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_HEARTBEAT_TIMEOUT",
    "CLOSE_HELLO_TIMEOUT",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_RATE_LIMITED",
    "CLOSE_REPLACED",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOKEN_EXPIRED",
    "CLOSE_UNAUTHORIZED",
    "CLOSE_UNSUPPORTED",
    "ERROR_CODES",
    "ERR_BAD_FRAME",
    "ERR_CONFIG",
    "ERR_FORBIDDEN",
    "ERR_FRAME_TOO_LARGE",
    "ERR_INTERNAL",
    "ERR_INVALID_FIELD",
    "ERR_NOT_FOUND",
    "ERR_RATE_LIMITED",
    "ERR_TOKEN_EXPIRED",
    "ERR_UNAUTHORIZED",
    "ERR_UNEXPECTED_FRAME",
    "ERR_UNKNOWN_FRAME",
    "is_terminal",
    "should_reconnect",
]

# --- error codes (the ``code`` field of an ``error`` frame and of TidingsError) ---------------
ERR_BAD_FRAME = "bad_frame"  # not one MessagePack map, truncated, bad UTF-8, a text message
ERR_FRAME_TOO_LARGE = "frame_too_large"  # sent before the 1009 close
ERR_UNKNOWN_FRAME = "unknown_frame"  # ``t`` is no frame type of this version
ERR_INVALID_FIELD = "invalid_field"  # missing, wrong type, too long, out of range, too deep
ERR_UNEXPECTED_FRAME = "unexpected_frame"  # the other side's frame type, or the wrong phase
ERR_UNAUTHORIZED = "unauthorized"  # bad, forged or foreign token
ERR_TOKEN_EXPIRED = "token_expired"
ERR_FORBIDDEN = "forbidden"  # authenticated, but not allowed (another user's message...)
ERR_NOT_FOUND = "not_found"
ERR_RATE_LIMITED = "rate_limited"
ERR_CONFIG = "config"
ERR_INTERNAL = "internal"

ERROR_CODES = frozenset(
    {
        ERR_BAD_FRAME,
        ERR_FRAME_TOO_LARGE,
        ERR_UNKNOWN_FRAME,
        ERR_INVALID_FIELD,
        ERR_UNEXPECTED_FRAME,
        ERR_UNAUTHORIZED,
        ERR_TOKEN_EXPIRED,
        ERR_FORBIDDEN,
        ERR_NOT_FOUND,
        ERR_RATE_LIMITED,
        ERR_CONFIG,
        ERR_INTERNAL,
    }
)

# --- close codes --------------------------------------------------------------------------------
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # standard; the gateway prefers a goaway frame + CLOSE_DRAINING

# Terminal (4000–4099): reconnecting with the same token cannot help.
CLOSE_UNAUTHORIZED = 4001  # bad, forged or foreign token
CLOSE_TOKEN_EXPIRED = 4002  # mint a new token, then connect again
CLOSE_FORBIDDEN = 4003
CLOSE_BAD_FRAME = 4004  # the client broke the protocol; a bug, not a network fault
CLOSE_UNSUPPORTED = 4005  # protocol version or subprotocol not supported
CLOSE_REPLACED = 4006  # the same device connected again elsewhere; this one must stop
CLOSE_ERASED = 4007  # the device's user was erased: drop local data; connect again only anew

# Reconnect with backoff (4100–4199).
CLOSE_SLOW_CONSUMER = 4100  # send queue overflowed; resume catches up
CLOSE_RATE_LIMITED = 4101
CLOSE_DRAINING = 4102  # server shutting down; honour the goaway hint
CLOSE_HEARTBEAT_TIMEOUT = 4103  # a WebSocket ping went unanswered for a heartbeat interval
CLOSE_INTERNAL = 4104  # a server fault (the store failed...); an ``error internal`` precedes it
CLOSE_HELLO_TIMEOUT = 4105  # no valid ``hello`` in time: a slow network, not a client bug

__all__ += ["CLOSE_DRAINING"]

_TERMINAL = range(4000, 4100)


def is_terminal(code: int | None) -> bool:
    """Return True when a close code forbids reconnecting with the same credentials."""
    return code is not None and code in _TERMINAL


def should_reconnect(code: int | None) -> bool:
    """Return True when the SDK should reconnect (after backoff) following this close code.

    ``None`` means the connection was lost without a close frame (network fault): reconnect.
    Everything outside the terminal range reconnects, so a future server code in an unknown
    range degrades to "try again later" rather than to a dead client.
    """
    return not is_terminal(code)
