"""``tidings token``: mint a device token (works with the core install alone)."""

from __future__ import annotations

import argparse
import os

from tidings.cli.common import (
    Command,
    env,
    fail,
)

__all__ = ["COMMAND"]


def _configure_token(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="device id the token is for")
    p.add_argument("--user", help="user id the device is signed in as (optional)")
    p.add_argument("--app", help="app id (default: $TIDINGS_APP or demo)")
    p.add_argument(
        "--ttl", type=int, help="seconds until the token expires (default 30 days)", metavar="S"
    )
    p.add_argument(
        "--secret",
        help="app secret to sign with (default: $TIDINGS_APP_SECRET, the app's secret in "
        "--config, or dev-secret for the demo app)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file to read the app's secret from")


def _token_secret(args: argparse.Namespace, app: str) -> str | None:
    if args.secret:
        return str(args.secret)
    if os.environ.get("TIDINGS_APP_SECRET") and env("TIDINGS_APP", app) == app:
        return os.environ["TIDINGS_APP_SECRET"]
    path = args.config or os.environ.get("TIDINGS_CONFIG")
    if path:
        from tidings.server.config import load_config

        found = load_config(path=path, env={}).app(app)
        return found.secret if found else None
    from tidings.server.config import DEV_APP, DEV_SECRET

    return DEV_SECRET if app == DEV_APP else None


def _run_token(args: argparse.Namespace) -> int:
    from tidings.protocol.errors import ConfigError
    from tidings.protocol.tokens import DEFAULT_TOKEN_TTL, mint_token

    app = args.app or env("TIDINGS_APP", "demo")
    try:
        secret = _token_secret(args, app)
    except ConfigError as exc:
        return fail(f"configuration: {exc.reason}")
    if secret is None:
        return fail(
            f"no secret for app {app!r}: pass --secret, set TIDINGS_APP_SECRET or use --config"
        )
    try:
        token = mint_token(
            secret=secret,
            app=app,
            device=args.device,
            user=args.user,
            ttl=DEFAULT_TOKEN_TTL if args.ttl is None else args.ttl,
        )
    except ValueError as exc:
        return fail(str(exc))
    print(token)
    return 0


COMMAND = Command(
    name="token",
    help="mint a device token (for development and tests)",
    description="Print a signed device token for the gateway's handshake. In production "
    "your app's backend mints tokens with the app secret (tidings.protocol.tokens).",
    examples="""
        tidings token --device phone-1
        tidings token --device phone-1 --user alice --ttl 3600
        tidings token --app shop --secret "$SHOP_SECRET" --device d1
    """,
    configure=_configure_token,
    run=_run_token,
)
