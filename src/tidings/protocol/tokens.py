"""Signed device tokens (PROTOCOL.md §Tokens).

A token is ``base64url(payload) "." base64url(HMAC-SHA256(app secret, base64url(payload)))``
where the payload is compact JSON ``{"app", "dev", "usr"?, "exp", "iat"}`` (times in Unix
seconds). An app's backend mints tokens with its app secret; the gateway verifies them before a
session exists. Stdlib only, so any backend can mint without the server installed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from tidings.protocol import codes, limits
from tidings.protocol.errors import AuthError, InvalidField
from tidings.protocol.frames import check_id

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_TOKEN_TTL",
    "TokenClaims",
    "mint_token",
    "peek_app",
    "verify_token",
]

DEFAULT_TOKEN_TTL = 30 * 24 * 3600
"""Seconds a minted token stays valid by default (30 days)."""

MAX_TOKEN_TTL = limits.MAX_TOKEN_TTL
"""Security limit: the longest a token may stay valid; a later expiry is refused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """What a valid token says about the device."""

    app: str
    device: str
    user: str | None
    expires_at: int
    issued_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode("ascii"), hashlib.sha256).digest())


def mint_token(
    *,
    secret: str,
    app: str,
    device: str,
    user: str | None = None,
    ttl: int = DEFAULT_TOKEN_TTL,
    now: float | None = None,
) -> str:
    """Mint a device token signed with ``secret``.

    Raises:
        ValueError: an id that the gateway would refuse (PROTOCOL.md §11), or a ``ttl`` that
            is not 1..``MAX_TOKEN_TTL`` seconds.
    """
    for name, value in (("app", app), ("device", device), ("user", user or "x")):
        try:
            check_id(value, name)
        except InvalidField as exc:
            raise ValueError(exc.reason) from None
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"ttl must be 1..{MAX_TOKEN_TTL} seconds, got {ttl}")
    issued = int(time.time() if now is None else now)
    payload: dict[str, object] = {"app": app, "dev": device, "exp": issued + ttl, "iat": issued}
    if user is not None:
        payload["usr"] = user
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_sign(secret, body)}"


def _payload(token: str) -> tuple[str, str, dict[str, object]]:
    if not isinstance(token, str) or len(token) > limits.MAX_TOKEN_LEN or token.count(".") != 1:
        raise AuthError("token: not a Tidings device token")
    body, sig = token.split(".")
    try:
        payload = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        raise AuthError("token: payload is not base64url JSON") from None
    if not isinstance(payload, dict):
        raise AuthError("token: payload is not a JSON object")
    return body, sig, payload


def peek_app(token: str) -> str:
    """Return the app id a token claims, unverified (to pick the secret to verify with)."""
    _, _, payload = _payload(token)
    app = payload.get("app")
    if not isinstance(app, str) or not app:
        raise AuthError("token: no app")
    return app


def _claim_id(value: object, name: str) -> str:
    # The same rule as every other id (frames, admin API): an id the gateway accepts here must
    # be one the rest of the system can store, name and look up.
    try:
        return check_id(value, f"token: {name}")
    except InvalidField as exc:
        raise AuthError(exc.reason) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_token(token: str, *, secret: str, app: str, now: float | None = None) -> TokenClaims:
    """Verify signature, app, ids and expiry (PROTOCOL.md §11); return the claims.

    Raises:
        AuthError: with code ``unauthorized`` (malformed, forged, other app, bad id, expiry
            more than ``MAX_TOKEN_TTL`` ahead) or ``token_expired``.
    """
    body, sig, payload = _payload(token)
    if not hmac.compare_digest(sig, _sign(secret, body)):
        raise AuthError("token: signature does not match this app's secret")
    if payload.get("app") != app:
        raise AuthError("token: issued for another app")
    device = _claim_id(payload.get("dev"), "dev")
    user = payload.get("usr")
    if user is not None:
        user = _claim_id(user, "usr")
    exp, iat = payload.get("exp"), payload.get("iat", 0)
    if not _is_int(exp) or not _is_int(iat):
        raise AuthError("token: bad expiry")
    assert isinstance(exp, int) and isinstance(iat, int)
    at = time.time() if now is None else now
    if exp > at + MAX_TOKEN_TTL:
        raise AuthError(
            f"token: expires more than {MAX_TOKEN_TTL // 86400} days ahead; mint one that"
            " expires sooner"
        )
    if exp <= at:
        raise AuthError("token: expired; mint a new one", code=codes.ERR_TOKEN_EXPIRED)
    return TokenClaims(app=app, device=device, user=user, expires_at=exp, issued_at=iat)
