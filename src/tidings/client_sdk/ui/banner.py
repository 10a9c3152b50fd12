"""The banner toast: a client's banners, one at a time, with their action buttons."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Button, Static

from tidings.client_sdk.inbox import InboxItem

if TYPE_CHECKING:
    from tidings.client_sdk.client import TidingsClient

__all__ = ["DEFAULT_TOAST_TTL_S", "BannerToast"]

DEFAULT_TOAST_TTL_S = 8.0
"""Seconds a banner stays up when nobody acts on it (less if the message expires sooner)."""


class BannerToast(Vertical):
    """Shows the banners a client hands over (``client.on_banner``), one at a time.

    The SDK sends the *displayed* receipt when it hands a banner over (its quiet hours, caps and
    minimum gap have already been applied). The toast sends the user's answer through the SDK:
    an action button (or :meth:`click`) reports *clicked* with that action's id and marks the
    item read; the Dismiss button, ``escape`` or :meth:`dismiss` reports *dismissed*. Left alone,
    the toast hides after ``ttl`` seconds (or when the message expires, if sooner) without a
    receipt. Banners that arrive while one is up wait their turn, oldest first.

    The ``-shown`` CSS class is set while a banner is up; the widget is hidden otherwise. It
    posts :class:`BannerToast.Clicked`, :class:`BannerToast.Dismissed` and
    :class:`BannerToast.Expired` for the app to follow.

    Args:
        client: The client whose banners to show (or call :meth:`bind` later; without one,
            :meth:`show_banner` shows banners and the answers are only posted as messages).
        ttl: Seconds a banner stays up.
    """

    DEFAULT_CSS = """
    BannerToast {
        display: none;
        dock: top;
        height: auto;
        margin: 1 2 0 2;
        padding: 0 1;
        border: tall $accent;
        background: $boost;
    }
    BannerToast.-shown {
        display: block;
    }
    BannerToast .toast-title {
        text-style: bold;
    }
    BannerToast .toast-body {
        color: $text-muted;
    }
    BannerToast .toast-actions {
        height: auto;
        margin: 1 0 0 0;
    }
    BannerToast .toast-actions Button {
        margin: 0 1 0 0;
        min-width: 10;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Dismiss banner")]

    banner: reactive[InboxItem | None] = reactive(None, recompose=True)
    """The banner shown, or None."""

    class _Answer(Message):
        def __init__(self, toast: BannerToast, item: InboxItem) -> None:
            super().__init__()
            self.toast = toast
            self.item = item

        @property
        def control(self) -> BannerToast:
            return self.toast

    class Clicked(_Answer):
        """The user clicked the banner or one of its actions (``action`` is its id)."""

        def __init__(self, toast: BannerToast, item: InboxItem, action: str | None) -> None:
            super().__init__(toast, item)
            self.action = action

    class Dismissed(_Answer):
        """The user dismissed the banner."""

    class Expired(_Answer):
        """The banner hid itself after its time was up."""

    def __init__(
        self,
        client: TidingsClient | None = None,
        *,
        ttl: float = DEFAULT_TOAST_TTL_S,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.ttl = ttl
        self.client: TidingsClient | None = None
        self.waiting: list[InboxItem] = []
        """Banners handed over while another was up, oldest first."""
        self._timer: Timer | None = None
        if client is not None:
            self.bind(client)

    def bind(self, client: TidingsClient) -> None:
        """Show ``client``'s banners from now on."""
        self.client = client
        client.on_banner(lambda item: self._handed_over(client, item))

    def _handed_over(self, client: TidingsClient, item: InboxItem) -> None:
        if client is self.client and self.is_attached:
            self.show_banner(item)

    # --- showing ------------------------------------------------------------------------------

    def show_banner(self, item: InboxItem) -> None:
        """Show ``item`` now, or after the banners before it if one is up."""
        if self.banner is None:
            self.banner = item
        else:
            self.waiting.append(item)

    def compose(self) -> ComposeResult:
        item = self.banner
        if item is None:
            return
        yield Static(item.title, classes="toast-title")
        if item.body:
            yield Static(item.body, classes="toast-body")
        with Horizontal(classes="toast-actions"):
            for n, action in enumerate(item.actions):
                yield Button(action.label, id=f"toast-action-{n}", variant="primary")
            yield Button("Dismiss", id="toast-dismiss")

    def watch_banner(self, item: InboxItem | None) -> None:
        self.set_class(item is not None, "-shown")
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if item is not None:
            self._timer = self.set_timer(self._time_left(item), self._expire)

    def _time_left(self, item: InboxItem) -> float:
        if not item.expires_at:
            return self.ttl
        now = self.client.clock.now() if self.client is not None else time.time()
        return max(0.0, min(self.ttl, item.expires_at - now))

    def _next(self) -> None:
        self.banner = self.waiting.pop(0) if self.waiting else None

    def _expire(self) -> None:
        item = self.banner
        if item is not None:
            self.post_message(self.Expired(self, item))
            self._next()

    # --- the user's answer --------------------------------------------------------------------

    async def click(self, action: str | None = None) -> None:
        """Report a click on the banner shown (with an action id), then show the next one."""
        item = self.banner
        if item is None:
            return
        if self.client is not None:
            await self.client.click(item.id, action=action)
        self.post_message(self.Clicked(self, item, action))
        self._next()

    async def dismiss(self) -> None:
        """Report that the banner shown was dismissed, then show the next one."""
        item = self.banner
        if item is None:
            return
        if self.client is not None:
            await self.client.dismiss(item.id)
        self.post_message(self.Dismissed(self, item))
        self._next()

    async def action_dismiss(self) -> None:
        """Dismiss the banner shown."""
        await self.dismiss()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        item, button = self.banner, event.button.id or ""
        if item is None:
            return
        if button == "toast-dismiss":
            await self.dismiss()
        elif button.startswith("toast-action-"):
            await self.click(item.actions[int(button.removeprefix("toast-action-"))].id)
