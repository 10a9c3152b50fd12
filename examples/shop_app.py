"""A small shop app that embeds the Tidings SDK in a Textual UI.

Run a gateway with its defaults in one terminal, this app in another, and send it messages
from a third::

    tidings gateway
    python examples/shop_app.py
    tidings send --to-user shopper-1 --title "Flash sale" --body "Shoes -30 %" --kind banner \\
        --action shop "Shop now" https://example.com/sale

Keys: v view a product, a add it to the cart, b buy (each tracks an event), o open the banner
shown, x dismiss it; in the inbox r marks read/unread, d deletes, enter opens; q quits.

The device token is minted here with the development app's secret, which is what the gateway
uses when it runs with its defaults. A real app gets its token from its own backend, which
mints it with ``tidings.protocol.tokens.mint_token`` and the app's real secret.
"""

from __future__ import annotations

import argparse
import os
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static

from tidings.client_sdk import TidingsClient
from tidings.client_sdk.ui import BannerToast, InboxList, ModalHost
from tidings.protocol.tokens import mint_token

DEV_APP = "demo"
"""The development app a gateway started with its defaults serves."""
DEV_SECRET = "dev-secret"
"""That app's development token secret (never use it in production)."""
PRODUCTS = ("running shoes", "rain jacket", "espresso machine", "yoga mat")


class ShopApp(App[None]):
    """A shop front: browse, add to cart, buy; banners pop up, the inbox is always there."""

    TITLE = "Tidings shop"
    CSS = """
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #status.-online { color: $success; }
    #product { height: 3; padding: 1 1 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "view", "View product"),
        Binding("a", "add_to_cart", "Add to cart"),
        Binding("b", "buy", "Buy"),
        Binding("o", "open_banner", "Open banner"),
        Binding("x", "dismiss_banner", "Dismiss banner"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        *,
        url: str = "ws://127.0.0.1:8765",
        app_id: str = DEV_APP,
        secret: str = DEV_SECRET,
        device: str = "shop-device-1",
        user: str = "shopper-1",
    ) -> None:
        super().__init__()
        token = mint_token(secret=secret, app=app_id, device=device, user=user)
        # Reports go out a quarter of a second after the key, so the gateway sees them promptly.
        self.client = TidingsClient(url=url, token=token, device_id=device, flush_delay=0.25)
        self.user = user
        self.product = 0
        self.cart: list[str] = []
        self.tracked = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="status")
        yield BannerToast(self.client, id="toast")
        yield ModalHost(self.client)  # modal messages, centred, one at a time
        yield Static(id="product")
        yield InboxList(self.client, id="inbox")
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = self.user
        await self.client.start()  # on this app's event loop: the widgets follow it directly
        await self.client.identify(self.user, {"first_name": "Sam", "favourite": "sports"})
        self._show_product()
        self.set_interval(0.5, self._show_status)
        self.query_one("#inbox", InboxList).focus()

    async def on_unmount(self) -> None:
        await self.client.close()

    def _show_status(self) -> None:
        online = self.client.connected
        status = self.query_one("#status", Static)
        status.set_class(online, "-online")
        state = "online" if online else "offline (events are kept and sent later)"
        status.update(f"{state} · {self.tracked} events tracked · cart: {len(self.cart)}")

    def _show_product(self) -> None:
        self.query_one("#product", Static).update(
            f"Product: {PRODUCTS[self.product]}   (v next product, a add to cart, b buy)"
        )

    def _track(self, name: str, props: dict[str, object]) -> None:
        self.client.track(name, props)  # never blocks, never fails offline
        self.tracked += 1
        self._show_status()

    def action_view(self) -> None:
        """Show the next product and track that it was viewed."""
        self.product = (self.product + 1) % len(PRODUCTS)
        self._show_product()
        self._track("view_content", {"product": PRODUCTS[self.product]})

    def action_add_to_cart(self) -> None:
        """Put the product shown in the cart."""
        self.cart.append(PRODUCTS[self.product])
        self._track("add_to_cart", {"product": PRODUCTS[self.product]})

    def action_buy(self) -> None:
        """Buy what is in the cart (or the product shown)."""
        items = self.cart or [PRODUCTS[self.product]]
        self._track("purchase", {"items": len(items), "amount": 19.9 * len(items)})
        self.notify(f"bought {', '.join(items)}")
        self.cart = []

    async def action_open_banner(self) -> None:
        """Open the banner shown (its first action, if it has any)."""
        toast = self.query_one("#toast", BannerToast)
        if toast.banner is not None:
            actions = toast.banner.actions
            await toast.click(actions[0].id if actions else None)

    async def action_dismiss_banner(self) -> None:
        """Dismiss the banner shown."""
        await self.query_one("#toast", BannerToast).dismiss()

    def on_banner_toast_clicked(self, event: BannerToast.Clicked) -> None:
        self.notify(f"opened {event.item.title!r}")


def main() -> None:
    """Run the shop app against a gateway (defaults: the local one with the dev app)."""
    parser = argparse.ArgumentParser(description="A Textual shop app that embeds the SDK.")
    parser.add_argument("--url", default=os.environ.get("TIDINGS_URL", "ws://127.0.0.1:8765"))
    parser.add_argument("--app", default=os.environ.get("TIDINGS_APP", DEV_APP))
    parser.add_argument("--secret", default=os.environ.get("TIDINGS_SECRET", DEV_SECRET))
    parser.add_argument("--device", default="shop-device-1")
    parser.add_argument("--user", default="shopper-1")
    args = parser.parse_args()
    ShopApp(url=args.url, app_id=args.app, secret=args.secret, device=args.device,
            user=args.user).run()  # fmt: skip


if __name__ == "__main__":
    main()
