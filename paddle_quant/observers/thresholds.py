"""Threshold searches on a histogram of ``|x|``, vectorised over candidates (numpy only).

KL (TensorRT's entropy calibration, Paddle's divergence), the ``hist`` percentile, and the
expected quantization error (``mse``, mean absolute error) of every candidate ``s * absmax``.
"""

from __future__ import annotations

import numpy as np

from ..common.errors import ConfigError
from ..common.numerics import qmax as _qmax
from .base import _last_argmin

__all__ = [
    "SCALE_CANDIDATES",
    "COARSE_STRIDE",
    "COARSE_KEEP",
    "compute_kl_divergences",
    "search_kl_threshold",
    "search_percentile_threshold",
    "compute_quantization_errors",
    "search_error_threshold",
]

SCALE_CANDIDATES = np.round(np.arange(30, 101) / 100.0, 2)
"""Fractions ``s`` of the abs max tried by mse: 0.30, 0.31, ..., 1.00."""

COARSE_STRIDE = 5
"""mse's first pass looks at every 5th candidate (0.30, 0.35, ...), then refines around the best ones."""

COARSE_KEEP = 4
"""How many of the best coarse candidates mse refines around (an error curve can have several minima)."""


def _prefix(values: np.ndarray) -> np.ndarray:
    """``[0, v0, v0+v1, ...]`` in float64."""
    out = np.zeros(values.size + 1)
    np.cumsum(values, out=out[1:])
    return out


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x * log(y)`` with ``0 * log(anything) = 0``."""
    positive = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(positive, x * np.log(np.where(positive, y, 1.0)), 0.0)


def compute_kl_divergences(counts: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """KL divergence of every candidate of Paddle's ``cal_kl_threshold``, vectorised.

    With ``q = qmax(bits)`` target bins, ``h`` the counts, ``N = sum h`` and a
    candidate keeping ``i`` bins (``q <= i <= len(h)``): ``P = h[:i]`` with the
    outliers ``O = sum h[i:]`` added to ``P[i-1]``; ``Q`` merges ``h[:i]``
    into ``q`` groups of ``m = i // q`` bins (the last group runs to ``i``) and
    spreads each group sum ``S_g`` evenly over its ``n_g`` non-zero bins.
    Then, with ``C = sum h[:i]``,

        KL(i) = [sum_j P_j log P_j - sum_g S_g log(S_g/n_g)
                 - O log(S_last/n_last)] / N + log(C / N).

    Candidates with ``h[i-1] == 0`` are skipped by Paddle; they get ``inf``.
    All candidates with the same ``m`` share their first ``q - 1`` groups, so
    those are summed once per ``m`` (prefix sums of ``h``, ``h log h`` and of
    the non-zero indicator give every other term in O(1)).

    Returns:
        ``(i, kl)``: candidate bin counts (int) and their divergences (float64).
    """
    h = np.asarray(counts, dtype=np.float64).ravel()
    q = _qmax(bits)
    if not 1 <= q <= h.size:
        raise ConfigError(f"KL needs 1 <= qmax(bits) <= bins; bits={bits!r}, bins={h.size}")
    cand = np.arange(q, h.size + 1)
    total, cum, nonzero = h.sum(), _prefix(h), _prefix(h > 0)
    plogp = _prefix(_xlogy(h, h))

    def group_terms(lo, hi):  # bins [lo, hi): S log(S/n) and the spread value S/n
        sums, nz = cum[hi] - cum[lo], nonzero[hi] - nonzero[lo]
        spread = sums / np.maximum(nz, 1)
        return _xlogy(sums, spread), spread

    merge, which = np.unique(cand // q, return_inverse=True)
    starts = merge[:, None] * np.arange(q)[None, :]  # groups 0..q-2 of each merge size m
    merged = group_terms(starts[:, :-1], starts[:, 1:])[0].sum(axis=1)[which]
    last_term, last_spread = group_terms((q - 1) * (cand // q), cand)
    merged += last_term
    outliers = total - cum[cand]
    last = h[cand - 1]
    body = plogp[cand - 1] + _xlogy(last + outliers, last + outliers)
    tail = _xlogy(outliers, last_spread)
    with np.errstate(divide="ignore", invalid="ignore"):  # skipped candidates only
        kl = (body - merged - tail) / max(total, 1.0) + np.log(cum[cand] / max(total, 1.0))
    return cand, np.where(last > 0, kl, np.inf)


def search_kl_threshold(counts: np.ndarray, bin_width: float, bits: int = 8, min_threshold: float = 0.0) -> float:
    """TensorRT entropy calibration: ``(i + 0.5) * bin_width`` for the ``i`` of least KL.

    Same divergence and threshold rule as Paddle's ``cal_kl_threshold``
    (first minimum wins), over candidates ``i = qmax(bits) .. len(counts)``
    whose threshold is at least ``min_threshold`` (Paddle: ``(len-1)//2 .. len-1``,
    relative to its bin count). See :func:`compute_kl_divergences`.
    Returns 0.0 for an empty histogram.
    """
    cand, kl = compute_kl_divergences(counts, bits)
    kl = np.where((cand + 0.5) * bin_width >= min_threshold, kl, np.inf)
    if not np.isfinite(kl).any():
        return 0.0
    return (int(cand[np.argmin(kl)]) + 0.5) * bin_width


def search_percentile_threshold(counts: np.ndarray, bin_width: float, percent: float) -> float:
    """PaddleSlim ``hist``: ``(j + 0.5) * bin_width`` for the first bin ``j`` whose
    cumulative count reaches ``percent`` of the total. Returns 0.0 for an empty histogram.
    """
    cum = np.cumsum(np.asarray(counts, dtype=np.int64))
    if not cum.size or cum[-1] == 0:
        return 0.0
    j = min(int(np.searchsorted(cum, percent * cum[-1], side="left")), cum.size - 1)
    return (j + 0.5) * bin_width


def _error_integral(x: np.ndarray, d: np.ndarray, levels: int, power: int) -> np.ndarray:
    """``F(x) = int_0^x |t - Q(t)|**power dt`` for ``Q(t) = d * min(rint(t/d), L)``, ``L = levels``.

    Rounding part, with ``u = min(x/d, L + 0.5)``, ``m = floor(u + 0.5)``,
    ``v = u - m``: ``d**3 (m/12 + v**3/3)`` (power 2) or ``d**2 (m/4 + v|v|/2)``
    (power 1); past the clip point ``(L + 0.5) d`` add
    ``((x - L d)**(p+1) - (d/2)**(p+1)) / (p+1)``. Broadcasts ``x`` against ``d``.
    """
    u = np.minimum(x / d, levels + 0.5)
    m = np.floor(u + 0.5)
    v = u - m
    half = d / 2.0
    over = np.maximum(x - levels * d, half)  # = half (no clipping error) up to the clip point
    if power == 2:
        body = (d * d * d) * (m / 12.0 + (v * v * v) / 3.0)
        return body + (over * over * over - half * half * half) / 3.0
    body = (d * d) * (m / 4.0 + v * np.abs(v) / 2.0)
    return body + (over * over - half * half) / 2.0


def compute_quantization_errors(
    counts: np.ndarray, bin_width: float, thresholds: np.ndarray, *, bits: int = 8, power: int = 2
) -> np.ndarray:
    """Expected ``|x - Q(x)|**power`` of ``quantize_linear`` with ``bits``, per threshold ``T``.

    ``Q`` is the kernel's grid ``T * k / qmax``, ``k = -qmax-1 .. qmax``. ``|x|``
    is taken uniform inside each bin, so bin ``j`` contributes
    ``counts[j] * (F(e[j+1]) - F(e[j])) / bin_width``, ``F`` the exact integral
    of the error (:func:`_error_integral`) with ``qmax`` levels for ``x >= 0``
    and ``qmax + 1`` for ``x < 0``. Vectorised over thresholds and bins.

    Args:
        counts: :attr:`StreamingHistogram.signed_counts` (2, bins), or an
            unsigned (bins,) histogram of ``|x|`` (taken as ``x >= 0``).
        bin_width: histogram bin width.
        thresholds: candidate thresholds ``T``.
        bits: bit width.
        power: 2 for the squared error, 1 for the absolute error.

    Returns:
        float64 array, one mean error per threshold.
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1, np.shape(counts)[-1])
    used = np.flatnonzero(c.any(axis=0))
    c = c[:, : used[-1] + 1 if used.size else 0]  # empty top bins add nothing
    q = _qmax(bits)
    d = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1) / q
    edges = np.arange(c.shape[1] + 1)[None, :] * float(bin_width)
    total = np.zeros(d.shape[0])
    for sign, row in enumerate(c):  # at most two rows: x >= 0, x < 0
        f = _error_integral(edges, d, q + sign, power)
        total += (np.diff(f, axis=1) / bin_width) @ row
    return total / max(c.sum(), 1.0)


