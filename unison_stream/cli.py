"""The ``unison-stream`` console entry point.

Each subcommand lives beside the component it drives and registers itself through a
``register(subparsers)`` function; this file only lists those modules. A subcommand is added
only when it does something real.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main"]

# Modules that contribute subcommands, each with `register(subparsers) -> None`. A registered
# parser sets `func(args) -> int` as its default.
COMMAND_MODULES: tuple[str, ...] = (
    "unison_stream.benchmarks.cli",
    "unison_stream.render",
    "unison_stream.server.cli",
    "unison_stream.train",
    "unison_stream.data.cli",
    "unison_stream.eval.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unison-stream",
        description="Streaming real-time talking-avatar server and tools.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # config overrides (key=value) may also follow options placed after a positional
    if extra:
        if not hasattr(args, "overrides") or not all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
