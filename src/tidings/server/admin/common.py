"""What the admin API's modules share: the error shape and codes, strict input types and
checks, the caller's app (bearer key), requests made once (``Idempotency-Key``).

:mod:`.api` builds the app from these and the route modules (:mod:`.campaigns_api`,
:mod:`.targeting_api`, :mod:`.clock_api`); none of them imports another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError

from tidings.protocol import codes, limits
from tidings.protocol.errors import InvalidField, TidingsError
from tidings.protocol.frames import check_json
from tidings.server.config import AppConfig
from tidings.server.node import Node

__all__ = [
    "BODY_TIMEOUT_S",
    "ERRORS",
    "ERR_CONFLICT",
    "ERR_INVALID_JSON",
    "ERR_METHOD_NOT_ALLOWED",
    "ERR_PAYLOAD_TOO_LARGE",
    "ERR_TIMEOUT",
    "ERR_UNAVAILABLE",
    "HEALTH_TIMEOUT_S",
    "IDEMPOTENCY_LEASE_S",
    "JSON_OBJECT_SCHEMA",
    "MAX_DOCUMENT_DEPTH",
    "MAX_REQUEST_BYTES",
    "MAX_TARGETS",
    "MAX_TTL_S",
    "MULTI_LINE",
    "ONE_LINE",
    "STATUS_CODES",
    "ApiError",
    "AppId",
    "AppQuery",
    "AsciiJSON",
    "Body",
    "Caller",
    "ErrorBody",
    "ErrorDetail",
    "ErrorInfo",
    "IdempotencyKey",
    "Ident",
    "ImageUrl",
    "Integral",
    "Model",
    "PathId",
    "QueryApp",
    "Title",
    "check_document",
    "check_url",
    "field_error",
    "json_data",
    "json_object",
    "non_null",
    "once",
    "one_line",
    "resolve_app",
]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 256 * 1024
"""Security limit: largest admin request body, in bytes; larger bodies get ``413``."""

BODY_TIMEOUT_S = 30.0
"""Security limit: seconds a client may take to send its whole request body (slow uploads)."""

MAX_TARGETS = 10_000
"""Security limit: most users or devices named in one direct send (use a segment for more)."""

MAX_TTL_S = 30 * 24 * 3600
"""Longest message time-to-live, in seconds (30 days)."""

_APP_ID_MAX = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HTTP_URL = re.compile(r"^https?://[^\s]+$")

# Codes used only by the HTTP API (the rest come from tidings.protocol.codes).
ERR_INVALID_JSON = "invalid_json"
ERR_PAYLOAD_TOO_LARGE = "payload_too_large"
ERR_TIMEOUT = "timeout"
ERR_METHOD_NOT_ALLOWED = "method_not_allowed"
ERR_UNAVAILABLE = "unavailable"
ERR_CONFLICT = "conflict"

STATUS_CODES = {
    400: ERR_INVALID_JSON,
    401: codes.ERR_UNAUTHORIZED,
    403: codes.ERR_FORBIDDEN,
    404: codes.ERR_NOT_FOUND,
    405: ERR_METHOD_NOT_ALLOWED,
    408: ERR_TIMEOUT,
    409: ERR_CONFLICT,
    413: ERR_PAYLOAD_TOO_LARGE,
    422: codes.ERR_INVALID_FIELD,
    503: ERR_UNAVAILABLE,
}


class ApiError(TidingsError):
    """An error the admin API answers with ``status`` and the documented JSON shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message, code=code)
        self.status = status
        self.field = field
        self.retry_after = retry_after


# --- input models ------------------------------------------------------------------------------


def field_error(field: str, message: str) -> PydanticCustomError:
    # The "field" context lets the error handler name a path deeper than pydantic's loc.
    return PydanticCustomError("invalid_field", "{message}", {"field": field, "message": message})


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def one_line(value: str) -> str:
    _utf8(value)
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _multi_line(value: str) -> str:
    _utf8(value)
    if _CONTROL_BUT_NEWLINES.search(value):
        raise ValueError("must not contain control characters other than tab and newline")
    return value


def _http_url(value: str) -> str:
    one_line(value)
    if not _HTTP_URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def check_url(value: str) -> str:
    one_line(value)
    if value.lower().lstrip().startswith(("javascript:", "data:", "vbscript:")):
        raise ValueError("must not be a javascript:, data: or vbscript: URL")
    return value


