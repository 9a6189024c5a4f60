"""Paddle's native (C++) chatter, sent to the log instead of the terminal.

Paddle Inference's analysis passes write their statistics (``---    quantized 0 prior_box ops``,
``---    squashed 0 requantize ops``, ...) straight to the process's stderr from C++ when a
predictor is built, and the legacy Executor logs ``New Executor is Running.`` through glog at its
first run in a process; neither ``GLOG_minloglevel`` (read only when Paddle is imported) nor
``Config.disable_glog_info()`` silences them. :func:`native_output_to_log` redirects file
descriptors 1 and 2 into a temporary file for the duration of a call, always restores them (also
when the call raises), and logs what was captured at DEBUG on the ``paddle_quant.native`` logger
(the CLI's ``-v`` shows it).

Keep the captured calls narrow: Python code writing to ``sys.stderr`` inside them (a logging
handler, say) is captured too, and demoted to DEBUG.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

__all__ = ["native_output_to_log", "NATIVE_LOGGER", "PADDLE_IMPORT_NOTES", "ignore_paddle_import_notes"]

PADDLE_IMPORT_NOTES = ("No ccache found",)
"""Starts of the warnings ``import paddle`` emits that no paddle_quant user can act on: ccache matters
only when compiling C++ extensions, which nothing here does."""

NATIVE_LOGGER = "paddle_quant.native"
_logger = logging.getLogger(NATIVE_LOGGER)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_lock = threading.RLock()
_depth = 0


def ignore_paddle_import_notes() -> None:
    """For programs (the CLI, the demos), called before Paddle is imported: hide :data:`PADDLE_IMPORT_NOTES`.
    A library does not change warning filters behind its caller's back; this is for entry points."""
    import warnings

    for note in PADDLE_IMPORT_NOTES:
        warnings.filterwarnings("ignore", message=re.escape(note), category=UserWarning)


def _flush_all() -> None:
    """Flush Python's and C's stdio buffers so nothing crosses the redirection boundary."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library handle (not POSIX): nothing buffered to flush
        pass


@contextlib.contextmanager
def native_output_to_log(what: str) -> Iterator[None]:
    """Capture everything written to fds 1 and 2 during the body; log it at DEBUG, labelled ``what``.

    Nested uses (in one thread) share the outermost capture; other threads wait for it.
    """
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        _flush_all()
        saved = (os.dup(1), os.dup(2))
        with tempfile.TemporaryFile() as sink:
            _depth = 1
            try:
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
                yield
            finally:
                _flush_all()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                _depth = 0
                sink.seek(0)
                text = _ANSI_ESCAPE.sub("", sink.read().decode("utf-8", "replace")).rstrip()
                if text:
                    _logger.debug("%s (native output):\n%s", what, text)
