"""Textual widgets for apps that embed the SDK (the ``ui`` extra: ``pip install 'tidings[ui]'``).

Only this package imports Textual; the rest of the SDK works without it. The widgets follow a
:class:`~tidings.client_sdk.TidingsClient` that runs on the Textual app's own event loop (start it
in the app's ``on_mount``)::

    from tidings.client_sdk.ui import BannerToast, InboxList

    class ShopApp(App[None]):
        def compose(self) -> ComposeResult:
            yield InboxList(self.client)        # live: read/unread (r), delete (d), open (enter)
            yield BannerToast(self.client)      # one banner at a time, with its action buttons
            yield ModalHost(self.client)        # modals centred over the app, one at a time

        async def on_mount(self) -> None:
            await self.client.start()
"""

from __future__ import annotations

from tidings.client_sdk.ui.banner import DEFAULT_TOAST_TTL_S, BannerToast
from tidings.client_sdk.ui.inbox import InboxList, inbox_line
from tidings.client_sdk.ui.modal import MessageModal, ModalHost

__all__ = [
    "DEFAULT_TOAST_TTL_S",
    "BannerToast",
    "InboxList",
    "MessageModal",
    "ModalHost",
    "inbox_line",
]
