"""SDK errors, under the project's one root :class:`~tidings.protocol.errors.TidingsError`.

::

    TidingsError
    └── ClientError
        ├── ClientClosed     the client was closed; start a new one
        └── Refused          the gateway refused the device for good (bad or expired token)
"""

from __future__ import annotations

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError

__all__ = ["ClientClosed", "ClientError", "Refused"]


class ClientError(TidingsError):
    """An error of the client SDK."""


class ClientClosed(ClientError):
    """The client is closed."""


class Refused(ClientError):
    """The gateway closed with a terminal code: reconnecting with this token cannot help.

    Attributes:
        close_code: The WebSocket close code (4001 unauthorized, 4002 token expired, ...).
    """

    code = codes.ERR_UNAUTHORIZED

    def __init__(self, reason: str, *, close_code: int | None, code: str | None = None):
        super().__init__(reason, code=code)
        self.close_code = close_code
