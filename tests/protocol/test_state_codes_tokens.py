"""The phase table, close-code policy, backoff and device tokens."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.protocol import codes
from tidings.protocol.backoff import Backoff, backoff_delay
from tidings.protocol.errors import AuthError, UnexpectedFrame
from tidings.protocol.frames import (
    Ack,
    Deliver,
    Error,
    Events,
    GoAway,
    Hello,
    Message,
    Ping,
    Welcome,
)
from tidings.protocol.state import CLIENT_ALLOWED, SERVER_ALLOWED, Phase, advance
from tidings.protocol.tokens import mint_token, peek_app, verify_token

WELCOME = Welcome(session="s", device="d", user=None, server_time=1, heartbeat_ms=1)
DELIVER = Deliver(seq=1, msg=Message(id="m", kind="inbox", title="", body=""))


@pytest.mark.parametrize(
    ("table", "phase", "frame", "after"),
    [
        (CLIENT_ALLOWED, Phase.HANDSHAKE, Hello(token="t"), Phase.OPEN),
        (CLIENT_ALLOWED, Phase.HANDSHAKE, Events(rid=1, events=()), None),
        (CLIENT_ALLOWED, Phase.OPEN, Hello(token="t"), None),
        (CLIENT_ALLOWED, Phase.OPEN, Ack(seq=1), Phase.OPEN),
        (CLIENT_ALLOWED, Phase.OPEN, WELCOME, None),
        (SERVER_ALLOWED, Phase.HANDSHAKE, WELCOME, Phase.OPEN),
        (SERVER_ALLOWED, Phase.HANDSHAKE, Error(code="unauthorized", message=""), Phase.HANDSHAKE),
        (SERVER_ALLOWED, Phase.HANDSHAKE, DELIVER, None),
        (SERVER_ALLOWED, Phase.OPEN, DELIVER, Phase.OPEN),
        (SERVER_ALLOWED, Phase.OPEN, GoAway(), Phase.CLOSED),
        (SERVER_ALLOWED, Phase.CLOSED, Ping(), None),
    ],
)
def test_the_phase_table(table: dict, phase: Phase, frame: object, after: Phase | None) -> None:  # type: ignore[type-arg]
    if after is None:
        with pytest.raises(UnexpectedFrame):
            advance(table, phase, frame)  # type: ignore[arg-type]
    else:
        assert advance(table, phase, frame) is after  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (None, True), (1000, True), (1001, True), (1006, True), (1009, True), (1011, True),
        (codes.CLOSE_UNAUTHORIZED, False), (codes.CLOSE_TOKEN_EXPIRED, False),
        (codes.CLOSE_FORBIDDEN, False), (codes.CLOSE_BAD_FRAME, False),
        (codes.CLOSE_UNSUPPORTED, False), (codes.CLOSE_REPLACED, False),
        (codes.CLOSE_SLOW_CONSUMER, True), (codes.CLOSE_RATE_LIMITED, True),
        (codes.CLOSE_DRAINING, True), (codes.CLOSE_HEARTBEAT_TIMEOUT, True),
        (codes.CLOSE_INTERNAL, True), (4999, True),
    ],
)  # fmt: skip
def test_close_codes_say_whether_to_reconnect(code: int | None, reconnect: bool) -> None:
    assert codes.should_reconnect(code) is reconnect
    assert codes.is_terminal(code) is (not reconnect)


def test_backoff_windows_double_then_cap_with_full_jitter() -> None:
    assert [backoff_delay(a, base=0.5, cap=30, rand=1.0) for a in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0,
    ]  # fmt: skip
    assert backoff_delay(3, rand=0.0) == 0.0
    assert backoff_delay(10**6, rand=0.999) < 30
    b = Backoff()
    delays = [b.next_delay() for _ in range(10)]
    assert all(0 <= d <= 30 for d in delays) and b.attempt == 10
    b.reset()
    assert b.attempt == 0


def test_tokens_round_trip_and_refuse_forgery_expiry_and_other_apps() -> None:
    token = mint_token(secret="s3cret-s3cret", app="shop", device="d1", user="u1", ttl=60, now=1000)
    claims = verify_token(token, secret="s3cret-s3cret", app="shop", now=1001)
    assert (claims.app, claims.device, claims.user, claims.expires_at) == ("shop", "d1", "u1", 1060)
    assert peek_app(token) == "shop"
    with pytest.raises(AuthError) as expired:
        verify_token(token, secret="s3cret-s3cret", app="shop", now=1060)
    assert expired.value.code == "token_expired"
    with pytest.raises(AuthError, match="signature"):
        verify_token(token, secret="another-secret", app="shop", now=1001)
    with pytest.raises(AuthError, match="another app"):
        verify_token(token, secret="s3cret-s3cret", app="blog", now=1001)
    body, sig = token.split(".")
    with pytest.raises(AuthError):
        verify_token(body[:-2] + "xx." + sig, secret="s3cret-s3cret", app="shop", now=1001)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_token_is_refused_with_auth_error(text: str) -> None:
    with pytest.raises(AuthError):
        verify_token(text, secret="s3cret-s3cret", app="shop")
