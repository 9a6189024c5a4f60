"""What every observer shares: the three-method contract and the checks on observed arrays (numpy only)."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from ..common.errors import ConfigError, ConfigTypeError, NonFiniteError
from ..common.numerics import qmax as _qmax

__all__ = ["Observer"]

_F32 = np.float32


@runtime_checkable
class Observer(Protocol):
    """What ``quant_post`` needs from an activation observer."""

    def update(self, array: np.ndarray) -> None:
        """Fold one batch of the tensor into the statistics."""

    def compute_scale(self) -> np.ndarray:
        """Threshold (abs value mapped to qmax), float32 of shape (1,)."""

    def reset(self) -> None:
        """Forget everything observed."""


def _scale(value: float) -> np.ndarray:
    return np.array([value], dtype=_F32)


def _as_real(array) -> np.ndarray:
    """``array`` flattened (a view when contiguous), as a float array."""
    x = np.asarray(array)
    if x.dtype.kind not in "fiub":
        raise ConfigTypeError(f"observers take real numeric arrays, got dtype {x.dtype}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return x.ravel()


def _min_max(flat: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a non-empty float array.

    Raises:
        NonFiniteError: ``flat`` contains NaN or inf.
    """
    lo, hi = float(flat.min()), float(flat.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise NonFiniteError("observed tensor contains NaN or inf; its threshold is undefined")
    return lo, hi


def _abs_max(flat: np.ndarray) -> float:
    """Exact ``max|x|`` of a non-empty float array, without a temporary ``|x|``."""
    lo, hi = _min_max(flat)
    return max(hi, -lo)


def _check_bits(bits: int, algo: str) -> int:
    """``qmax(bits)``, which must be >= 1 for a threshold search."""
    q = _qmax(bits)
    if q < 1:
        raise ConfigError(f"bits must be in 2..16 for algo {algo!r}, got {bits!r}")
    return q


def _check_percent(percent: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, (int, float, np.floating, np.integer)):
        raise ConfigTypeError(f"hist_percent must be a float in (0, 1], got {percent!r}")
    if not 0.0 < float(percent) <= 1.0:
        raise ConfigError(f"hist_percent must be in (0, 1], got {percent!r}")
    return float(percent)


def _last_argmin(values: np.ndarray) -> int:
    """Index of the minimum, the last one on ties (the larger candidate, as Paddle's loops keep it)."""
    return values.size - 1 - int(np.argmin(values[::-1]))
