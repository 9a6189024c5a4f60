"""The ``paddle-quant`` command line: subcommands, config files (XML/YAML/JSON) and exit codes.

Entry point: :func:`paddle_quant.cli.main.main` (console script ``paddle-quant`` and
``python -m paddle_quant``). Exit codes: 0 ok, 2 usage or config error, 1 run failure.
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from .main import main as _main

    return _main(argv)
