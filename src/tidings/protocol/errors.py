"""The one exception tree of Tidings.

Every error the project raises on purpose derives from :class:`TidingsError`, which carries a
machine-readable ``code`` (see :mod:`tidings.protocol.codes`), a human ``reason`` that names the
bad field, and ``temporary`` (whether retrying the same thing later may succeed)::

    TidingsError
    ├── ProtocolError            bytes or frames that break PROTOCOL.md
    │   ├── FrameTooLarge        a frame over the negotiated size limit
    │   ├── MalformedFrame       not a MessagePack map, truncated, bad UTF-8
    │   ├── UnknownFrame         a frame type this version does not know
    │   ├── InvalidField         a field of the wrong type, length, range or depth
    │   └── UnexpectedFrame      a frame from the wrong side, or at an illegal moment
    │                            (see ``state``)
    ├── AuthError                bad, expired, forged or foreign device token
    └── ConfigError              bad configuration (server or SDK)

Packages add their own subclasses (the server's storage errors, the SDK's ``ClientClosed``) under
this root; outside libraries' exceptions are translated at the adapter that calls them.
"""

from __future__ import annotations

from tidings.protocol import codes

__all__ = [
    "AuthError",
    "ConfigError",
    "FrameTooLarge",
    "InvalidField",
    "MalformedFrame",
    "ProtocolError",
    "TidingsError",
    "UnexpectedFrame",
    "UnknownFrame",
]


class TidingsError(Exception):
    """Root of every error Tidings raises on purpose.

    Attributes:
        code: Machine-readable error code, one of :mod:`tidings.protocol.codes`.
        reason: Human-readable explanation naming what was wrong and where.
        temporary: True when the same operation may succeed if retried later.
    """

    code: str = codes.ERR_INTERNAL
    temporary: bool = False

    def __init__(self, reason: str, *, code: str | None = None, temporary: bool | None = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        if temporary is not None:
            self.temporary = temporary

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class ProtocolError(TidingsError):
    """Bytes or frames that do not follow PROTOCOL.md.

    Attributes:
        rid: The request id of the frame at fault when it is a request whose ``rid`` could be
            read, so that the ``error`` frame answering it carries it (PROTOCOL.md §4);
            otherwise None.
    """

    code = codes.ERR_BAD_FRAME
    rid: int | None = None


class FrameTooLarge(ProtocolError):
    """A frame larger than the size limit (PROTOCOL.md §Limits)."""

    code = codes.ERR_FRAME_TOO_LARGE


class MalformedFrame(ProtocolError):
    """Not one MessagePack map: truncated, trailing bytes, bad UTF-8, a text message."""

    code = codes.ERR_BAD_FRAME


class UnknownFrame(ProtocolError):
    """A frame whose ``t`` is not a frame type of this protocol version."""

    code = codes.ERR_UNKNOWN_FRAME


class InvalidField(ProtocolError):
    """A field that is missing, of the wrong type, too long or out of range."""

    code = codes.ERR_INVALID_FIELD

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class UnexpectedFrame(ProtocolError):
    """A frame type of this version sent by the wrong side (a client sending ``deliver``), or
    a well-formed frame sent at a moment the phase table forbids."""

    code = codes.ERR_UNEXPECTED_FRAME


class AuthError(TidingsError):
    """A device token that is malformed, forged, expired or for another app."""

    code = codes.ERR_UNAUTHORIZED


class ConfigError(TidingsError):
    """A configuration value that is missing or invalid."""

    code = codes.ERR_CONFIG
