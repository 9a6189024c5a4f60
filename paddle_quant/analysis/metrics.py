"""Error statistics of a quantized tensor against fp32 (SQNR, cosine) and the default metric, output cosine.

With ``x`` the fp32 values and ``y`` the quantized ones, summed over all elements of all batches::

    SQNR   = 10 * log10( sum x^2 / sum (x - y)^2 )      [dB; inf when y == x]
    cosine = sum x*y / sqrt( sum x^2 * sum y^2 )
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..common.errors import ConfigError

__all__ = ["sqnr_db", "cosine", "output_cosine", "score_metric"]


def sqnr_db(signal_energy: float, error_energy: float) -> float:
    """``10 log10(signal / error)`` in dB; ``inf`` when the error is 0, ``-inf`` when the signal is."""
    if error_energy <= 0.0:
        return math.inf
    if signal_energy <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / error_energy)


def cosine(dot: float, energy_x: float, energy_y: float) -> float:
    """``dot / sqrt(energy_x * energy_y)``; 1.0 when both are zero, 0.0 when one is."""
    if energy_x <= 0.0 and energy_y <= 0.0:
        return 1.0
    if energy_x <= 0.0 or energy_y <= 0.0:
        return 0.0
    return float(dot / math.sqrt(energy_x * energy_y))


class _Sums:
    """Running ``sum x^2``, ``sum y^2``, ``sum x*y``, ``sum (x-y)^2`` in float64."""

    def __init__(self) -> None:
        self.xx = self.yy = self.xy = self.ee = 0.0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
        self.xx += float(x @ x)
        self.yy += float(y @ y)
        self.xy += float(x @ y)
        diff = x - y
        self.ee += float(diff @ diff)


def output_cosine(reference: Sequence[Sequence[np.ndarray]]) -> Callable[[list], float]:
    """The default metric: mean over fetch targets of the all-batch cosine against ``reference``."""
    def metric(outputs: Sequence[Sequence[np.ndarray]]) -> float:
        sums = [_Sums() for _ in reference[0]]
        for ref_batch, batch in zip(reference, outputs):
            for total, x, y in zip(sums, ref_batch, batch):
                total.add(x, y)
        return float(np.mean([cosine(s.xy, s.xx, s.yy) for s in sums]))

    metric.__name__ = "output_cosine"
    return metric


def score_metric(metric: Callable[[list], float], outputs: list) -> float:
    """``metric(outputs)`` as a float; ConfigError when it returns anything but a finite real scalar."""
    value = metric(outputs)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)):
        raise ConfigError(f"metric {getattr(metric, '__name__', metric)!r} returned {value!r}; it must return a "
                          "finite float (higher is better)")
    return float(value)
