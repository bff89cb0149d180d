"""`crackd`: the device command line. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from edge import __version__

# Modules that add subcommands: each has `register(subparsers)`; a command's
# handler returns the process exit code (0 ok, 1 some input failed, 2 usage/config error).
COMMAND_MODULES = ("edge.cli.infer", "edge.cli.daemon", "edge.cli.events", "edge.cli.models", "edge.cli.homeassistant")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crackd",
        description="Crack inspection on the edge: infer, benchmark, run the daemon, manage models and records.",
    )
    parser.add_argument("--version", action="version", version=f"crackd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader stopped early (`crackd events list | head`): end quietly like any Unix filter killed by SIGPIPE,
        # and point stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
