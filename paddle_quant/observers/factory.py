"""``make_observer``: a fresh observer for an algorithm name (numpy only)."""

from __future__ import annotations

from ..common.errors import ConfigError, closest_match
from ..common.numerics import qmax as _qmax
from .base import Observer, _check_percent
from .emd import EMDObserver
from .histogram import DEFAULT_BINS, DEFAULT_MAX_SAMPLES, HistObserver, KLObserver, MSEObserver
from .simple import AbsMaxObserver, AvgObserver, MinMaxObserver

__all__ = ["ALGORITHMS", "make_observer"]

ALGORITHMS: tuple[str, ...] = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct")
"""Activation algorithms :func:`make_observer` accepts (``direct`` is ``abs_max``)."""


def make_observer(
    algo: str,
    *,
    bits: int = 8,
    hist_percent: float = 0.99999,
    bins: int = DEFAULT_BINS,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> Observer:
    """A fresh observer for ``algo`` (one of :data:`ALGORITHMS`).

    Args:
        algo: ``KL``, ``hist``, ``mse``, ``emd``, ``avg``, ``abs_max``,
            ``min_max`` or ``direct`` (= ``abs_max``).
        bits: activation bits (KL/mse/emd: 2..16; KL also ``qmax <= bins``).
        hist_percent: quantile for ``hist``, in (0, 1]; checked for every algo.
        bins: histogram bins for KL/hist/mse (emd bins each batch on :data:`EMD_BINS`).
        max_samples: elements histogrammed per update at most (None: all).

    Raises:
        ConfigError: unknown ``algo`` or a value out of range.
    """
    _check_percent(hist_percent)
    if not isinstance(algo, str):
        raise ConfigError(f"algo must be one of {list(ALGORITHMS)}, got {algo!r}")
    hist_args = {"bins": bins, "max_samples": max_samples}
    factories = {
        "KL": lambda: KLObserver(bits=bits, **hist_args),
        "hist": lambda: HistObserver(hist_percent, **hist_args),
        "mse": lambda: MSEObserver(bits=bits, **hist_args),
        "emd": lambda: EMDObserver(bits=bits, max_samples=max_samples),
        "avg": AvgObserver,
        "abs_max": AbsMaxObserver,
        "min_max": MinMaxObserver,
        "direct": AbsMaxObserver,
    }
    if algo not in factories:
        hint = closest_match(algo, ALGORITHMS)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"algo must be one of {list(ALGORITHMS)}, got {algo!r}{extra}")
    _qmax(bits)
    return factories[algo]()
