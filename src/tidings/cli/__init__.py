"""The ``tidings`` command line (also ``python -m tidings``).

Each subcommand is one module here with one :class:`~tidings.cli.common.Command`: a name, help
with examples, a function that adds its options and one that runs it and returns the exit
code; :mod:`tidings.cli.common` holds what they share (admin API options and errors, the
renderers). Runners import what they need when they run, so ``tidings token`` works with only
the core install and ``tidings --help`` stays fast. To add a subcommand, write its module and
add its ``COMMAND`` to :data:`COMMANDS` (or call :func:`register`).

Exit codes: ``0`` success, ``1`` the operation failed (an API error, gateway unreachable),
``2`` bad usage or configuration (including a port already in use).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence

from tidings import __version__
from tidings.cli import campaign, demo, gateway, loadtest, segment, send, sim, token, user, why
from tidings.cli.common import Command

__all__ = ["COMMANDS", "Command", "build_parser", "main", "register"]

COMMANDS: list[Command] = [
    gateway.COMMAND,
    token.COMMAND,
    send.COMMAND,
    segment.COMMAND,
    campaign.COMMAND,
    why.COMMAND,
    user.COMMAND,
    demo.COMMAND,
    loadtest.COMMAND,
    loadtest.WORKER_COMMAND,
    sim.COMMAND,
]
"""Every subcommand, in the order ``tidings --help`` lists them."""


def register(command: Command) -> Command:
    """Add a subcommand (names are unique; the later registration wins)."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != command.name]
    COMMANDS.append(command)
    return command


def build_parser() -> argparse.ArgumentParser:
    """The ``tidings`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Tidings: self-hosted in-app messaging. Run a subcommand with --help for "
        "its options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tidings {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=textwrap.fill(command.description, width=78),
            epilog="examples:\n" + textwrap.indent(textwrap.dedent(command.examples).strip(), "  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args._run
    try:
        code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``tidings user show u | head``): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1  # what Python itself answers to EPIPE
    return code