def json_object(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A validator for a free-form JSON object field (``data``, ``attrs``, ``props``)."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        try:
            checked = check_json(value, name)
            # check_json bounds shape and size; text must also survive UTF-8 encoding.
            json.dumps(checked, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except InvalidField as exc:
            raise field_error(exc.field, exc.reason) from None
        except UnicodeEncodeError:
            problem = f"{name}: text must be valid Unicode (no lone surrogates)"
            raise field_error(name, problem) from None
        return value

    return check


def _json_value_schema(depth: int) -> dict[str, Any]:
    """What :func:`~tidings.protocol.frames.check_json` accepts at ``depth``, as JSON Schema
    (unrolled: the nesting limit is part of the contract, and JSON Schema cannot count)."""
    kinds: list[dict[str, Any]] = [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "integer", "minimum": -limits.MAX_INT, "maximum": limits.MAX_INT},
        {"type": "number"},
        {"type": "string", "maxLength": limits.MAX_TEXT_LEN},
    ]
    if depth < limits.MAX_DEPTH:
        inner = _json_value_schema(depth + 1)
        kinds += [
            {"type": "array", "maxItems": limits.MAX_KEYS, "items": inner},
            _json_object_schema(depth, inner),
        ]
    return {"anyOf": kinds}


def _json_object_schema(depth: int, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "maxProperties": limits.MAX_KEYS,
        "propertyNames": {"minLength": 1, "maxLength": limits.MAX_NAME_LEN},
        "additionalProperties": values or _json_value_schema(depth + 1),
    }


JSON_OBJECT_SCHEMA = _json_object_schema(0)
"""The schema of ``data``, ``attrs`` and ``props``: free-form, within the wire's limits."""

json_data = json_object("data")


MAX_DOCUMENT_DEPTH = 32
"""Security limit: deepest nesting of a free-form JSON document (a campaign, a tag rule)."""


def check_document(value: Any, field: str, depth: int = 0) -> None:
    """Refuse what JSON parsing lets through but nothing downstream can store or send.

    Non-finite numbers, lone surrogates and absurd nesting answer ``422`` naming the path; the
    document's meaning is checked by its own parser (``Campaign.from_json``, ``TagRule``...).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, codes.ERR_INVALID_FIELD, f"{field}: must be a finite number",
                       field=field)  # fmt: skip
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(422, codes.ERR_INVALID_FIELD,
                           f"{field}: must be valid Unicode text (no lone surrogates)",
                           field=field) from None  # fmt: skip
        return
    if not isinstance(value, dict | list):
        return
    if depth >= MAX_DOCUMENT_DEPTH:
        raise ApiError(422, codes.ERR_INVALID_FIELD,
                       f"{field}: nests deeper than {MAX_DOCUMENT_DEPTH} levels",
                       field=field)  # fmt: skip
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_document(item, f"{field}[{i}]", depth + 1)
        return
    for key, item in value.items():
        where = f"{field}.{key}" if field else str(key)
        check_document(key, f"{field or 'body'} key", depth + 1)
        check_document(item, where, depth + 1)


def _integral(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; so does this API (but never "3" or true).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
"""For an integer in a body: ``3`` or ``3.0`` (put after the bounds, so the schema has them)."""


ONE_LINE = {"pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
"""The schema's word for :func:`one_line` (no control characters), so clients know it too."""
MULTI_LINE = {"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"}
"""The schema's word for :func:`_multi_line` (tab and newlines allowed)."""

AppId = Annotated[
    str,
    Field(min_length=1, max_length=_APP_ID_MAX, json_schema_extra=ONE_LINE),
    AfterValidator(one_line),
]
Ident = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_ID_LEN, json_schema_extra=ONE_LINE),
    AfterValidator(one_line),
]
Title = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_TITLE_LEN, json_schema_extra=ONE_LINE),
    AfterValidator(one_line),
]
ImageUrl = Annotated[
    str,
    Field(max_length=limits.MAX_URL_LEN, json_schema_extra={"pattern": "^https?://"}),
    AfterValidator(_http_url),
]
Body = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_BODY_LEN, json_schema_extra=MULTI_LINE),
    AfterValidator(_multi_line),
]

PathId = Annotated[
    str,
    Path(min_length=1, max_length=limits.MAX_ID_LEN, json_schema_extra=ONE_LINE),
    AfterValidator(one_line),
]
"""An id in the URL path (campaign, user, tag rule)."""
AppQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=_APP_ID_MAX,
        description="The app; default: the app whose admin key authorised the request.",
    ),
]
"""The ``?app=`` of a request without a body (optional: the key names its app)."""


class Model(BaseModel):
    # Strict: JSON types must match (no "5" for 5, no true for 1); unknown fields are typos.
    model_config = ConfigDict(strict=True, extra="forbid")


def non_null(*names: str, **extra: Any) -> Callable[[dict[str, Any]], None]:
    """Schema hook: ``names`` are optional but never ``null`` when given."""

    def hook(schema: dict[str, Any]) -> None:
        for name in names:
            prop = schema["properties"][name]
            options = prop.pop("anyOf", None)
            if options is not None:
                for key, value in next(o for o in options if o.get("type") != "null").items():
                    prop.setdefault(key, value)  # what the field itself says comes first
        schema.update(extra)

    return hook


class ErrorDetail(BaseModel):
    """One problem with the request."""

    field: str | None
    message: str


