"""``tidings demo``: an embedded gateway and one example device in this terminal."""

from __future__ import annotations

import argparse

from tidings.cli.common import (
    Command,
)

__all__ = ["COMMAND"]


def _configure_demo(p: argparse.ArgumentParser) -> None:
    from tidings import demo

    demo.configure(p)


def _run_demo(args: argparse.Namespace) -> int:
    from tidings import demo

    return demo.run(args)


COMMAND = Command(
    name="demo",
    help="run a gateway with one example device that shows banners and its inbox",
    description="Start an embedded gateway and admin API on SQLite with the development "
    "app, and one real SDK device whose banners and inbox are printed in this terminal. "
    "Send it messages from another terminal with `tidings send`.",
    examples="""
        tidings demo
        tidings demo --quiet-hours 22:00-08:00
        tidings demo --port 0 --admin-port 0 --seconds 30
    """,
    configure=_configure_demo,
    run=_run_demo,
)