def search_error_threshold(
    counts: np.ndarray,
    bin_width: float,
    abs_max: float,
    *,
    bits: int = 8,
    power: int = 2,
    candidates: np.ndarray = SCALE_CANDIDATES,
) -> float:
    """``s * abs_max`` for the ``s`` in ``candidates`` of least expected error.

    ``power=2``: mean squared error (``mse``); ``power=1``: mean absolute
    error. Ties go to the larger ``s``. Returns 0.0 when ``abs_max`` is 0.

    Coarse to fine: every ``COARSE_STRIDE``-th candidate (and the last) first,
    then every candidate within one coarse step of the ``COARSE_KEEP`` best
    coarse ones: at most 15 + 36 error evaluations instead of 71 for the
    default grid (5.5 -> 1.8 ms per tensor). An error curve can have more than
    one minimum (refining around the single best coarse point changed 10 of
    301 PP-OCRv4 rec thresholds); with four kept, the choice equals the full
    search on all 180 PP-OCR cls and 301 rec activations of bench/ptq_vs_paddleslim.py
    and on the test distributions (``tests/observers/test_observers.py``).
    """
    if abs_max <= 0.0 or bin_width <= 0.0:
        return 0.0
    s = np.asarray(candidates, dtype=np.float64)

    def best_of(index: np.ndarray) -> int:
        err = compute_quantization_errors(counts, bin_width, s[index] * abs_max, bits=bits, power=power)
        return int(index[_last_argmin(err)])

    if s.size <= 3 * COARSE_STRIDE:
        return float(s[best_of(np.arange(s.size))] * abs_max)
    coarse = np.unique(np.append(np.arange(0, s.size, COARSE_STRIDE), s.size - 1))
    err = compute_quantization_errors(counts, bin_width, s[coarse] * abs_max, bits=bits, power=power)
    fine = set()
    for centre in coarse[np.argsort(err, kind="stable")[:COARSE_KEEP]]:  # the best coarse points' neighbourhoods
        fine.update(range(max(int(centre) - COARSE_STRIDE + 1, 0), min(int(centre) + COARSE_STRIDE, s.size)))
    return float(s[best_of(np.array(sorted(fine)))] * abs_max)
