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

Modules: ``base`` (the :class:`Observer` contract), ``simple`` (abs_max, min_max, avg),
``histogram`` (:class:`StreamingHistogram`; hist, KL, mse), ``thresholds`` (the vectorised
searches), ``emd``, ``factory`` (:func:`make_observer`). Every public name is importable from
this package.
"""

from ..common.errors import NonFiniteError
from .base import Observer
from .emd import EMD_BINS, EMD_CANDIDATES, EMDObserver, emd_moment_losses
from .factory import ALGORITHMS, make_observer
from .histogram import (DEFAULT_BINS, DEFAULT_MAX_SAMPLES, HistObserver, KLObserver, MSEObserver, StreamingHistogram,
                        rebin_to_abs_max, sample_stride, strided_sample)
from .simple import AbsMaxObserver, AvgObserver, MinMaxObserver
from .thresholds import (SCALE_CANDIDATES, compute_kl_divergences, compute_quantization_errors, search_error_threshold,
                         search_kl_threshold, search_percentile_threshold)

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

