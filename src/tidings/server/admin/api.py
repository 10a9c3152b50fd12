"""The admin HTTP API: JSON over HTTP, one bearer admin key per app, an OpenAPI schema.

Endpoints::

    POST   /v1/messages              send a message now to users or devices     202, 401/403/404/422
    DELETE /v1/messages/{id}?app=A   revoke a message                           204, 401/403/404
    /v1/campaigns...                 campaigns: CRUD, start/pause/cancel, stats, decision log
                                     (:mod:`.campaigns_api`)
    /v1/segments/preview, /v1/tag-rules..., /v1/users/{id}..., /v1/events
                                     targeting, profiles, export/erase, server-side events
                                     (:mod:`.targeting_api`)
    GET    /healthz                  liveness and connected devices (no auth)   200
    GET    /metrics                  Prometheus text exposition (no auth)       200
    GET    /openapi.json, /docs      the schema and its browser

Authentication: ``Authorization: Bearer <admin key>``. Each key belongs to exactly one app. A
missing or unknown key is ``401``; a valid key used on another app's data is ``403``; an app id
that no configured app has is ``404`` (app ids are names, not secrets; nothing of another app's
data is ever returned).

``/healthz`` and ``/metrics`` need no key: they serve the operator's probes and Prometheus
scraper, which hold no app's admin key, and they carry counters, never message content or user
ids. Serve the admin port on a private interface (the default is ``127.0.0.1``).

Every error, whatever raised it, has one shape::

    {"error": {"code": "invalid_field", "message": "title: ...", "field": "title",
               "details": [{"field": "title", "message": "..."}]}}

``code`` is machine-readable (``unauthorized``, ``forbidden``, ``not_found``, ``invalid_field``,
``invalid_json``, ``payload_too_large``, ``timeout``, ``method_not_allowed``, ``conflict``,
``unavailable``, ``internal``),
``field`` names the offending input as a dotted path (``to.users[3]``, ``data.cart.total``) or is
``null``, and ``details`` lists every problem found when there is more than one.

Input is validated completely before the node sees it: types are strict (no ``"5"`` for 5),
unknown fields are refused, strings must be encodable UTF-8 without control characters, numbers
must be finite, request bodies are capped at :data:`MAX_REQUEST_BYTES` and must arrive within
:data:`BODY_TIMEOUT_S`. The generic ``500``
handler exists only so that a bug still answers in the documented shape.

Retries: ``POST /v1/messages``, ``POST /v1/campaigns`` and ``POST /v1/campaigns/{id}/start``
accept an ``Idempotency-Key`` header (1–255 visible ASCII characters, kept for a day). A retry
with the same key and the same request gets the first answer (with ``Idempotent-Replayed:
true``) and does nothing again; the same key with a different request is ``422``; a retry
while the first attempt still runs is ``409`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from tidings import __version__
from tidings.protocol import codes, kinds, limits
from tidings.protocol.errors import TidingsError
from tidings.protocol.frames import Action, Kind
from tidings.server.admin import campaigns_api, clock_api, targeting_api
from tidings.server.admin.common import (
    BODY_TIMEOUT_S,
    ERR_CONFLICT,
    ERR_INVALID_JSON,
    ERR_PAYLOAD_TOO_LARGE,
    ERR_TIMEOUT,
    ERR_UNAVAILABLE,
    ERRORS,
    HEALTH_TIMEOUT_S,
    JSON_OBJECT_SCHEMA,
    MAX_REQUEST_BYTES,
    MAX_TARGETS,
    MAX_TTL_S,
    STATUS_CODES,
    ApiError,
    AppId,
    AsciiJSON,
    Body,
    Caller,
    IdempotencyKey,
    Ident,
    ImageUrl,
    Integral,
    Model,
    PathId,
    QueryApp,
    Title,
    check_url,
    field_error,
    json_data,
    non_null,
    once,
    one_line,
    resolve_app,
)
from tidings.server.broker import InProcessBroker
from tidings.server.campaigns.templates import ContentLimits, copy_length, is_template
from tidings.server.config import AppConfig
from tidings.server.node import Node, SendRequest

log = logging.getLogger(__name__)

__all__ = [
    "BODY_TIMEOUT_S",
    "MAX_REQUEST_BYTES",
    "MAX_TARGETS",
    "MAX_TTL_S",
    "ApiError",
    "create_admin_app",
]


class Target(Model):
    """Who gets the message: exactly one of ``users`` or ``devices``, non-empty."""

    model_config = ConfigDict(
        json_schema_extra=non_null("users", "devices", minProperties=1, maxProperties=1)
    )

    users: list[Ident] | None = Field(
        default=None, max_length=MAX_TARGETS, json_schema_extra={"minItems": 1}
    )
    devices: list[Ident] | None = Field(
        default=None, max_length=MAX_TARGETS, json_schema_extra={"minItems": 1}
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        given = [name for name in ("users", "devices") if getattr(self, name) is not None]
        if len(given) != 1:
            raise field_error("to", "to: give exactly one of users or devices")
        name = given[0]
        if not getattr(self, name):
            raise field_error(f"to.{name}", f"to.{name}: must name at least one target")
        return self


class ActionIn(Model):
    """A button or deep link on the message."""

    id: Ident
    label: Annotated[
        str, Field(min_length=1, max_length=limits.MAX_NAME_LEN), AfterValidator(one_line)
    ]
    url: Annotated[str, Field(max_length=limits.MAX_URL_LEN), AfterValidator(check_url)] = ""


class SendBody(Model):
    """``POST /v1/messages``: one message to users or devices of one app, now."""

    app: AppId
    to: Target
    kind: Annotated[
        Kind,
        Field(
            description="Where it shows: "
            + "; ".join(f"`{k.name}`: {k.description}" for k in kinds.KINDS.values())
            + "."
        ),
    ] = "both"
    title: Title
    body: Body
    category: Annotated[
        str,
        Field(
            pattern=r"^[a-z][a-z0-9_-]{0,31}$",
            description="`marketing`, `transactional` or one of the app's own categories "
            "(`categories` in its settings).",
        ),
    ] = "marketing"
    priority: Literal["normal", "urgent"] = "normal"
    ttl: Annotated[int, Field(ge=1, le=MAX_TTL_S), Integral] | None = Field(
        default=None,
        description="Seconds until the message expires; default: the app's TTL for the kind.",
    )
    collapse_key: Ident | None = None
    image: ImageUrl | None = None
    actions: list[ActionIn] = Field(default_factory=list, max_length=limits.MAX_ACTIONS)
    data: Annotated[dict[str, Any], AfterValidator(json_data)] = Field(
        default_factory=dict, json_schema_extra=JSON_OBJECT_SCHEMA
    )
    expire_after_read: bool = False

    @model_validator(mode="after")
    def _unique_action_ids(self) -> SendBody:
        ids = [a.id for a in self.actions]
        if len(set(ids)) != len(ids):
            raise field_error("actions", "actions: action ids must be unique")
        most = kinds.KINDS[self.kind].max_actions
        if len(ids) > most:
            raise field_error("actions", f"actions: at most {most} for kind {self.kind!r}")
        for name in ("title", "body"):
            if is_template(getattr(self, name)):
                raise field_error(name, (
                    f"{name}: a direct send is not personalised, so {{{{ … }}}} would reach"
                    " devices as written; send plain text, or create a one-off campaign"
                    ' (POST /v1/campaigns, segment "everyone") to render it per user'
                ))  # fmt: skip
        return self


class SendAccepted(BaseModel):
    """``202``: the message and its deliveries are durably stored."""

    message_id: str
    ids: list[str]
    devices: int = Field(description="Device deliveries queued.")
    users: int = Field(description="Distinct users reached on at least one device.")
    no_device: int = Field(
        0,
        description="Users with no device yet whose inbox keeps the message until it expires;"
        " their first device receives it (a banner-only message to them is skipped instead,"
        " reason no_device).",
    )
    skipped: dict[str, int] = Field(description="Targets not sent to, by reason.")


class Health(BaseModel):
    """``GET /healthz``: ``200`` when the store answers, ``503`` when it does not."""

    status: Literal["ok", "degraded"]
    connections: int = Field(description="Devices connected to this node.")
    node: str = Field(description="This node's name.")
    store: Literal["ok", "unreachable"]
    broker: Literal["in-process", "ok", "unreachable"] = Field(
        description="How deliveries reach other nodes; unreachable: only this node's devices"
        " are served until it is back."
    )
    feed: Literal["single-node", "ok", "behind"] = Field(
        default="single-node",
        description="Whether this node reads what the other nodes change (their feed in the"
        " store); behind: not read for 5 s, its view of profiles and campaigns may be stale"
        " (decisions are still checked by the store).",
    )


# --- error responses ---------------------------------------------------------------------------


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    info: dict[str, Any] = {"code": code, "message": message, "field": field}
    info["details"] = details or [{"field": field, "message": message}]
    return AsciiJSON({"error": info}, status_code=status, headers=headers)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: Any) -> dict[str, Any]:
    loc = tuple(err.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    # Pydantic appends the function or tagged-union name to loc for custom validators.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    ctx = err.get("ctx") or {}
    field = ctx.get("field") or _path(loc) or (err.get("loc") or [None])[0]
    msg = str(ctx.get("message") or err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if field == "body" and err.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        msg = "must be a JSON object"
    if field and not msg.startswith(f"{field}:"):
        msg = f"{field}: {msg}"
    return {"field": field, "message": msg}


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, ERR_INVALID_JSON, "body: not valid JSON", "body")
    details = [_describe(e) for e in errors]
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if details and details[0]["field"] == "body" and "json" not in media:
        details[0]["message"] = "body: send a JSON object with Content-Type: application/json"
    field = details[0]["field"] if details else None
    message = str(details[0]["message"]) if details else "invalid request"
    return _error(422, codes.ERR_INVALID_FIELD, message, field, details)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 400:
        message = "body: could not be parsed as UTF-8 JSON"
        return _error(400, code, message, "body")
    headers = exc.headers
    if exc.status_code in (404, 405):
        what = "no such endpoint" if exc.status_code == 404 else "method not allowed"
        message = f"{what}: {request.method} {request.url.path!r}"
    if exc.status_code == 405:
        # One route per method: the route that refused knows only its own, so list them all.
        allowed = sorted({
            method for route in request.app.routes
            if isinstance(route, BaseRoute) and route.matches(request.scope)[0] is not Match.NONE
            for method in getattr(route, "methods", None) or ()
        })  # fmt: skip
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        message += f"; allowed: {', '.join(allowed)}"
    return _error(exc.status_code, code, message, headers=headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return _error(exc.status, exc.code, exc.reason, exc.field, headers=headers or None)


_FIELD_ERROR_STATUS = {codes.ERR_NOT_FOUND: 404, ERR_CONFLICT: 409}


async def _on_tidings_error(request: Request, exc: Exception) -> Response:
    # The node's own checks, translated at this one boundary.
    assert isinstance(exc, TidingsError)
    field = getattr(exc, "field", None)
    if isinstance(field, str):
        # Errors that name a field: invalid input (campaign, template, tag rule, wire field),
        # an unknown object (NotFound) or a state that refuses the request (Conflict).
        status = _FIELD_ERROR_STATUS.get(exc.code, 422)
        return _error(status, STATUS_CODES[status], exc.reason, field)
    if exc.code == codes.ERR_RATE_LIMITED:
        return _error(429, exc.code, exc.reason, headers={"Retry-After": "1"})
    if exc.temporary:
        return _error(503, ERR_UNAVAILABLE, exc.reason, headers={"Retry-After": "1"})
    return _error(400, exc.code, exc.reason)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("admin API: unexpected error on %s %s", request.method, request.url.path)
    return _error(500, codes.ERR_INTERNAL, "internal error; the gateway log has the details")


# --- the request body cap ----------------------------------------------------------------------

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _BodyLimit:
    """Buffer each request body up to ``limit`` bytes within ``timeout`` seconds.

    Beyond the size the answer is ``413``, beyond the time ``408``; the app only ever sees
    complete, bounded bodies.
    """

    def __init__(
        self, app: _ASGIApp, limit: int = MAX_REQUEST_BYTES, timeout: float = BODY_TIMEOUT_S
    ) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"body: larger than the {self.limit}-byte limit"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await _error(413, ERR_PAYLOAD_TOO_LARGE, too_large, "body")(
                        scope, receive, send
                    )
                    return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.limit:
                        await _error(413, ERR_PAYLOAD_TOO_LARGE, too_large, "body")(
                            scope, receive, send
                        )
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            slow = f"body: not received within {self.timeout:g} s"
            await _error(408, ERR_TIMEOUT, slow, "body")(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> _Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _StoreGuard:
    """``503`` at once while a networked store does not answer (:class:`StoreWatch`), and for
    a request already waiting on it when it stops answering, instead of a hang."""

    _FREE = ("/healthz", "/metrics", "/docs", "/openapi.json")

    def __init__(self, app: _ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        watch = self.node.store_watch
        if watch is None or scope["type"] != "http" or scope["path"] in self._FREE:
            await self.app(scope, receive, send)
            return
        if not watch.ok:
            await _error(503, ERR_UNAVAILABLE, _STORE_LOST, headers={"Retry-After": "1"})(
                scope, receive, send
            )
            return
        answered = False

        async def guarded(message: _Message) -> None:
            if not answered:
                await send(message)

        work = asyncio.ensure_future(self.app(scope, receive, guarded))
        lost = asyncio.ensure_future(watch.lost.wait())
        try:
            await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if work.done():
            work.result()
            return
        # The request goes on (its commit may still land); the caller hears now.
        answered = True
        work.add_done_callback(_quiet)
        await _error(503, ERR_UNAVAILABLE, _STORE_LOST_WAITING, headers={"Retry-After": "1"})(
            scope, receive, send
        )


_STORE_LOST = "the store does not answer; retry later"
_STORE_LOST_WAITING = (
    "the store stopped answering while this request waited; what it asked may have been"
    " stored: retry with the same Idempotency-Key"
)


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("admin API: a request abandoned for an unreachable store ended: %s",
                 task.exception())  # fmt: skip


# --- the app -----------------------------------------------------------------------------------


def create_admin_app(node: Node) -> FastAPI:
    """Build the admin API for ``node`` (the CLI and the tests both use this factory)."""
    api = FastAPI(
        title="Tidings admin API",
        version=__version__,
        description=__doc__ or "",
        docs_url="/docs",
        redoc_url=None,
    )
    api.state.node = node
    api.add_exception_handler(RequestValidationError, _on_validation)
    api.add_exception_handler(StarletteHTTPException, _on_http)
    api.add_exception_handler(ApiError, _on_api_error)
    api.add_exception_handler(TidingsError, _on_tidings_error)
    api.add_exception_handler(Exception, _on_unexpected)
    api.add_middleware(_StoreGuard, node=node)
    api.add_middleware(_BodyLimit)

    @api.post(
        "/v1/messages",
        status_code=202,
        response_model=SendAccepted,
        responses=ERRORS,
        summary="Send a message now",
        tags=["messages"],
    )
    async def send_message(
        body: SendBody, key_app: Caller, request: Request, idempotency_key: IdempotencyKey = None
    ) -> SendAccepted:
        """Store a message for users or devices of one app and fan it out.

        Answers once the message and every delivery are durably stored. Banner limits
        (``banner_title_max``, ``banner_body_max``) apply to kinds ``banner`` and ``both``,
        inbox limits to ``inbox`` and ``both``.
        """
        app = resolve_app(node, body.app, key_app, "app")
        _check_lengths(app, body)
        node.engine.policy(app.id).check_category(body.category, "category")  # 422 naming it
        sent: SendAccepted = await once(
            request, app.id, idempotency_key, body, 202, lambda: _send(app, body)
        )
        return sent

    async def _send(app: AppConfig, body: SendBody) -> SendAccepted:
        result = await node.send(
            SendRequest(
                app=app.id,
                users=_unique(body.to.users or ()),
                devices=_unique(body.to.devices or ()),
                kind=body.kind,
                title=body.title,
                body=body.body,
                category=body.category,
                priority=body.priority,
                ttl=body.ttl,
                collapse_key=body.collapse_key,
                image=body.image,
                actions=tuple(Action(id=a.id, label=a.label, url=a.url) for a in body.actions),
                data=body.data,
                expire_after_read=body.expire_after_read,
            )
        )
        return SendAccepted(
            message_id=result.message_id,
            ids=[result.message_id],
            devices=result.devices,
            users=result.users,
            no_device=result.no_device,
            skipped=dict(result.skipped),
        )

    @api.delete(
        "/v1/messages/{message_id}",
        status_code=204,
        response_class=Response,
        responses=ERRORS,
        summary="Revoke a message",
        tags=["messages"],
    )
    async def revoke_message(message_id: PathId, target: QueryApp) -> Response:
        """Revoke a message: undelivered copies are dropped, devices remove it."""
        if not await node.revoke(target.id, message_id):
            raise ApiError(
                404,
                codes.ERR_NOT_FOUND,
                f"id: no message {message_id!r} in app {target.id!r}",
                field="id",
            )
        return Response(status_code=204)

    @api.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
    async def healthz() -> Any:
        """Health of this node: its store and its broker, and its connected devices (all
        apps). No key needed; ``503`` when the store does not answer."""
        store: Literal["ok", "unreachable"] = "ok"
        try:
            await asyncio.wait_for(node.store.ping(), HEALTH_TIMEOUT_S)
        except (TidingsError, TimeoutError):
            store = "unreachable"
        broker: Literal["in-process", "ok", "unreachable"] = "in-process"
        if not isinstance(node.broker, InProcessBroker):
            broker = "ok" if node.broker.healthy else "unreachable"
        feed: Literal["single-node", "ok", "behind"] = "single-node"
        if node.feed is not None:
            feed = "ok" if node.feed.healthy else "behind"
        ok = store == "ok" and broker != "unreachable" and feed != "behind"
        health = Health(
            status="ok" if ok else "degraded",
            connections=node.connected_devices(),
            node=node.node_id,
            store=store,
            broker=broker,
            feed=feed,
        )
        return health if store == "ok" else AsciiJSON(health.model_dump(), status_code=503)

    @api.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["operations"],
        summary="Prometheus metrics",
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text exposition. No key needed; carries counters only."""
        return PlainTextResponse(
            node.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # Both import this module: install them last.
    targeting_api.install(api, node)
    campaigns_api.install(api, node)
    clock_api.install(api, node)
    return api


def _unique(items: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _check_lengths(app: AppConfig, body: SendBody) -> None:
    title_max, body_max = ContentLimits.of(app).for_kind(body.kind)
    for field, text, limit in (("title", body.title, title_max), ("body", body.body, body_max)):
        if copy_length(text) > limit:  # what a reader counts: grapheme clusters
            raise ApiError(
                422,
                codes.ERR_INVALID_FIELD,
                f"{field}: {copy_length(text)} characters, the limit for kind {body.kind!r} in app "
                f"{app.id!r} is {limit}",
                field=field,
            )
