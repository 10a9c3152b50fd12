"""Server-side errors, under the project's one root :class:`TidingsError`.

::

    TidingsError
    └── ServerError
        └── StoreError      the database refused or failed (``temporary`` when retrying helps)
"""

from __future__ import annotations

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError

__all__ = ["ServerError", "StoreError"]


class ServerError(TidingsError):
    """An error inside the gateway."""

    code = codes.ERR_INTERNAL


class StoreError(ServerError):
    """The store could not do what was asked; sqlite3 errors are translated to this."""
