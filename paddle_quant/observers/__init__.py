"""Streaming activation observers for post-training quantization (numpy only).

``quant_post`` runs the model batch by batch, fetches each activation it
observes as a numpy array and calls ``observer.update(array)`` on that
tensor's observer; after the last batch ``observer.compute_scale()`` gives the
threshold: the float ``|x|`` mapped to ``qmax`` (the quantization ``scale`` in
Paddle's convention), float32 of shape (1,).

Every observer keeps O(1) or O(bins) state: no raw activations are kept, and
the histogram algorithms (``KL``, ``hist``, ``mse``, ``emd``) need no second
pass over the data (``emd`` scores each batch as it comes). Their histogram (:class:`StreamingHistogram`) widens its
range by powers of two and merges bins when a batch exceeds it, and bins at
most ``max_samples`` elements per update (a deterministic strided subsample,
see :class:`StreamingHistogram`); the abs max is always exact.

Differences from Paddle's ``PostTrainingQuantization`` (on purpose):

* KL candidates start at ``qmax`` bins instead of half the bins, so the
  threshold can go below ``0.5 * absmax``; the all-bins candidate is included.
  The target bin count is Paddle's ``qmax = 2**(bits-1) - 1`` (127), so on a
  shared candidate the divergence is exactly Paddle's.
* mse searches ``s * absmax`` for ``s`` in 0.30..1.00 step 0.01 (1.0 is
  tried) and minimises the error over all batches, not the best single batch.
* emd is Paddle's: per batch, ``|mean diff| + |std diff|`` of ``x`` and its
  quantized value for ``s`` in 0.30..0.98 step 0.02, keeping the best single
  batch (:class:`EMDObserver`; its moments come from a per-batch histogram).
* Every histogram threshold is clipped to the exact abs max.
* Zero scale only when nothing non-zero was observed; NaN/inf raise.
"""

from __future__ import annotations

import functools
import math
from typing import Protocol, runtime_checkable

import numpy as np

from ..common.errors import ConfigError, ConfigTypeError, NonFiniteError, closest_match
from ..common.numerics import qmax as _qmax

__all__ = [
    "sample_stride",
    "strided_sample",
    "ALGORITHMS",
    "DEFAULT_BINS",
    "DEFAULT_MAX_SAMPLES",
    "SCALE_CANDIDATES",
    "NonFiniteError",
    "Observer",
    "AbsMaxObserver",
    "MinMaxObserver",
    "AvgObserver",
    "StreamingHistogram",
    "rebin_to_abs_max",
    "HistObserver",
    "KLObserver",
    "MSEObserver",
    "EMDObserver",
    "EMD_CANDIDATES",
    "EMD_BINS",
    "emd_moment_losses",
    "make_observer",
    "compute_kl_divergences",
    "search_kl_threshold",
    "search_percentile_threshold",
    "compute_quantization_errors",
    "search_error_threshold",
]

ALGORITHMS: tuple[str, ...] = ("KL", "hist", "mse", "emd", "avg", "abs_max", "min_max", "direct")
"""Activation algorithms :func:`make_observer` accepts (``direct`` is ``abs_max``)."""

DEFAULT_BINS = 2048
"""Histogram bins, as Paddle's ``PostTrainingQuantization``."""

DEFAULT_MAX_SAMPLES = 65536
"""Elements histogrammed per update at most; bigger tensors are subsampled."""

SCALE_CANDIDATES = np.round(np.arange(30, 101) / 100.0, 2)
"""Fractions ``s`` of the abs max tried by mse: 0.30, 0.31, ..., 1.00."""

COARSE_STRIDE = 5
"""mse's first pass looks at every 5th candidate (0.30, 0.35, ...), then refines around the best ones."""

COARSE_KEEP = 4
"""How many of the best coarse candidates mse refines around (an error curve can have several minima)."""

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


# ----------------------------------------------------------------- helpers


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


# ------------------------------------------------------- simple observers


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


# --------------------------------------------------------- the histogram


@functools.lru_cache(maxsize=256)
def _next_prime(n: int) -> int:
    """Smallest prime >= ``n`` (``n >= 2``)."""
    while any(n % d == 0 for d in range(2, math.isqrt(n) + 1)):
        n += 1
    return n


