"""What every Escalade console script does around its command: logging, and expected errors
turned into one clear line and exit code 2 instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import sys


def run_command(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    *,
    expected: tuple[type[BaseException], ...],
) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except expected as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return code
