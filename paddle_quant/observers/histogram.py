"""The streaming histogram of ``|x|`` and the observers that search a threshold on it: ``hist``, ``KL``, ``mse``.

One pass, bounded memory: the histogram widens its range by powers of two and merges bins when
a batch exceeds it, and bins at most ``max_samples`` elements per update (a deterministic strided
subsample); the abs max is always exact. The searches themselves are in
:mod:`paddle_quant.observers.thresholds`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..common.errors import ConfigError
from ..common.numerics import qmax as _qmax
from .base import _F32, _as_real, _check_bits, _check_percent, _min_max, _scale
from .thresholds import search_error_threshold, search_kl_threshold, search_percentile_threshold

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_MAX_SAMPLES",
    "sample_stride",
    "strided_sample",
    "StreamingHistogram",
    "rebin_to_abs_max",
    "HistObserver",
    "KLObserver",
    "MSEObserver",
]

DEFAULT_BINS = 2048
"""Histogram bins, as Paddle's ``PostTrainingQuantization``."""

DEFAULT_MAX_SAMPLES = 65536
"""Elements histogrammed per update at most; bigger tensors are subsampled."""


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
