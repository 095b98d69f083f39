"""The ``mocha`` command. Each subcommand family lives in its own module exposing
``register(subparsers)``; this file only assembles them, so importing it stays cheap and one
broken optional dependency cannot take the whole command down."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# One line per subcommand module (each defines register(subparsers)).
COMMAND_MODULES = [
    "mocha.curate",  # mocha curate
    "mocha.models",  # mocha models list|fetch|verify
    "mocha.demo",  # mocha demo
    "mocha.audit",  # mocha audit
    "mocha.data",  # mocha data inspect
    "mocha.train",  # mocha train | generate | eval
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mocha",
        description="Curate talking-character video data (MoCha) and train on it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric"):
        # Lightning prints through its own handler; propagating would print every line twice
        logging.getLogger(name).propagate = False
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
