"""The `mateffnet` command: parses arguments, calls the library, prints. Nothing else lives here.

Each subcommand has an `_add_<name>` function that declares its arguments and a `_run_<name>`
function that does the work; library modules are imported inside `_run_*` so that
`mateffnet --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from mateffnet import __version__
from mateffnet.errors import MateffnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mateffnet",
        description="Two-stream (RGB + optical flow) action recognition with MAT-EffNet.",
    )
    parser.add_argument("--version", action="version", version=f"mateffnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


_SUBCOMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MateffnetError as error:
        print(f"mateffnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mateffnet {args.command}: interrupted", file=sys.stderr)
        return 130
