"""The ``paddle-quant`` command line: subcommands, config files (XML/YAML/JSON) and exit codes.

* ``main``: the entry point :func:`paddle_quant.cli.main.main` (console script ``paddle-quant`` and
  ``python -m paddle_quant``), logging set-up, exit codes (0 ok, 2 usage or config error, 1 run failure).
* ``parser``: the argument parser, one sub-parser per subcommand.
* ``flags``: the flags that override config-file elements.
* ``commands``: the handlers of ``post``, ``inspect``, ``embedding``, ``analyze``, ``verify``, ``demo``.
* ``steps``: what the handlers share (configs, model file and inputs, data reader, failure reports).
* ``config_model``: the config schema (pydantic, one :class:`RunConfig` per ``Config``).
* ``config_file``: reading XML (hardened), YAML and JSON files into that schema.
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from .main import main as _main

    return _main(argv)