class ErrorInfo(BaseModel):
    """What went wrong, machine- and human-readable."""

    code: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The shape of every error response."""

    error: ErrorInfo


class AsciiJSON(JSONResponse):
    # Escaped output can never fail to encode, whatever text ends up in a message.
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


# --- authentication ----------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="The app's admin key.")


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AppConfig:
    """The app whose admin key authorised this request (``401`` if none)."""
    if credentials is None:
        raise ApiError(
            401,
            codes.ERR_UNAUTHORIZED,
            "authorization: send 'Authorization: Bearer <admin key>'",
            field="authorization",
        )
    node: Node = request.app.state.node
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    found = None
    # Compare against every key in constant time, so timing reveals neither a key nor a prefix.
    for app in node.config.apps:
        if hmac.compare_digest(given, app.admin_key.encode("utf-8")):
            found = app
    if found is None:
        raise ApiError(
            401,
            codes.ERR_UNAUTHORIZED,
            "authorization: unknown admin key",
            field="authorization",
        )
    return found


Caller = Annotated[AppConfig, Depends(_caller)]


def _target(request: Request, key_app: Caller, app: AppQuery = None) -> AppConfig:
    """The app a request without a body acts on: ``?app=``, or the key's own app."""
    return resolve_app(request.app.state.node, app or key_app.id, key_app, "app")


QueryApp = Annotated[AppConfig, Depends(_target)]
"""The app of a request without a body, checked against the caller's key."""


def resolve_app(node: Node, app_id: str, key_app: AppConfig, field: str) -> AppConfig:
    """The app named in the request, if the caller's key may act on it (``403``/``404``)."""
    target = node.config.app(app_id)
    if target is None:
        raise ApiError(404, codes.ERR_NOT_FOUND, f"{field}: no app {app_id!r}", field=field)
    if target.id != key_app.id:
        raise ApiError(
            403,
            codes.ERR_FORBIDDEN,
            f"{field}: this admin key cannot act on app {app_id!r}",
            field=field,
        )
    return target


# --- requests made once ------------------------------------------------------------------------

HEALTH_TIMEOUT_S = 1.0
"""How long ``/healthz`` waits for the store to answer."""

IDEMPOTENCY_LEASE_S = 60.0
"""How long a first attempt holds its key before a retry may take over (it crashed)."""

_KEY = re.compile(r"[\x21-\x7e]{1,255}")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        json_schema_extra={"pattern": "^[!-~]{1,255}$"},
        description="Make this request once: a retry with the same key and request gets the"
        " first answer and does nothing again (kept for a day).",
    ),
]


async def once(
    request: Request,
    app: str,
    key: str | None,
    fingerprint: Any,
    status: int,
    work: Callable[[], Awaitable[Any]],
) -> Any:
    """Run ``work`` once per idempotency ``key``; a retry gets the stored first answer.

    ``fingerprint`` is what was asked (the body); with the method and path it must match the
    first request's. Without a key, ``work`` just runs.
    """
    if key is None:
        return await work()
    if not _KEY.fullmatch(key):
        raise ApiError(422, codes.ERR_INVALID_FIELD, "Idempotency-Key: must be 1-255 visible"
                       " ASCII characters", field="Idempotency-Key")  # fmt: skip
    node: Node = request.app.state.node
    asked = json.dumps([request.method, request.url.path, jsonable_encoder(fingerprint)],
                       sort_keys=True, separators=(",", ":"))  # fmt: skip
    digest = hashlib.sha256(asked.encode()).hexdigest()
    found = await node.store.begin_request(app, key, digest, node.clock(), IDEMPOTENCY_LEASE_S)
    if found is not None:
        if found.fingerprint != digest:
            raise ApiError(422, codes.ERR_INVALID_FIELD, "Idempotency-Key: already used for a"
                           " different request; use a new key for a new request",
                           field="Idempotency-Key")  # fmt: skip
        if found.status is None or found.answer is None:
            raise ApiError(409, ERR_CONFLICT, "Idempotency-Key: the first request with this key"
                           " is still running; retry in a moment",
                           field="Idempotency-Key", retry_after=1)  # fmt: skip
        return AsciiJSON(json.loads(found.answer), status_code=found.status,
                          headers={"Idempotent-Replayed": "true"})  # fmt: skip
    try:
        result = await work()
    except BaseException:
        await node.store.abandon_request(app, key)  # nothing was done: a retry may run
        raise
    await node.store.finish_request(app, key, status, json.dumps(jsonable_encoder(result)))
    return result


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": desc}
    for status, desc in (
        (400, "The body is not UTF-8 JSON."),
        (401, "Missing or unknown admin key."),
        (403, "The admin key belongs to another app."),
        (404, "No such app or object."),
        (413, "The body is larger than the limit."),
        (422, "A field is invalid; `error.field` names it."),
    )
}
