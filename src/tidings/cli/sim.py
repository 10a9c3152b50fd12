"""``tidings sim``: the simulator TUI over a gateway and a fleet of SDK devices."""

from __future__ import annotations

import argparse

from tidings.cli.common import (
    Command,
    fail,
    missing_server_extra,
)

__all__ = ["COMMAND"]


def _configure_sim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="device worker processes (default 2)")
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per real second (default 60: an hour a minute; 1: real time;"
        " 3600: an hour a second)",
    )
    p.add_argument(
        "--start",
        choices=("morning", "now"),
        default="morning",
        help="when simulated time starts: morning (default) is the next 01:00 UTC, 09:00 in"
        " Shanghai, when most personas are awake and out of their quiet hours; now is the real"
        " time",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the devices' lives")


def _run_sim(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.workers < 1:
        return fail("--devices and --workers must be at least 1")
    from tidings.protocol.simtime import check_speed

    try:
        check_speed(args.speed)
    except ValueError as exc:
        return fail(f"--{exc}")
    try:
        from tidings.simulator.app import make_app
        from tidings.simulator.engine.sim import SimEngine
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "textual":
            return fail("tidings sim needs the simulator extra: pip install 'tidings[simulator]'")
        return missing_server_extra(exc)
    engine = SimEngine(args.devices, args.workers, speed=args.speed, seed=args.seed,
                       morning=args.start == "morning")  # fmt: skip
    make_app(engine=engine).run()
    return 0


COMMAND = Command(
    name="sim",
    help="run the simulator TUI: a gateway and N simulated devices on this machine",
    description="Start a gateway on SQLite and N real SDK devices in worker processes, and "
    "show a live dashboard (devices connected, events and deliveries per second, latency "
    "percentiles and sparklines), a device browser with search whose device view shows the "
    "device's inbox as its SDK holds it, its quiet hours and the decision log, campaigns "
    "with their funnels (s start, p pause, x cancel), and a composer with a live audience "
    "preview of the segment text. Keys: F1 dashboard, F2 devices, F3 campaigns, F4 "
    "composer (also 1-4, d, c), F5 or ctrl+r create and start, F6 send to all, q quit (ctrl+q "
    "in the composer); the "
    "mouse works too. The gateway runs on a simulated clock that the devices follow "
    "(--speed; F7 pause/resume, F8 1x, F9 60x, F10 3600x; GET/PUT /v1/clock moves it from "
    "outside), and every device lives its persona's days: sessions in its active hours, "
    "carts, purchases, reactions to messages.",
    examples="""
        tidings sim
        tidings sim --devices 5000 --workers 2
        tidings sim --speed 3600          # an hour of the devices' lives a second
    """,
    configure=_configure_sim,
    run=_run_sim,
)
