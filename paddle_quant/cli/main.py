"""``paddle-quant``: post-training quantization from the command line.

Subcommands: ``post`` (PTQ from a config file and/or flags), ``inspect`` (which ops a config
quantizes and why the others are not), ``embedding`` (quantize embedding tables), ``analyze``
(per-layer error and sensitivity report, automatic skip list), ``verify`` (run an emitted model on
a runtime) and ``demo``. Exit codes: 0 ok, 2 usage or config error, 1 run failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from ..common.native_output import NATIVE_LOGGER, ignore_paddle_import_notes
from .parser import build_parser
from .steps import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, _logger, _report, exit_code_for

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main", "exit_code_for"]


def _configure_logging(args: argparse.Namespace, as_program: bool) -> None:
    """Set the level of paddle_quant's loggers; as a program, also give them their own stderr handler.

    Importing Paddle installs a root handler with its own format; a program run sends paddle_quant's
    records to a ``paddle-quant: LEVEL: message`` handler instead. In-process calls (tests, notebooks)
    keep the caller's handlers.
    """
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    package = logging.getLogger("paddle_quant")
    package.setLevel(level)
    # Paddle's native pass statistics and Executor banner (common/native_output.py): shown from -v on
    logging.getLogger(NATIVE_LOGGER).setLevel(logging.DEBUG if args.verbose and not args.quiet else logging.INFO)
    if as_program and not any(getattr(h, "_paddle_quant_cli", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("paddle-quant: %(levelname)s: %(message)s"))
        handler._paddle_quant_cli = True  # type: ignore[attr-defined]
        package.addHandler(handler)
        package.propagate = False


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``paddle-quant`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Usage errors (argparse) return 2 after printing the usage; ``--help`` returns 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [os.fspath(a) for a in argv])
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    _configure_logging(args, as_program=argv is None)
    if argv is None:
        ignore_paddle_import_notes()  # a program run: Paddle is imported later, by the command
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        _logger.error("interrupted")
        return EXIT_FAILURE
    except Exception as exc:  # the CLI boundary: every failure becomes a message and an exit code
        return _report(exc, args.command)
