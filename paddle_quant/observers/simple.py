"""Observers with O(1) state: ``abs_max`` (and ``direct``), ``min_max``, ``avg`` (numpy only)."""

from __future__ import annotations

import numpy as np

from .base import _abs_max, _as_real, _min_max, _scale

__all__ = ["AbsMaxObserver", "MinMaxObserver", "AvgObserver"]


class AbsMaxObserver:
    """``abs_max`` (and ``direct``): threshold = running ``max|x|`` over all batches."""

    def __init__(self) -> None:
        self.abs_max = 0.0

    def update(self, array) -> None:
        flat = _as_real(array)
        if flat.size:
            self.abs_max = max(self.abs_max, _abs_max(flat))

    def compute_scale(self) -> np.ndarray:
        return _scale(self.abs_max)

    def reset(self) -> None:
        self.abs_max = 0.0


class MinMaxObserver:
    """``min_max``: running signed ``min``/``max``; threshold = ``max(|min|, |max|)``.

    Attributes:
        min: smallest value seen, None before any data.
        max: largest value seen, None before any data.
    """

    def __init__(self) -> None:
        self.min: float | None = None
        self.max: float | None = None

    def update(self, array) -> None:
        flat = _as_real(array)
        if not flat.size:
            return
        lo, hi = _min_max(flat)
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def compute_scale(self) -> np.ndarray:
        if self.min is None:
            return _scale(0.0)
        return _scale(max(abs(self.min), abs(self.max)))

    def reset(self) -> None:
        self.min = None
        self.max = None


class AvgObserver:
    """``avg`` (PaddleSlim): mean over batches of the batch mean of per-sample abs max.

    For a batch ``x`` with ``n = x.shape[0]`` samples,
    ``v_b = mean_i max|x[i]|``; the threshold is ``mean_b v_b``, kept as a
    running mean (O(1) memory). A 0-d array counts as one sample.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.mean = 0.0

    def update(self, array) -> None:
        x = np.asarray(array)
        if x.size == 0:
            return
        rows = _as_real(x).reshape(x.shape[0] if x.ndim else 1, -1)
        _abs_max(rows.ravel())  # NaN/inf check
        per_sample = np.maximum(rows.max(axis=1), -rows.min(axis=1))
        value = float(per_sample.astype(np.float64).mean())
        self.batches += 1
        self.mean += (value - self.mean) / self.batches

    def compute_scale(self) -> np.ndarray:
        return _scale(self.mean)

    def reset(self) -> None:
        self.batches = 0
        self.mean = 0.0
