"""What PROTOCOL.md promises about ids, token lifetimes, nesting, frame sides and request ids,
checked against the sans-I/O code (§4, §6, §9, §11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import msgpack
import pytest

from tidings.protocol import codes, limits
from tidings.protocol.codec import decode_client, decode_server
from tidings.protocol.errors import AuthError, InvalidField, UnexpectedFrame, UnknownFrame
from tidings.protocol.frames import Ping
from tidings.protocol.tokens import mint_token, verify_token

SECRET = "s3cret-s3cret"
NOW = 1_700_000_000
MAX_TOKEN_TTL = getattr(limits, "MAX_TOKEN_TTL", 366 * 24 * 3600)


def signed(payload: dict[str, Any], secret: str = SECRET) -> str:
    """A correctly signed token carrying any payload (what a careless backend could mint)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())}"


# --- tokens (§11) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"usr": "u\x001"}, "usr"),
        ({"usr": "u1\n"}, "usr"),
        ({"usr": "\ud800"}, "usr"),
        ({"dev": "d\x00"}, "dev"),
        ({"dev": "d\x7f"}, "dev"),
        ({"exp": 10**30}, "expires more than"),
        ({"exp": NOW + MAX_TOKEN_TTL + 1}, "expires more than"),
        ({"exp": True}, "expiry"),
    ],
)
def test_a_signed_token_with_a_bad_id_or_an_endless_expiry_is_unauthorized(
    claims: dict[str, Any], problem: str
) -> None:
    payload = {"app": "shop", "dev": "d1", "usr": "u1", "exp": NOW + 60, "iat": NOW, **claims}
    with pytest.raises(AuthError, match=problem) as info:
        verify_token(signed(payload), secret=SECRET, app="shop", now=NOW)
    assert info.value.code == codes.ERR_UNAUTHORIZED


def test_a_token_at_the_longest_lifetime_is_accepted() -> None:
    payload = {"app": "shop", "dev": "d1", "exp": NOW + MAX_TOKEN_TTL, "iat": NOW}
    claims = verify_token(signed(payload), secret=SECRET, app="shop", now=NOW)
    assert claims.expires_at == NOW + MAX_TOKEN_TTL and claims.user is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": MAX_TOKEN_TTL + 1},
        {"ttl": 0},
        {"user": "u\x00"},
        {"device": "d\n"},
        {"device": "x" * (limits.MAX_ID_LEN + 1)},
    ],
)
def test_mint_token_refuses_what_the_gateway_would_refuse(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"secret": SECRET, "app": "shop", "device": "d1", "now": NOW, **kwargs}
    with pytest.raises(ValueError):
        mint_token(**args)


def test_check_id_is_the_admin_rule_for_ids() -> None:
    from tidings.protocol.frames import check_id

    assert check_id("user-42 ü", "user") == "user-42 ü"
    for bad in ("", "a\x00", "tab\tbed", "x" * 129, "\udfff", 7):
        with pytest.raises(InvalidField, match=r"^user"):
            check_id(bad, "user")


# --- nesting: one number (§6) --------------------------------------------------------------------


def nested(levels: int) -> Any:
    """A free-form value ``levels`` deep, the value itself being level 1."""
    value: Any = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def events_with_props(props: Any) -> bytes:
    event = {"id": "e", "name": "n", "ts": 1, "props": props}
    return msgpack.packb({"t": "events", "rid": 5, "events": [event]})


def test_free_form_values_nest_exactly_max_depth_levels() -> None:
    assert limits.MAX_DEPTH == 4
    decode_client(events_with_props(nested(limits.MAX_DEPTH)))
    with pytest.raises(InvalidField, match=r"^events\.events\[0\]\.props") as info:
        decode_client(events_with_props(nested(limits.MAX_DEPTH + 1)))
    assert info.value.code == codes.ERR_INVALID_FIELD


def test_the_deepest_valid_frame_sets_the_frame_depth_limit() -> None:
    # events → events[] → event → props, then MAX_DEPTH levels: the deepest valid frame.
    assert limits.MAX_FRAME_DEPTH == limits.FIXED_DEPTH + limits.MAX_DEPTH == 7
    decode_client(events_with_props(nested(limits.MAX_DEPTH)))
    # Unknown keys are ignored, but held to the same depth: invalid_field too.
    decode_client(msgpack.packb({"t": "ping", "later": nested(limits.MAX_FRAME_DEPTH - 1)}))
    with pytest.raises(InvalidField, match=r"^frame: nests deeper than 7") as info:
        decode_client(msgpack.packb({"t": "ping", "later": nested(limits.MAX_FRAME_DEPTH)}))
    assert info.value.code == codes.ERR_INVALID_FIELD
    deep_in_event = {"id": "e", "name": "n", "ts": 1, "later": nested(limits.MAX_DEPTH + 1)}
    with pytest.raises(InvalidField, match=r"^frame"):
        decode_client(msgpack.packb({"t": "events", "rid": 1, "events": [deep_in_event]}))


# --- frame types of the other side (§9) ----------------------------------------------------------


@pytest.mark.parametrize("t", ["deliver", "welcome", "ok", "error", "revoke", "inbox", "goaway"])
def test_a_server_frame_from_a_client_is_unexpected_not_unknown(t: str) -> None:
    with pytest.raises(UnexpectedFrame) as info:
        decode_client(msgpack.packb({"t": t}))
    assert info.value.code == codes.ERR_UNEXPECTED_FRAME


@pytest.mark.parametrize("t", ["hello", "events", "ack", "receipt", "prefs", "identify"])
def test_a_client_frame_from_the_server_is_unexpected_not_unknown(t: str) -> None:
    with pytest.raises(UnexpectedFrame):
        decode_server(msgpack.packb({"t": t}))


def test_ping_and_pong_go_both_ways_and_unknown_types_stay_unknown() -> None:
    assert decode_client(msgpack.packb({"t": "ping", "ts": 1})) == Ping(ts=1)
    assert decode_server(msgpack.packb({"t": "ping", "ts": 1})) == Ping(ts=1)
    with pytest.raises(UnknownFrame):
        decode_client(msgpack.packb({"t": "teleport"}))


# --- request ids on errors (§4) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "rid"),
    [
        ({"t": "events", "rid": 9, "events": "nope"}, 9),
        ({"t": "receipt", "rid": 4, "id": "m", "kind": "seen", "ts": 1}, 4),
        ({"t": "prefs", "rid": 2, "categories": {"Spam!": True}}, 2),
        ({"t": "identify", "rid": 6, "attrs": nested(6)}, 6),
        ({"t": "events", "rid": -1, "events": []}, None),  # not a readable rid
        ({"t": "events", "rid": True, "events": []}, None),
        ({"t": "ack", "seq": -1, "rid": 3}, None),  # not a request
    ],
)
def test_an_invalid_request_carries_its_rid_when_readable(
    frame: dict[str, Any], rid: int | None
) -> None:
    with pytest.raises(InvalidField) as info:
        decode_client(msgpack.packb(frame))
    assert info.value.rid == rid
