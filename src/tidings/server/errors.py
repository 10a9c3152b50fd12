"""Server-side errors, under the project's one root :class:`TidingsError`.

::

    TidingsError
    └── ServerError
        ├── StoreError      the database refused or failed (``temporary`` when retrying helps)
        │   ├── ClaimLost   a scheduler's claim on due work ended before its commit
        │   ├── CampaignInactive  a campaign's send committed while it is not running
        │   ├── SettingsChanged  a send committed under app settings replaced since
        │   ├── FeedBehind  a reader of the change feed is too far behind to catch up
        │   └── DeviceErased  a device's write after its user was erased
        ├── NotFound        the named campaign, rule or user does not exist (HTTP 404)
        └── Conflict        the request does not fit the object's state (HTTP 409)
"""

from __future__ import annotations

from tidings.protocol import codes
from tidings.protocol.errors import TidingsError

__all__ = [
    "CampaignInactive",
    "ClaimLost",
    "Conflict",
    "DeviceErased",
    "FeedBehind",
    "NotFound",
    "ServerError",
    "SettingsChanged",
    "StoreError",
]


class ServerError(TidingsError):
    """An error inside the gateway."""

    code = codes.ERR_INTERNAL


class StoreError(ServerError):
    """The store could not do what was asked; sqlite3 errors are translated to this."""


class ClaimLost(StoreError):
    """Due work was claimed by another scheduler after this one's lease ended: its outcome is
    not stored (the other scheduler decides for those users; nothing is decided twice)."""


class CampaignInactive(StoreError):
    """A campaign's sends reached the commit while the stored campaign is not running (paused,
    cancelled or completed through another node, whose news has not arrived here yet): nothing
    of the outcome is stored; the sender reads the campaign again."""

    def __init__(self, campaign: str, status: str) -> None:
        super().__init__(f"campaign {campaign!r} is {status}: its sends were not stored")
        self.campaign = campaign
        self.status = status


class SettingsChanged(StoreError):
    """A send reached the commit decided under app settings (caps, thresholds, categories)
    that are no longer the stored ones (changed through another node, whose news has not
    arrived here yet): nothing of the outcome is stored; the sender reads the settings again
    and decides again."""

    def __init__(self, app: str) -> None:
        super().__init__(f"the settings of app {app!r} changed: the sends were not stored")
        self.app = app


class FeedBehind(StoreError):
    """More changes wait in the feed than one read takes: the reader rebuilds its view from
    the store instead of catching up."""

    temporary = True


class DeviceErased(StoreError):
    """A connected device wrote after its user was erased: the write is refused (the erased
    profile must not come back from it); the gateway closes its session with
    ``CLOSE_ERASED``."""

    code = codes.ERR_FORBIDDEN


class _FieldError(ServerError):
    """An error about one input; ``field`` names it (the admin API reports it)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(_FieldError):
    """The named object does not exist; ``field`` names the input that named it."""

    code = codes.ERR_NOT_FOUND


class Conflict(_FieldError):
    """The request does not fit the object's current state (e.g. editing a running campaign)."""

    code = "conflict"
