"""One exception hierarchy for every error paddle_quant raises on purpose.

Each class subclasses the builtin a caller would already catch (``ValueError``,
``TypeError``, ``RuntimeError``) as well as :class:`PaddleQuantError`, so
``except ValueError`` in an existing PaddleSlim script keeps working.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "PaddleQuantError",
    "ConfigError",
    "ConfigTypeError",
    "UnsupportedProgramError",
    "ProgramStateError",
    "ScopeError",
    "NonFiniteError",
    "MissingDependencyError",
    "ExportError",
    "closest_match",
]


class PaddleQuantError(Exception):
    """Base class of every error raised by paddle_quant."""


class ConfigError(PaddleQuantError, ValueError):
    """A configuration value is not allowed; the message names key, value and allowed set."""


class ConfigTypeError(PaddleQuantError, TypeError):
    """A configuration or argument has the wrong Python type."""


class UnsupportedProgramError(PaddleQuantError, TypeError):
    """The object given as a program is not a legacy-IR ``paddle.static.Program``."""


class ProgramStateError(PaddleQuantError, ValueError):
    """The program is not in the state the call needs (e.g. convert on an unquantized program)."""


class ScopeError(PaddleQuantError, RuntimeError):
    """A variable the program needs is missing from the scope (e.g. startup program not run)."""


class NonFiniteError(PaddleQuantError, ValueError):
    """An observed tensor holds NaN or inf, so no threshold can be computed."""


class MissingDependencyError(PaddleQuantError, ImportError):
    """An optional dependency (onnx, onnxruntime, matplotlib, ...) is not installed; the message names the extra."""


class ExportError(PaddleQuantError, RuntimeError):
    """An export step failed while running (an external converter such as ``paddle_lite_opt`` exited with an
    error, timed out or wrote nothing); the message holds what the tool said."""


def closest_match(word: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to ``word`` (difflib ratio >= 0.6), or None."""
    matches = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None
