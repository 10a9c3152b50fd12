"""SDK errors, under the project's one root :class:`~tidings.protocol.errors.TidingsError`.

::

    TidingsError
    └── ClientError
        ├── ClientClosed     the client was closed; start a new one
        ├── Refused          the gateway refused the device for good (bad or expired token)
        └── RequestRefused   the gateway refused one request for good; the SDK dropped it

The gateway answers a request (``events``, ``identify``, ``receipt``, ``prefs``,
``inbox_update``) with ``ok`` or with ``error {code, rid}`` (PROTOCOL.md §4, §9). The wire does not
say whether an error is temporary, so the SDK decides from the code (:func:`is_temporary`):

- **temporary** — ``internal`` (a server fault such as a full database disk), ``rate_limited``,
  and any code this SDK does not know (a newer gateway's ``overloaded`` or ``unavailable``): the
  request stays in the outbox and is sent again after a backoff; nothing is reported to
  ``on_error`` (``last_error`` shows the latest one).
- **permanent** — the codes in :data:`PERMANENT_CODES` (``invalid_field``, ``forbidden``,
  ``frame_too_large``, ...): sending the same request again cannot succeed, so the SDK drops it
  and reports a :class:`RequestRefused` naming it to ``on_error``.

Unknown codes count as temporary for the same reason unknown close codes reconnect
(:func:`tidings.protocol.codes.should_reconnect`): a code added later degrades to "try again
later", never to silently lost reports. The outbox bound still caps what is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError

__all__ = [
    "PERMANENT_CODES",
    "ClientClosed",
    "ClientError",
    "QueuedRequest",
    "Refused",
    "RequestRefused",
    "is_temporary",
]

PERMANENT_CODES = frozenset(
    {
        codes.ERR_BAD_FRAME,
        codes.ERR_FRAME_TOO_LARGE,
        codes.ERR_UNKNOWN_FRAME,
        codes.ERR_INVALID_FIELD,
        codes.ERR_UNEXPECTED_FRAME,
        codes.ERR_UNAUTHORIZED,
        codes.ERR_TOKEN_EXPIRED,
        codes.ERR_FORBIDDEN,
        codes.ERR_NOT_FOUND,
        codes.ERR_CONFIG,
    }
)
"""Error codes that refuse a request for good: the SDK drops it and reports it."""


def is_temporary(code: str) -> bool:
    """Return True when a request the gateway answered with ``code`` should be sent again later.

    Args:
        code: The ``code`` of an ``error`` frame (PROTOCOL.md §9).
    """
    return code not in PERMANENT_CODES


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


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedRequest:
    """One report the app queued, as the SDK keeps it in its outbox.

    Attributes:
        kind: ``"event"`` (:meth:`~TidingsClient.track`), ``"identify"``, ``"prefs"``,
            ``"receipt"`` (display, click, dismiss) or ``"inbox"`` (read, unread, deleted).
        fields: What was queued, e.g. ``{"id", "name", "ts", "props"}`` for an event.
    """

    kind: str
    fields: Mapping[str, Any]

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> QueuedRequest:
        """The public view of an outbox entry (``{"k": kind, **fields}``)."""
        return cls(kind=entry["k"], fields={k: v for k, v in entry.items() if k != "k"})


class RequestRefused(ClientError):
    """The gateway refused a request for good; the SDK dropped it from the outbox.

    Passed to the callbacks registered with ``on_error``. ``code`` and ``reason`` are the
    gateway's (``reason`` names the bad field); ``temporary`` is always False.

    Attributes:
        rid: The request id the ``error`` frame answered.
        requests: What was dropped: one entry per tracked event of a refused ``events`` batch,
            otherwise the one request.
    """

    temporary = False

    def __init__(self, reason: str, *, code: str, rid: int, requests: tuple[QueuedRequest, ...]):
        super().__init__(reason, code=code, temporary=False)
        self.rid = rid
        self.requests = requests