def sample_stride(size: int, max_samples: int | None) -> int:
    """Stride of the subsample: 1, or the smallest prime >= ``ceil(size / max_samples)``.

    A prime stride is coprime with the usual channel and spatial sizes, so a
    strided sample still visits every channel of an NHWC/NCHW tensor.
    """
    if max_samples is None or size <= max_samples:
        return 1
    return _next_prime(-(-size // max_samples))


def _check_sampling(bins, max_samples) -> None:
    """ConfigError unless ``bins`` is an int >= 2 and ``max_samples`` None or an int >= 1."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ConfigError(f"bins must be an int >= 2, got {bins!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1
    ):
        raise ConfigError(f"max_samples must be None or an int >= 1, got {max_samples!r}")


def strided_sample(flat: np.ndarray, max_samples: int | None, update: int) -> np.ndarray:
    """At most about ``max_samples`` elements of ``flat``: every :func:`sample_stride`-th one, from an
    offset that rotates with the ``update`` count (``flat`` itself when it is small enough)."""
    step = sample_stride(flat.size, max_samples)
    return flat[update % step :: step] if step > 1 else flat


def _last_argmin(values: np.ndarray) -> int:
    """Index of the minimum, the last one on ties (the larger candidate, as Paddle's loops keep it)."""
    return values.size - 1 - int(np.argmin(values[::-1]))


class StreamingHistogram:
    """Histogram of ``|x|`` on ``bins`` equal bins over ``[0, range)``, grown by powers of two.

    * The first update with a non-zero value sets ``range = max|x|`` of that
      batch (while only zeros were seen, the range is 0 and they sit in bin 0).
    * A batch with ``max|x| > range`` widens the range to ``range * 2**k``
      (smallest such ``k``) and merges each group of ``2**k`` adjacent bins
      into one (their counts add up; the new bin edges are old ones), so the
      counts equal a histogram of all data on the final range, except that a
      value equal to an earlier range stays in that range's last bin.
    * Each update histograms at most ``max_samples`` elements: when a tensor
      is larger it takes every ``p``-th element from an offset that rotates
      with the update count, ``p`` the smallest prime >= size/max_samples,
      and also counts the exact abs max once. ``max_samples=None`` bins every
      element. The abs max is always exact over all elements.
    * Bin index of ``a = |x|``: ``min(floor(a * bins / range), bins - 1)``,
      computed in the input's float type (float32 at least; float64 when
      ``bins / range`` exceeds float32).
    * Counts are kept per sign (:attr:`signed_counts`), because the signed
      grid has one more negative level (``-qmax-1``) that the mse/emd error
      model uses; :attr:`counts` is their sum, the histogram of ``|x|``.

    Attributes:
        bins: number of bins.
        max_samples: subsample bound per update (None: no subsampling).
        abs_max: exact ``max|x|`` seen.
        range: upper edge of the histogram (0 until a non-zero value is seen).
        size: number of elements seen.
        updates: number of non-empty updates.
    """

    def __init__(self, bins: int = DEFAULT_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES) -> None:
        _check_sampling(bins, max_samples)
        self.bins = int(bins)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.reset()

    def reset(self) -> None:
        """Forget all data (the configuration is kept)."""
        self._counts = np.zeros((2, self.bins), dtype=np.int64)  # rows: sign bit clear, set
        self.abs_max = 0.0
        self.range = 0.0
        self.size = 0
        self.updates = 0

    @property
    def counts(self) -> np.ndarray:
        """Counts of ``|x|`` per bin, int64 of shape (bins,)."""
        return self._counts.sum(axis=0)

    @property
    def signed_counts(self) -> np.ndarray:
        """Counts of ``|x|`` per bin, row 0 for ``x >= 0``, row 1 for ``x < 0`` (and -0.0); read-only view."""
        view = self._counts.view()
        view.flags.writeable = False
        return view

    @property
    def bin_width(self) -> float:
        """``range / bins`` (0 while the range is empty)."""
        return self.range / self.bins

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges, float64."""
        return np.linspace(0.0, self.range, self.bins + 1)

    def update(self, array) -> None:
        """Add the ``|x|`` of one batch (any shape; empty arrays are ignored)."""
        flat = _as_real(array)
        if not flat.size:
            return
        lo, hi = _min_max(flat)
        batch_max = max(hi, -lo)
        self._fit_range(batch_max)
        sample = strided_sample(flat, self.max_samples, self.updates)
        self._add(sample)
        if sample.size < flat.size:  # the sample may have missed it; the tail matters to KL
            self._counts[int(hi < batch_max), self._index(batch_max)] += 1
        self.abs_max = max(self.abs_max, batch_max)
        self.size += flat.size
        self.updates += 1

    def _index(self, value: float) -> int:
        return min(int(value * (self.bins / self.range)), self.bins - 1) if self.range else 0

    def _fit_range(self, batch_max: float) -> None:
        """Set the range on the first non-zero batch; widen it by ``2**k`` if exceeded."""
        if batch_max <= self.range:
            return
        if self.range == 0.0:
            self.range = batch_max  # only zeros so far: they stay in bin 0
            return
        k = max(1, math.ceil(math.log2(batch_max / self.range)))
        while self.range * 2.0**k < batch_max:
            k += 1
        while k > 1 and self.range * 2.0 ** (k - 1) >= batch_max:
            k -= 1
        self._merge(2**k)
        self.range *= 2.0**k

    def _merge(self, group: int) -> None:
        """Sum each run of ``group`` adjacent bins into the low bins."""
        merged = np.zeros_like(self._counts)
        if group >= self.bins:
            merged[:, 0] = self._counts.sum(axis=1)
        else:
            sums = np.add.reduceat(self._counts, np.arange(0, self.bins, group), axis=1)
            merged[:, : sums.shape[1]] = sums
        self._counts = merged

    def _add(self, sample: np.ndarray) -> None:
        """Bin ``sample`` by ``|x|`` and sign with one ``bincount``.

        Index ``2 * j + signbit(x)`` for bin ``j = min(floor(|x| * bins / range), bins - 1)``.
        """
        n = self.bins
        if self.range == 0.0:
            self._counts[0, 0] += sample.size
            return
        k = n / self.range
        if k > 1e30 and sample.dtype.itemsize < 8:  # float32 cannot hold k
            sample = sample.astype(np.float64)
        elif sample.dtype.itemsize < 4:  # float16: bin in float32
            sample = sample.astype(_F32)
        a = np.abs(sample)
        a *= k
        np.minimum(a, n - 0.5, out=a)
        idx = a.astype(np.intp)
        idx <<= 1
        np.bitwise_or(idx, np.signbit(sample), out=idx)
        self._counts += np.bincount(idx, minlength=2 * n).reshape(n, 2).T


# ------------------------------------------------------ threshold searches


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
    and on the test distributions (``tests/test_observers.py``).
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


# ------------------------------------------------- histogram observers


class _HistogramObserver:
    """Shared body: a :class:`StreamingHistogram` and a threshold search on it."""

    def __init__(self, bins: int = DEFAULT_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES) -> None:
        self.histogram = StreamingHistogram(bins, max_samples)

    def update(self, array) -> None:
        self.histogram.update(array)

    def reset(self) -> None:
        self.histogram.reset()

    def compute_scale(self) -> np.ndarray:
        """The search's threshold, clipped to the exact abs max (0 if no non-zero data)."""
        hist = self.histogram
        if hist.abs_max == 0.0:
            return _scale(0.0)
        return _scale(min(self._search(hist), hist.abs_max))

    def _search(self, hist: StreamingHistogram) -> float:
        raise NotImplementedError


class HistObserver(_HistogramObserver):
    """``hist``: threshold at the ``percent`` quantile of ``|x|`` (see :func:`search_percentile_threshold`)."""

    def __init__(
        self, percent: float = 0.99999, *, bins: int = DEFAULT_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES
    ) -> None:
        super().__init__(bins, max_samples)
        self.percent = _check_percent(percent)

    def _search(self, hist: StreamingHistogram) -> float:
        return search_percentile_threshold(hist.counts, hist.bin_width, self.percent)


def rebin_to_abs_max(hist: StreamingHistogram, bins: int) -> tuple[np.ndarray, float]:
    """The histogram's counts re-binned onto ``bins`` equal bins over exactly ``[0, abs_max]``.

    A streaming histogram's range grows by powers of two, so it can span up to
    twice the abs max, and then only half its bins hold data. Paddle and TensorRT
    histogram over exactly ``[0, abs_max]`` (their first pass finds it). Each
    source bin goes to the target bin holding its centre, so with a source
    ``r`` times finer than the target the edges are off by at most half a source
    bin. Returns ``(counts, bin_width)``.
    """
    counts = hist.counts
    if hist.abs_max == 0.0 or hist.range == 0.0:
        return np.pad(counts[:1], (0, bins - 1)), 0.0
    centres = (np.arange(hist.bins) + 0.5) * hist.bin_width
    target = np.minimum((centres * (bins / hist.abs_max)).astype(np.intp), bins - 1)
    return np.bincount(target, weights=counts, minlength=bins).astype(np.int64), hist.abs_max / bins


class KLObserver(_HistogramObserver):
    """``KL``: entropy calibration (see :func:`search_kl_threshold`) with thresholds >= ``min_ratio * absmax``.

    The divergence is searched on ``bins`` bins over exactly ``[0, absmax]``, as Paddle and
    TensorRT do: the streaming histogram keeps ``resolution`` times more bins and is re-binned
    at the end (:func:`rebin_to_abs_max`). Searching the raw streaming histogram instead (range
    up to 2x the abs max, so as few as half the bins hold data) picked thresholds up to 1.6x
    lower than Paddle's on PP-OCRv4 rec and cost 34 points of deployed exact match.

    The floor (default 0.5, Paddle's effective window) is measured, not inherited:
    without it KL clipped PP-OCR cls activations far below their range and int8
    accuracy fell from 95.0 % to 51.0 % (200 rendered lines, 10 batches of 8).
    Unlike Paddle's window it is relative to the exact abs max, not to the bin count.
    """

    def __init__(
        self, *, bits: int = 8, bins: int = DEFAULT_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES,
        min_ratio: float = 0.5, resolution: int = 4,
    ) -> None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ConfigError(f"KL resolution must be an int >= 1, got {resolution!r}")
        super().__init__(bins * resolution if isinstance(bins, int) and not isinstance(bins, bool) else bins,
                         max_samples)
        if _check_bits(bits, "KL") > bins:
            raise ConfigError(f"KL with bits={bits} needs bins >= {_qmax(bits)}, got bins={bins}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ConfigError(f"KL min_ratio must be in [0, 1], got {min_ratio!r}")
        self.bits = bits
        self.bins = bins
        self.min_ratio = float(min_ratio)

    def _search(self, hist: StreamingHistogram) -> float:
        counts, width = rebin_to_abs_max(hist, self.bins)
        return search_kl_threshold(counts, width, self.bits, self.min_ratio * hist.abs_max)


class MSEObserver(_HistogramObserver):
    """``mse``: ``s * absmax`` of least mean squared quantization error (see :func:`search_error_threshold`)."""

    def __init__(
        self, *, bits: int = 8, bins: int = DEFAULT_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES
    ) -> None:
        super().__init__(bins, max_samples)
        _check_bits(bits, "mse")
        self.bits = bits

    def _search(self, hist: StreamingHistogram) -> float:
        return search_error_threshold(
            hist.signed_counts, hist.bin_width, hist.abs_max, bits=self.bits, power=2
        )


def _paddle_emd_candidates() -> np.ndarray:
    """Paddle's loop ``s = 0.3; while s <= 1.0: ...; s += 0.02`` (float accumulation, 35 values)."""
    values, s = [], 0.3
    while s <= 1.0:
        values.append(s)
        s += 0.02
    return np.array(values)


EMD_CANDIDATES = _paddle_emd_candidates()
"""Fractions ``s`` of a batch's abs max tried by ``emd``: Paddle's 0.30, 0.32, ..., 0.98."""

EMD_BINS = 8192
"""Signed histogram bins over ``[-absmax, absmax]`` per batch for the ``emd`` moments."""


def _signed_counts(x: np.ndarray, abs_max: float, bins: int) -> np.ndarray:
    """Counts of float32/64 ``x`` on ``bins`` equal bins over ``[-abs_max, abs_max]`` (float64; ends clamped)."""
    position = x + x.dtype.type(abs_max)
    position *= x.dtype.type(bins / (2.0 * abs_max))
    np.clip(position, 0.0, bins - 0.5, out=position)
    return np.bincount(position.astype(np.int32), minlength=bins).astype(np.float64)


def emd_moment_losses(
    sample: np.ndarray, abs_max: float, *, bits: int = 8, bins: int = EMD_BINS,
    candidates: np.ndarray = EMD_CANDIDATES,
) -> np.ndarray:
    """Paddle's emd loss ``|mean(x) - mean(Q(x))| + |std(x) - std(Q(x))|`` for each ``T = s * abs_max``.

    ``Q`` is the kernel's grid: ``T * clip(round(x * qmax / T), -qmax-1, qmax) / qmax``.
    The moments come from one signed histogram of ``sample`` on ``bins`` equal bins over
    ``[-abs_max, abs_max]`` with values uniform inside a bin: the count of each level ``k``
    is the interpolated cumulative count between its rounding boundaries ``(k -+ 0.5) T / qmax``,
    so the level counts are exact for that model (no bin-centre rounding). ``x``'s own
    moments are exact (a point mass such as ReLU's zeros would shift the model's mean).

    Args:
        sample: values of one batch (any shape; float).
        abs_max: the batch's exact ``max|x|`` (> 0); the histogram spans ``[-abs_max, abs_max]``.
        bits: activation bits.
        bins: histogram bins.
        candidates: the fractions ``s``.

    Returns:
        float64 array, one loss per candidate.
    """
    q = _qmax(bits)
    x = np.asarray(sample).ravel()
    if x.dtype.itemsize < 4:
        x = x.astype(_F32)
    n = float(x.size)
    mean_x = float(np.add.reduce(x, dtype=np.float64)) / n
    centred = x - x.dtype.type(mean_x)
    np.multiply(centred, centred, out=centred)
    std_x = math.sqrt(float(np.add.reduce(centred, dtype=np.float64)) / n)
    counts = _signed_counts(x, abs_max, bins)
    cumulative = _prefix(counts)
    step = np.asarray(candidates, dtype=np.float64).reshape(-1, 1) * abs_max / q  # (S, 1)
    levels = np.arange(-q - 1, q + 1, dtype=np.float64)  # -qmax-1 .. qmax
    boundaries = (levels[:-1] + 0.5) * step  # (S, 2 qmax + 1): between level k and k + 1
    position = (boundaries + abs_max) * (bins / (2.0 * abs_max))  # in bins from -abs_max
    np.clip(position, 0.0, float(bins), out=position)
    whole = np.minimum(position.astype(np.intp), bins - 1)
    below = cumulative[whole] + (position - whole) * counts[whole]  # linear inside the bin
    level_counts = np.diff(below, axis=1, prepend=0.0, append=n)  # (S, 2 qmax + 2)
    mean_q = np.einsum("sk,k->s", level_counts, levels) * step[:, 0] / n  # einsum: no BLAS threads
    second_q = np.einsum("sk,k->s", level_counts, levels * levels) * (step[:, 0] ** 2) / n
    std_q = np.sqrt(np.maximum(second_q - mean_q * mean_q, 0.0))
    return np.abs(mean_x - mean_q) + np.abs(std_x - std_q)


class EMDObserver:
    """``emd``: Paddle's moment-matching search, batch by batch, keeping the best single batch.

    PaddleSlim's ``emd`` is not an earth mover's distance: for every batch and every
    ``s`` in :data:`EMD_CANDIDATES` it quantizes the batch with ``T = s * max|x|`` (of that
    batch) and scores ``|mean(x) - mean(Q(x))| + |std(x) - std(Q(x))|``; the threshold is
    the ``T`` of the lowest score over all batches and candidates (ties: the later one).
    This observer does the same with the losses of :func:`emd_moment_losses`, computed on
    a subsample of at most ``max_samples`` elements per batch (a strided sample, as
    :class:`StreamingHistogram` takes), so its state is three numbers.

    Measured on PP-OCRv4 rec (10 batches of 8, bench/ptq_vs_paddleslim.py): the true
    earth mover's distance (mean absolute error, what this observer was before) picked
    thresholds about 0.58x Paddle's and scored 52.0 % deployed exact match against
    PaddleSlim's 59.0 %; see docs/ptq.md for this observer's figures.

    Differences from Paddle: an all-zero batch is skipped (Paddle scores it with a
    ``1e-8`` abs max, loss 0, which pins the threshold at ``~1e-8`` for good); the
    moments come from a histogram of a subsample rather than the whole tensor.
    """

    def __init__(self, *, bits: int = 8, bins: int = EMD_BINS, max_samples: int | None = DEFAULT_MAX_SAMPLES) -> None:
        _check_bits(bits, "emd")
        _check_sampling(bins, max_samples)
        self.bits = bits
        self.bins = int(bins)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.reset()

    def reset(self) -> None:
        """Forget all data (the configuration is kept)."""
        self.best_loss = math.inf
        self.threshold = 0.0
        self.abs_max = 0.0
        self.updates = 0

    def update(self, array) -> None:
        """Score one batch's candidates; keep its best if it is the best so far."""
        flat = _as_real(array)
        if not flat.size:
            return
        batch_max = _abs_max(flat)
        self.abs_max = max(self.abs_max, batch_max)
        if batch_max == 0.0:
            return
        losses = emd_moment_losses(strided_sample(flat, self.max_samples, self.updates), batch_max,
                                   bits=self.bits, bins=self.bins)
        best = _last_argmin(losses)
        if losses[best] <= self.best_loss:
            self.best_loss = float(losses[best])
            self.threshold = float(EMD_CANDIDATES[best] * batch_max)
        self.updates += 1

    def compute_scale(self) -> np.ndarray:
        """The best batch's threshold (0 if nothing non-zero was observed)."""
        return _scale(self.threshold)


# ----------------------------------------------------------------- factory


def _check_percent(percent: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, (int, float, np.floating, np.integer)):
        raise ConfigTypeError(f"hist_percent must be a float in (0, 1], got {percent!r}")
    if not 0.0 < float(percent) <= 1.0:
        raise ConfigError(f"hist_percent must be in (0, 1], got {percent!r}")
    return float(percent)


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
