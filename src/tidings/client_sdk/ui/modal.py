"""The modal: a client's modal messages, centred over the app, one at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Static

from tidings.client_sdk.inbox import InboxItem

if TYPE_CHECKING:
    from tidings.client_sdk.client import TidingsClient

__all__ = ["MessageModal", "ModalHost"]


class MessageModal(ModalScreen[str | None]):
    """One modal message, centred: title, body, image, its buttons (at most two) and Close.

    A button reports *clicked* with its action id through the SDK; Close or ``escape`` reports
    *dismissed*. Either closes the screen, with the action id (or None) as its result, and
    lets the SDK hand over the next modal. The SDK sent *displayed* when it handed this one over.

    Args:
        item: The modal message (from ``client.on_modal``).
        client: The client to report the answer through (None: the answer is only the result).
    """

    DEFAULT_CSS = """
    MessageModal {
        align: center middle;
    }
    MessageModal #modal-box {
        width: 60;
        max-width: 90%;
        height: auto;
        padding: 1 2;
        border: thick $accent;
        background: $surface;
    }
    MessageModal .modal-title {
        text-style: bold;
        margin: 0 0 1 0;
    }
    MessageModal .modal-image {
        color: $text-muted;
    }
    MessageModal .modal-actions {
        height: auto;
        margin: 1 0 0 0;
        align-horizontal: right;
    }
    MessageModal .modal-actions Button {
        margin: 0 0 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, item: InboxItem, client: TidingsClient | None = None) -> None:
        super().__init__()
        self.item = item
        self.client = client

    def compose(self) -> ComposeResult:
        item = self.item
        with Vertical(id="modal-box"):
            yield Static(item.title, classes="modal-title")
            if item.body:
                yield Static(item.body, classes="modal-body")
            if item.image:
                yield Static(f"[image] {item.image}", classes="modal-image", markup=False)
            with Horizontal(classes="modal-actions"):
                for n, action in enumerate(item.actions[:2]):
                    yield Button(action.label, id=f"modal-action-{n}", variant="primary")
                yield Button("Close", id="modal-close")

    async def click(self, action: str | None = None) -> None:
        """Report a click (with an action id) and close."""
        if self.client is not None:
            await self.client.click(self.item.id, action=action)
        self.dismiss(action)

    async def action_close(self) -> None:
        """Report that the modal was dismissed and close."""
        if self.client is not None:
            await self.client.dismiss(self.item.id)
        self.dismiss(None)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id or ""
        if button == "modal-close":
            await self.action_close()
        elif button.startswith("modal-action-"):
            await self.click(self.item.actions[int(button.removeprefix("modal-action-"))].id)


class ModalHost(Widget):
    """Puts a client's modals (``client.on_modal``) on screen as :class:`MessageModal`.

    It takes no room. The SDK hands modals over one at a time (the next after the app's answer
    to this one), so a host never stacks them. It posts :class:`ModalHost.Closed` when the user
    answered one.

    Args:
        client: The client whose modals to show (or call :meth:`bind` later).
    """

    DEFAULT_CSS = """
    ModalHost {
        display: none;
    }
    """

    class Closed(Message):
        """The user answered a modal: ``action`` is the button's action id, None if closed."""

        def __init__(self, item: InboxItem, action: str | None) -> None:
            super().__init__()
            self.item = item
            self.action = action

    def __init__(self, client: TidingsClient | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.client: TidingsClient | None = None
        if client is not None:
            self.bind(client)

    def bind(self, client: TidingsClient) -> None:
        """Show ``client``'s modals from now on."""
        self.client = client
        client.on_modal(lambda item: self._handed_over(client, item))

    def _handed_over(self, client: TidingsClient, item: InboxItem) -> None:
        if client is self.client and self.is_attached:
            # The SDK calls from its own task: push the screen from this widget's queue.
            self.call_later(self._show, client, item)

    def _show(self, client: TidingsClient, item: InboxItem) -> None:
        def closed(action: str | None) -> None:
            self.post_message(self.Closed(item, action))

        self.app.push_screen(MessageModal(item, client), callback=closed)
