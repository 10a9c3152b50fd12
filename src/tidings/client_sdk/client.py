"""TidingsClient: the SDK facade an app embeds.

The client keeps one WebSocket to the gateway (reconnecting forever with full-jitter backoff and
resuming from its cursor), an outbox of requests that survives being offline (and restarts, with
``store_path``), a local inbox, and the banner pipeline with on-device quiet hours and caps.
Display is exactly-once: every message id is remembered before it is acknowledged.

The outbox keeps every request until the gateway answers it (PROTOCOL.md §4). An ``ok`` removes
it; an ``error`` with a temporary code (``internal``, ``rate_limited``, codes this SDK does not
know) keeps it, and requests are held back for a full-jitter backoff before they are sent again;
an ``error`` with a permanent code drops it and reports a
:class:`~tidings.client_sdk.errors.RequestRefused` to ``on_error`` (the split is
:func:`~tidings.client_sdk.errors.is_temporary`). The outbox is bounded (``max_outbox``): beyond
it the oldest events are evicted, on disk too.

Reconnecting follows PROTOCOL.md §10 and §12 (:func:`~tidings.protocol.codes.should_reconnect`,
:class:`~tidings.protocol.backoff.Backoff`) with one refinement: the backoff is reset only by
a session that stayed open :data:`STABLE_SESSION_S`, not by the ``welcome`` alone, so a device
whose every session ends at once (say, closed with 1009 by a delivery over its frame limit) waits
longer each time instead of reconnecting in a tight loop.

``url`` may name several gateways (an app without a load balancer in front of them): each
attempt tries the next one in rotation, starting from the one that worked last, and the backoff
waits between full rotations only.

The protocol state (phase, request ids and what each answer settles, delivery cursor and acks,
de-duplication on the wire) is the sans-I/O :class:`~tidings.protocol.session.ClientSession`;
this class pumps bytes through it and owns the socket, timers, outbox, inbox and banners.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from tidings.client_sdk.banners import BannerPolicy, Verdict, decide, held_expiry, release
from tidings.client_sdk.clock import Clock, SystemClock
from tidings.client_sdk.errors import (
    ClientClosed,
    ClientError,
    QueuedRequest,
    Refused,
    RequestRefused,
    is_temporary,
)
from tidings.client_sdk.inbox import DEFAULT_INBOX_LIMIT, Inbox, InboxItem
from tidings.client_sdk.outbox import DEFAULT_MAX_OUTBOX, Entry, Outbox
from tidings.client_sdk.quiet_hours import QuietHours, zone
from tidings.client_sdk.store import open_store
from tidings.client_sdk.transport import STABLE_SESSION_S, Dialer, gateway_urls
from tidings.protocol import SUBPROTOCOL, codes, kinds, limits
from tidings.protocol.backoff import Backoff
from tidings.protocol.errors import ProtocolError
from tidings.protocol.frames import (
    DeviceInfo,
    Event,
    Events,
    GoAway,
    Identify,
    InboxChange,
    InboxState,
    InboxUpdate,
    Message,
    Prefs,
    Receipt,
    Revoke,
    Welcome,
)
from tidings.protocol.session import (
    ClientEvent,
    ClientSession,
    Delivery,
    HelloRefused,
    Request,
    RequestAnswered,
    RequestFailed,
)

__all__ = ["DEFAULT_MAX_OUTBOX", "STABLE_SESSION_S", "ClientStats", "TidingsClient"]

log = logging.getLogger(__name__)

SDK_VERSION = "0.1.0"
HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_FLUSH_DELAY_S = 1.0
"""Seconds what the device reports (events, receipts, profile changes, delivery acks) is
gathered before it is sent: a burst leaves as one batch and the radio wakes once, not per item.
Banners are shown at once; only the reports back wait."""


@dataclass(slots=True)
class ClientStats:
    """Counters for apps, tests and the simulator."""

    received: int = 0
    duplicates: int = 0
    displayed: int = 0
    acks_sent: int = 0
    reconnects: int = 0
    events_dropped: int = 0
    """Requests evicted by the outbox bound (the oldest events first)."""
    requests_retried: int = 0
    """Requests answered with a temporary error and kept to be sent again."""
    requests_refused: int = 0
    """Requests answered with a permanent error and dropped (each reported to ``on_error``)."""


def _local_tz() -> str:
    try:
        import tzlocal  # type: ignore[import-not-found]

        return str(tzlocal.get_localzone_name())
    except Exception:
        return "UTC"


class TidingsClient:
    """Connects one app install ("device") to a Tidings gateway.

    Args:
        url: The gateway, e.g. ``"ws://127.0.0.1:8765"``, or several gateways
            (``["ws://gw-a:8765", "ws://gw-b:8765"]``): each reconnect attempt tries the next
            one, starting from the one that worked last; the backoff waits between full
            rotations. Each must be ``ws://`` or ``wss://`` (:class:`ConfigError` otherwise).
        token: A device token minted by the app's backend (``tidings token`` in development).
        device_id: This install's id (must match the token's).
        store_path: SQLite file for the inbox, cursor and offline queue; None keeps them in
            memory.
        quiet_hours: Hold banners during this local window; they land in the inbox silently and
            the newest few are shown when it ends.
        clock: Time source (inject a FakeClock to test or accelerate quiet hours and caps).
        device_tz: The device's current IANA time zone (default UTC); change it with
            :meth:`set_timezone`.
        banner_policy: Local caps, minimum gap, urgent bypass (see :class:`BannerPolicy`).
        max_outbox: Offline queue bound: beyond it the oldest events (then the oldest requests)
            are evicted, from ``store_path`` too.
        inbox_limit: Inbox bound.
        backoff_base, backoff_cap: Backoff window, seconds, of reconnecting and of sending
            requests again after a temporary error.
        flush_delay: Seconds reports (events, receipts, acks) are gathered before they are
            sent; lower it where the server must see them sooner.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        token: str,
        device_id: str,
        *,
        store_path: str | None = None,
        quiet_hours: QuietHours | None = None,
        clock: Clock | None = None,
        device_tz: str = "UTC",
        platform: str = "python",
        app_version: str = "",
        locale: str = "",
        banner_policy: BannerPolicy | None = None,
        max_outbox: int = DEFAULT_MAX_OUTBOX,
        inbox_limit: int = DEFAULT_INBOX_LIMIT,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        flush_delay: float = DEFAULT_FLUSH_DELAY_S,
    ) -> None:
        zone(device_tz)
        self.urls = gateway_urls(url)
        """The gateways, in the order of rotation."""
        self._dialer = Dialer(self.urls, backoff_base=backoff_base, backoff_cap=backoff_cap)
        self.token, self.device_id = token, device_id
        self.quiet_hours = quiet_hours
        self.clock: Clock = clock or SystemClock()
        self.device_tz = device_tz
        self.policy = banner_policy or BannerPolicy()
        self.device_info = DeviceInfo(platform=platform, app_version=app_version, locale=locale,
                                      tz=device_tz, sdk_version=SDK_VERSION)  # fmt: skip
        self.flush_delay = flush_delay
        self.stats = ClientStats()
        self.session: str | None = None
        self.user: str | None = None
        self.last_error: Exception | None = None
        self._store = open_store(store_path)
        self.outbox = Outbox(self._store, limit=max_outbox, dropped=self._dropped)
        """What this device still has to tell the gateway (events and requests)."""
        self.inbox = Inbox(self._store, now=lambda: self.clock.now(), changed=self._inbox_changed,
                           report=self._report_inbox, limit=inbox_limit)  # fmt: skip
        self._retry_backoff = Backoff(base=backoff_base, cap=backoff_cap)
        self._retry: asyncio.TimerHandle | None = None
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._failed: Exception | None = None
        self._failed_event = asyncio.Event()
        self._closed = False
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._proto = ClientSession(seen=self._seen)
        self._shown_at: list[float] = []
        self._flush_scheduled = False
        self._on_banner: list[Callable[..., Any]] = []
        self._on_modal: list[Callable[..., Any]] = []
        self._modal: InboxItem | None = None  # the modal on screen: one at a time
        self._on_inbox: list[Callable[..., Any]] = []
        self._on_message: list[Callable[..., Any]] = []
        self._read_at = 0.0  # when the frame being handled was read off the socket (unix s)
        self._on_error: list[Callable[..., Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- callbacks ----------------------------------------------------------------------------

    def on_banner(self, callback: Callable[[InboxItem], Any]) -> None:
        """Call ``callback(item)`` when a banner should be shown now (sync or async)."""
        self._on_banner.append(callback)

    def on_modal(self, callback: Callable[[InboxItem], Any]) -> None:
        """Call ``callback(item)`` when a modal should be shown now (sync or async).

        Modals come one at a time: the next waits until the app reports :meth:`click` or
        :meth:`dismiss` for the one on screen (:attr:`modal`). Like banners they wait out
        quiet hours and the device's banner caps, unless urgent (:class:`BannerPolicy`).
        """
        self._on_modal.append(callback)

    @property
    def modal(self) -> InboxItem | None:
        """The modal on screen now (handed to ``on_modal`` and not yet clicked or dismissed)."""
        return self._modal

    def on_inbox_change(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` whenever the inbox changed."""
        self._on_inbox.append(callback)

    def on_message(self, callback: Callable[[Message, float], Any]) -> None:
        """Call ``callback(message, received_at)`` once for every new message received;
        ``received_at`` (unix seconds) is when its frame was read off the socket, before the
        SDK did anything with it (the callback itself runs once it is recorded)."""
        self._on_message.append(callback)

    def on_error(self, callback: Callable[[Exception], Any]) -> None:
        """Call ``callback(error)`` when the gateway refuses something for good.

        ``error`` is a :class:`~tidings.client_sdk.errors.RequestRefused` when a request was
        refused with a permanent code and dropped from the outbox (``error.requests`` names what
        was dropped, ``error.code`` and ``error.reason`` say why), or a
        :class:`~tidings.client_sdk.errors.Refused` when the gateway refused the device itself
        (the client stops). Temporary errors are not reported: the requests stay queued and are
        sent again after a backoff (``last_error`` holds the latest, ``stats.requests_retried``
        counts them).
        """
        self._on_error.append(callback)

    def _fire(self, callbacks: list[Callable[..., Any]], *args: Any) -> None:
        for cb in callbacks:
            try:
                result = cb(*args)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:
                log.exception("tidings: callback %r failed", cb)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _inbox_changed(self) -> None:
        self._fire(self._on_inbox)

    def _report_inbox(self, change: InboxChange) -> None:
        self._queue({"k": "inbox", "id": change.id, "state": change.state})

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The gateway in use, or the one the next attempt tries (see ``urls``)."""
        return self._dialer.url

    @property
    def connected(self) -> bool:
        """True while a session with the gateway is open."""
        return self._connected.is_set()

    @property
    def pending_requests(self) -> int:
        """Requests (events, receipts, ...) not yet confirmed by the gateway."""
        return len(self.outbox)

    async def start(self) -> None:
        """Load local state and start connecting (returns at once; see wait_connected)."""
        if self._closed:
            raise ClientClosed("this client was closed; create a new one")
        if self._started:
            return
        self._started = True
        await self._store.open()
        self._proto = ClientSession(cursor=await self._store.get("seq"),
                                    inbox_ver=await self._store.get("inbox_ver"),
                                    seen=self._seen)  # fmt: skip
        self.inbox._load([InboxItem.from_json(d) for d in await self._store.load_items()])
        self.outbox.load(await self._store.outbox_load())
        self._task = asyncio.create_task(self._run(), name=f"tidings-{self.device_id}")
        self._reschedule()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until welcomed by the gateway; raise Refused if it refused the device."""
        if self._failed is not None:
            raise self._failed
        failed = asyncio.ensure_future(self._failed_event.wait())
        ok = asyncio.ensure_future(self._connected.wait())
        try:
            done, _ = await asyncio.wait({ok, failed}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            ok.cancel()
            failed.cancel()
        if self._failed is not None:
            raise self._failed
        if not done:
            raise TimeoutError(f"not connected to {' or '.join(self.urls)} within {timeout} s")

    async def close(self) -> None:
        """Flush acks, close the connection, finish the local store's writes and close it."""
        if self._closed:
            return
        self._closed = True
        self._failed_event.set()
        self._flush_ack()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for task in (self._task, self._timer, *self._tasks):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
        for task in (self._task, self._timer):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._connected.clear()
        await self.outbox.drained()  # what was queued just before close is on disk
        if self._started:
            await self._store.close()

    async def __aenter__(self) -> TidingsClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the app's actions --------------------------------------------------------------------

    def track(self, name: str, props: dict[str, Any] | None = None) -> None:
        """Record a behaviour event; never blocks and never fails when offline."""
        event = {"k": "event", "id": uuid.uuid4().hex, "name": name,
                 "ts": int(self.clock.now() * 1000), "props": props or {}}  # fmt: skip
        self._queue(event)

    async def identify(self, user: str | None, attrs: dict[str, Any] | None = None) -> None:
        """Set profile attributes of this device's user (must be the token's user)."""
        self._queue({"k": "identify", "user": user, "attrs": attrs or {}})

    async def set_preferences(
        self, *, marketing: bool | None = None, categories: Mapping[str, bool] | None = None
    ) -> None:
        """Opt in or out of marketing messages, or of any category the app declares
        (``categories={"news": False}``); transactional ones always arrive.

        A category the app does not have is refused by the gateway: the request is dropped and
        reported to ``on_error`` (a ``RequestRefused`` listing the app's categories).
        """
        chosen = dict(categories or {})
        if marketing is not None:
            chosen["marketing"] = marketing
        if chosen:
            self._queue({"k": "prefs", "categories": chosen})

    async def click(self, item_id: str, action: str | None = None) -> None:
        """Report a click (with the action id) and mark the item read; a modal closes."""
        self._receipt(item_id, "clicked", action)
        await self.inbox.mark_read(item_id)
        self._closed_modal(item_id)

    async def dismiss(self, item_id: str) -> None:
        """Report that the banner or modal was dismissed; a modal closes."""
        self._receipt(item_id, "dismissed", None)
        await self.inbox.set_held(item_id, False)
        self._closed_modal(item_id)

    def _closed_modal(self, item_id: str) -> None:
        if self._modal is not None and self._modal.id == item_id:
            self._modal = None
            self._reschedule(force=True)  # the next modal, if one waits

    def set_timezone(self, tz: str) -> None:
        """The device moved to another time zone: quiet hours follow it."""
        zone(tz)
        self.device_tz = tz
        self._reschedule(force=True)

    def _receipt(
        self, item_id: str, kind: str, action: str | None, *, ts: int | None = None
    ) -> None:
        when = int(self.clock.now() * 1000) if ts is None else ts
        self._queue({"k": "receipt", "id": item_id, "kind": kind, "action": action,
                     "ts": when})  # fmt: skip

    # --- outbox -------------------------------------------------------------------------------

    def _queue(self, entry: Entry) -> None:
        if self._closed:
            raise ClientClosed("this client was closed")
        self.outbox.add(entry)
        if self.connected:
            self._schedule_flush()

    def _dropped(self, n: int) -> None:
        self.stats.events_dropped += n

    def _schedule_flush(self) -> None:
        """Send what was gathered (acks, requests) ``flush_delay`` from now, all together."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.flush_delay, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flush_ack()
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if not self.connected or self._retry is not None:
            return  # offline, or backing off after a temporary error: the retry timer sends
        for ids, entries in self.outbox.batches(self._proto.in_flight()):
            self._proto.send_request(functools.partial(_request, entries), ids)
        self._transmit()

    def _answered(self, answer: RequestAnswered) -> None:
        """``ok``: the request is durably stored; forget it."""
        if answer.entries:
            self.outbox.remove(answer.entries)
            self._retry_backoff.reset()

    def _failed_request(self, failure: RequestFailed) -> None:
        """``error``: keep the request for a retry, or drop and report it (see ``is_temporary``)."""
        frame, ids = failure.error, failure.entries
        temporary = is_temporary(frame.code)
        self.last_error = ClientError(frame.message, code=frame.code, temporary=temporary)
        if temporary:
            log.debug("tidings: the gateway said %s; retrying later: %s", frame.code, frame.message)
            if ids:  # the entries stay in the outbox, out of flight: the retry sends them
                self.stats.requests_retried += len(ids)
                self._hold_requests()
            return
        log.warning("tidings: the gateway refused a request (%s): %s", frame.code, frame.message)
        dropped = self.outbox.remove(ids)
        if frame.rid is None or not dropped:
            return  # not about a queued request: the close that follows says what happens next
        self.stats.requests_refused += len(dropped)
        requests = tuple(QueuedRequest.from_entry(e) for _, e in dropped)
        error = RequestRefused(frame.message, code=frame.code, rid=frame.rid, requests=requests)
        self.last_error = error
        self._fire(self._on_error, error)

    def _hold_requests(self) -> None:
        """Hold every request back for one backoff delay (one step per round of failures)."""
        if self._retry is not None or self._closed:
            return
        delay = self._retry_backoff.next_delay()
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_requests)

    def _retry_requests(self) -> None:
        self._retry = None
        self._flush_outbox()

    # --- the connection -----------------------------------------------------------------------

    def _transmit(self) -> None:
        """Write what the session queued now, in order, without a task (like the gateway)."""
        data = self._proto.data_to_send()
        ws = self._ws
        if not data or ws is None or ws.protocol.state is not State.OPEN:
            return
        try:
            for message in data:
                ws.protocol.send_binary(message)
            ws.send_data()
        except Exception as exc:  # the transport is going away; the reader will notice
            log.debug("tidings: write failed: %s", exc)

    async def _run(self) -> None:
        while not self._closed:
            close_code: int | None = None
            try:
                async with connect(self.url, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                   compression=None, max_size=limits.MAX_FRAME_BYTES * 4,
                                   open_timeout=HANDSHAKE_TIMEOUT_S,
                                   close_timeout=2) as ws:  # fmt: skip
                    self._ws = ws
                    try:
                        await self._session(ws)
                    finally:
                        close_code = ws.close_code
            except Refused as exc:
                self._refused(exc)
                return
            except (
                OSError,
                ConnectionClosed,
                InvalidHandshake,
                TimeoutError,
                ProtocolError,
            ) as exc:
                log.debug("tidings: connection to %s lost: %s", self.url, exc)
                if self._ws is not None:
                    close_code = self._ws.close_code
            finally:
                self._ws = None
                self._connected.clear()
                self._proto.connection_lost()
            if self._closed:
                return
            if close_code == codes.CLOSE_ERASED:
                await self._forget_user()
            if codes.is_terminal(close_code):
                self._refused(Refused(f"the gateway refused this device (close {close_code})",
                                      close_code=close_code))  # fmt: skip
                return
            self.stats.reconnects += 1
            await asyncio.sleep(self._dialer.lost(asyncio.get_running_loop().time()))

    async def _forget_user(self) -> None:
        """The user was erased (close 4007): drop what this device holds of them — queued
        events and reports, the inbox, the delivery cursor — here and in the local store, so
        nothing of the erased profile is sent again (PROTOCOL.md §10)."""
        self.outbox.clear()
        for item in list(self.inbox._items.values()):
            await self.inbox.remove(item.id, notify=False)
        await self._store.put("seq", 0)
        await self._store.put("inbox_ver", 0)
        self._proto = ClientSession(seen=self._seen)
        self._inbox_changed()

    def _refused(self, exc: Refused) -> None:
        self._failed = self.last_error = exc
        self._failed_event.set()
        self._fire(self._on_error, exc)

    async def _session(self, ws: ClientConnection) -> None:
        proto = self._proto
        proto.connect(self.token, self.device_info)
        self._transmit()
        first = proto.receive(await asyncio.wait_for(ws.recv(), HANDSHAKE_TIMEOUT_S))
        if isinstance(first, HelloRefused):
            error = first.error
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 5)
            close_code = ws.close_code
            # The close code says whether to come back (§10): a server fault at the handshake
            # (`internal`, close 4104) is retried with backoff; a bad token stops the client.
            if (close_code is None and is_temporary(error.code)) or (
                close_code is not None and codes.should_reconnect(close_code)
            ):
                self.last_error = ClientError(error.message, code=error.code, temporary=True)
                return
            raise Refused(error.message, close_code=close_code, code=error.code)
        if not isinstance(first, Welcome):
            return
        self.session, self.user = first.session, first.user
        # The backoff is reset when this session ends, if it lasted (see STABLE_SESSION_S).
        self._dialer.welcomed(asyncio.get_running_loop().time())
        self._connected.set()
        self._flush_outbox()
        async for message in ws:
            self._read_at = time.time()  # when the frame came off the socket, before any work
            event = proto.receive(message)
            self._transmit()  # a pong
            if event is not None:
                await self._on_event(event)

    async def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, Delivery):
            await self._on_deliver(event)
        elif isinstance(event, RequestAnswered):
            self._answered(event)
        elif isinstance(event, RequestFailed):
            self._failed_request(event)
        elif isinstance(event, Revoke):
            for message_id in event.ids:
                await self.inbox.remove(message_id)
        elif isinstance(event, InboxState):
            for change in event.changes:
                await self.inbox.apply(change)
            await self._store.put("inbox_ver", self._proto.inbox_applied(event.ver))
        elif isinstance(event, GoAway):
            self._dialer.go_away(event.reconnect_ms)

    def _seen(self, message_id: str) -> bool:
        """Whether a message was recorded before: display is exactly-once (§3)."""
        return self._store.seen(message_id) or self.inbox.get(message_id) is not None

    async def _on_deliver(self, delivery: Delivery) -> None:
        msg = delivery.msg
        if delivery.duplicate:
            self.stats.duplicates += 1
        else:
            await self._store.add_seen(msg.id)
            self.stats.received += 1
            self._fire(self._on_message, msg, self._read_at)
            await self._accept(msg)
        await self._store.put("seq", self._proto.processed(delivery.seq))
        self._schedule_flush()  # the ack waits with the reports (PROTOCOL.md §3 allows batching)

    def _flush_ack(self) -> None:
        if self.connected and self._proto.ack():
            self.stats.acks_sent += 1
            self._transmit()

    # --- banners ------------------------------------------------------------------------------

    async def _accept(self, msg: Message) -> None:
        now = self.clock.now()
        overlay = kinds.rules(msg.kind).overlay
        if msg.expires_at and msg.expires_at <= now * 1000:
            if overlay:  # an overlay that expired unseen: the server learns it
                self._receipt(msg.id, "expired", None, ts=msg.expires_at)
            return  # expired: never stored, never shown
        if overlay is None:
            await self.inbox.add(InboxItem.from_message(msg, now))
            return
        verdict = self._decide(msg, now)
        item = InboxItem.from_message(msg, now, held=verdict == "hold")
        if verdict == "hold":
            expires_ms = held_expiry(msg, now, quiet=self.quiet_hours, device_tz=self.device_tz)
            item = dataclasses.replace(item, expires_at=expires_ms / 1000)
        await self.inbox.add(item)
        if verdict == "show" and self.clock.now() != now:
            # Storing took a moment: quiet hours (or a cap) may have begun meanwhile. A fast
            # simulated clock makes that moment minutes long.
            verdict = self._decide(msg, self.clock.now())
            if verdict == "hold":
                await self.inbox.set_held(item.id, True)
        if verdict == "show":
            self._show(item)
        elif verdict == "hold":
            self._reschedule()

    def _decide(self, msg: Message, now: float) -> Verdict:
        verdict = decide(msg, now, policy=self.policy, quiet=self.quiet_hours,
                         device_tz=self.device_tz, shown_at=self._shown_at)  # fmt: skip
        if verdict == "show" and self._waits_for_modal(msg.kind):
            return "hold"
        return verdict

    def _waits_for_modal(self, kind: str) -> bool:
        """A modal waits while another is on screen (one at a time)."""
        return self._modal is not None and _is_modal(kind)

    def _show(self, item: InboxItem) -> None:
        now = self.clock.now()
        self._shown_at = [t for t in self._shown_at if now - t < 3600] + [now]
        self.stats.displayed += 1
        if _is_modal(item.kind):
            self._modal = item
            self._fire(self._on_modal, item)
        else:
            self._fire(self._on_banner, item)
        self._receipt(item.id, "displayed", None)

    def _releasable(self) -> list[InboxItem]:
        """Held overlays that may show once quiet hours and caps allow (not a modal while
        another is on screen)."""
        return [i for i in self.inbox.held() if not self._waits_for_modal(i.kind)]

    def _reschedule(self, *, force: bool = False) -> None:
        """(Re)arm the timer that releases held banners (a running one is kept unless forced)."""
        if self._timer is not None:
            if not force and not self._timer.done():
                return
            self._timer.cancel()
            self._timer = None
        if not self._started or self._closed or not self._releasable():
            return
        self._timer = asyncio.get_running_loop().create_task(self._release_later())

    async def _release_later(self) -> None:
        while self._releasable():
            now = self.clock.now()
            if self.quiet_hours is not None and self.quiet_hours.is_quiet(now, self.device_tz):
                await self.clock.sleep(
                    self.quiet_hours.window_end(now, self.device_tz) - now + 0.001
                )
                continue
            wait = self._cap_wait(now)
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            held = {i.id: i for i in self._releasable()}
            to_show, _ = release([i.to_message() for i in held.values()], now, policy=self.policy)
            modals = [m.id for m in to_show if _is_modal(m.kind)]
            waiting = set(modals[1:])  # one modal at a time: the others wait for it to close
            for item in held.values():
                if item.id in waiting:
                    continue
                await self.inbox.set_held(item.id, False)
                if item.expired(now):  # held too long: it expired unseen
                    self._receipt(item.id, "expired", None, ts=int(item.expires_at * 1000))
            for m in to_show:  # newest first
                if m.id not in waiting:
                    self._show(held[m.id])
            return

    def _cap_wait(self, now: float) -> float:
        if not self._shown_at:
            return 0.0
        waits = [max(self._shown_at) + self.policy.min_gap_s - now]
        recent = sorted(t for t in self._shown_at if now - t < 3600)
        if self.policy.max_per_hour is not None and len(recent) >= self.policy.max_per_hour:
            waits.append(recent[len(recent) - self.policy.max_per_hour] + 3600 - now)
        return max(0.0, *waits)


def _is_modal(kind: str) -> bool:
    return kinds.rules(kind).overlay == "modal"


def _request(entries: list[Entry], rid: int) -> Request:
    """The request frame for outbox entries: a batch of events, or one other request."""
    entry = entries[0]
    if entry["k"] == "event":
        return Events(rid=rid, events=tuple(
            Event(id=e["id"], name=e["name"], ts=e["ts"], props=e["props"]) for e in entries
        ))  # fmt: skip
    if entry["k"] == "identify":
        return Identify(rid=rid, user=entry["user"], attrs=entry["attrs"])
    if entry["k"] == "prefs":
        return Prefs(rid=rid, categories=entry["categories"])
    if entry["k"] == "receipt":
        return Receipt(rid=rid, id=entry["id"], kind=entry["kind"], ts=entry["ts"],
                       action=entry["action"])  # fmt: skip
    return InboxUpdate(rid=rid, changes=(InboxChange(id=entry["id"], state=entry["state"]),))
