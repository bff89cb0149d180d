"""What every command line of the project shares: the usage error, the one-line failure, the common options, JSON out.

`crackd` (edge.cli.*), `crack-train` (trainer.cli) and `crack-deploy` (deploy.cli) all fail the same way: one line
on stderr naming the command and what was wrong, and an exit code (2 for bad usage or configuration), never a
traceback. The options several commands take (`--state-dir`, `--config`, `--db`, `--json`) are declared here once,
so the same flag means the same thing everywhere. Only the standard library, edge.layout and edge.state_location are
imported: the trainer and the deploy tool use this module too, and edge never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from edge.state_location import RULE, StateLocation, locate_state

EXIT_OK = 0
EXIT_FAILED = 1  # a record, bundle, host or input failed
EXIT_USAGE = 2  # bad flags or configuration

STATE_DIR_HELP = f"daemon state directory (default: {RULE})"
CONFIG_HELP = "take the state directory from this config"


class UsageError(Exception):
    """Bad flags or configuration: the command prints one line and exits 2 (EXIT_USAGE)."""


def fail(message: str, code: int = EXIT_USAGE, prog: str = "crackd") -> int:
    """Print `PROG: MESSAGE` as one line on stderr and return `code`, for `return fail(...)` in a command handler."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def refuse(
    message: str,
    code: int,
    prog: str,
    *,
    as_json: bool = False,
    kind: str = "UsageError",
    extra: dict | None = None,
    indent: int | None = None,
) -> int:
    """`fail`, and with --json first the same as one JSON answer on stdout for the program reading it:
    `{"ok": false, "error": MESSAGE, "kind": KIND, **extra}` (crack-deploy reads `crackd models` this way)."""
    if as_json:
        print_json(
            {"ok": False, "error": message, "kind": kind, **(extra or {})}, indent=indent, default=str, flush=True
        )
    return fail(message, code, prog)


def print_json(
    obj: Any,
    *,
    indent: int | None = None,
    default: Callable[[Any], Any] | None = None,
    ensure_ascii: bool = True,
    flush: bool = False,
) -> None:
    """One JSON document on stdout (`flush` for line-by-line readers such as crack-deploy over SSH)."""
    print(json.dumps(obj, indent=indent, default=default, ensure_ascii=ensure_ascii), flush=flush)


def locate(args: argparse.Namespace) -> StateLocation:
    """The state directory and journal named by --state-dir /
    --config (edge.state_location's rule); a bad config is a UsageError."""
    from edge.config import ConfigError  # keep `--help` light

    try:
        return locate_state(getattr(args, "state_dir", None), getattr(args, "config", None))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------- options


def add_state_dir_arg(
    parser: argparse.ArgumentParser, help: str = STATE_DIR_HELP, type: Callable[[str], Any] = str
) -> None:
    """--state-dir DIR: where the daemon keeps its journal, status, snapshots and models
    (None: edge.state_location's rule)."""
    parser.add_argument("--state-dir", default=None, type=type, help=help)


def add_config_arg(
    parser: argparse.ArgumentParser,
    help: str = CONFIG_HELP,
    default: str | None = None,
    type: Callable[[str], Any] = str,
    metavar: str | None = "FILE",
) -> None:
    """--config FILE: the daemon's YAML config."""
    parser.add_argument("--config", default=default, type=type, metavar=metavar, help=help)


def add_location_args(parser: argparse.ArgumentParser) -> None:
    """--state-dir and --config, as the commands that read the daemon's state directory take them (see `locate`)."""
    add_state_dir_arg(parser)
    add_config_arg(parser)


def add_db_arg(parser: argparse.ArgumentParser) -> None:
    """--db FILE (hidden): read this journal file instead of the state directory's."""
    parser.add_argument("--db", help=argparse.SUPPRESS)


def add_json_arg(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--json: machine-readable output on stdout (the handler says what shape)."""
    parser.add_argument("--json", action="store_true", help=help)
