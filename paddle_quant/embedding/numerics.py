"""Numerics of embedding-table quantization (numpy only): abs_max, log codebook, product quantization.

Each quantizer returns integer codes plus what the runtime needs to rebuild
floats, and each has a numpy dequantizer that is the oracle the program-level
tests compare the Executor against. No function divides by a zero scale, so an
all-zero table gives zero codes and zero reconstructions, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..common.errors import ConfigError

__all__ = [
    "AbsMaxTable",
    "LogTable",
    "PQTable",
    "LOG_DICT_SIZE",
    "LOG_STEP",
    "abs_max_clip_value",
    "quantize_abs_max",
    "dequantize_abs_max",
    "quantize_log",
    "dequantize_log",
    "kmeans",
    "assign_nearest",
    "product_quantize",
    "reconstruct_pq",
    "pq_code_offset",
]

LOG_DICT_SIZE = 128
"""Length of the ``Dict`` input of Paddle's ``dequantize_log`` (codes index it as ``c`` or ``c + 128``)."""

LOG_STEP = 0.125
"""Spacing of log2 levels in the log codebook (PaddleSlim's ``_inverval``)."""


@dataclass(frozen=True)
class AbsMaxTable:
    """abs_max result: ``codes`` (int8/int16), float32 ``scale`` (= max|clipped W|), ``bits``, clip value used."""

    codes: np.ndarray
    scale: np.float32
    bits: int
    clip: float

    @property
    def step(self) -> float:
        """Quantization step ``scale / qmax``."""
        return float(self.scale) / (2 ** (self.bits - 1) - 1)


@dataclass(frozen=True)
class LogTable:
    """log result: int8 ``codes`` (negative for negative values) and the float32 ``dictionary`` [128]."""

    codes: np.ndarray
    dictionary: np.ndarray


@dataclass(frozen=True)
class PQTable:
    """Product quantization result: ``codes`` [V, M] (centroid indices 0..K-1) and ``codebooks`` [M, K, D/M]."""

    codes: np.ndarray
    codebooks: np.ndarray


# ------------------------------------------------------------------ abs_max
def abs_max_clip_value(table: np.ndarray, threshold: Optional[float]) -> float:
    """The clip value: ``threshold`` if given, else PaddleSlim's rule.

    PaddleSlim's rule: if ``max|W| >= 1`` clip at the 99.99th percentile of
    ``|W|``, otherwise do not clip (the clip value is ``max|W|``).
    """
    if threshold is not None:
        return float(threshold)
    peak = float(np.max(np.abs(table))) if table.size else 0.0
    return float(np.percentile(np.abs(table), 99.99)) if peak >= 1.0 else peak


def quantize_abs_max(table: np.ndarray, bits: int = 8, threshold: Optional[float] = None) -> AbsMaxTable:
    """Per-tensor symmetric quantization of a table.

    ``Wc = clip(W, -t, t)`` with ``t`` from :func:`abs_max_clip_value`;
    ``scale = max|Wc|``; ``q = round_half_even(Wc / scale * qmax)`` with
    ``qmax = 2**(bits-1) - 1``. Dequantization is ``q * scale / qmax``
    (Paddle's ``dequantize_abs_max`` with ``max_range = qmax``), so inside
    ``[-t, t]`` the error is at most ``scale / qmax / 2``. A zero scale gives
    zero codes (no division).
    """
    table = np.asarray(table, dtype=np.float32)
    clip = abs_max_clip_value(table, threshold)
    clipped = np.clip(table, -clip, clip)
    scale = np.float32(np.max(np.abs(clipped))) if clipped.size else np.float32(0.0)
    qmax = 2 ** (bits - 1) - 1
    safe = scale if scale > 0 else np.float32(1.0)
    codes = np.round(clipped / safe * np.float32(qmax))
    dtype = np.int16 if bits > 8 else np.int8
    return AbsMaxTable(codes=np.clip(codes, -qmax, qmax).astype(dtype), scale=scale, bits=bits, clip=clip)


def dequantize_abs_max(codes: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """``codes * scale / qmax`` in float32 (Paddle's ``dequantize_abs_max``)."""
    return codes.astype(np.float32) * np.float32(scale) / np.float32(2 ** (bits - 1) - 1)


# ---------------------------------------------------------------------- log
def _log_levels(magnitudes: np.ndarray, count: int, step: float) -> np.ndarray:
    """The ``count`` largest distinct values of ``round(log2|w| / step) * step`` over nonzero ``|w|``, ascending."""
    nonzero = magnitudes[magnitudes > 0]
    if count <= 0 or nonzero.size == 0:
        return np.zeros(0, dtype=np.float64)
    levels = np.unique(np.round(np.log2(nonzero.astype(np.float64)) / step) * step)
    return levels[-count:]


def quantize_log(table: np.ndarray, bits: int = 8, step: float = LOG_STEP) -> LogTable:
    """Sign + log2-codebook quantization, laid out for Paddle's ``dequantize_log``.

    Magnitudes are rounded in the log domain, ``e = round(log2|w| / step) * step``.
    The dictionary holds ``0`` at index 0 and ``2**e`` for the ``2**(bits-1) - 1``
    largest distinct levels at indices ``1..``; a value takes the index ``i`` of
    its nearest level in the log2 domain (or 0 when ``|w|`` is nearer to 0 than to
    the smallest level in linear terms, and for ``w == 0``). The code is ``i`` for
    ``w >= 0`` and ``i - 128`` for ``w < 0``; ``dequantize_log`` returns
    ``dict[c]`` for ``c >= 0`` and ``-dict[c + 128]`` for ``c < 0``. So the sign of
    the code is the sign of ``w`` and, for a value whose level is kept (and
    whose magnitude is a normal float32), the relative error is at most
    ``2**(step/2) - 1``. At most ``2**bits`` distinct
    codes are used; an all-zero table gives all-zero codes and dictionary.
    """
    table = np.asarray(table, dtype=np.float32)
    magnitudes = np.abs(table)
    levels = _log_levels(magnitudes, 2 ** (bits - 1) - 1, step)
    dictionary = np.zeros(LOG_DICT_SIZE, dtype=np.float32)
    dictionary[1:1 + levels.size] = np.exp2(levels).astype(np.float32)
    if levels.size:
        index = _nearest_log_index(magnitudes, levels, step)
        index = np.where(magnitudes < dictionary[1] / 2, 0, index)
    else:
        index = np.zeros(table.shape, dtype=np.int64)
    codes = np.where(table < 0, index - LOG_DICT_SIZE, index)
    return LogTable(codes=codes.astype(np.int8), dictionary=dictionary)


def _nearest_log_index(magnitudes: np.ndarray, levels: np.ndarray, step: float) -> np.ndarray:
    """1-based index of the nearest level (log2 domain) for each magnitude; zeros get index 1 (overridden later)."""
    with np.errstate(divide="ignore"):
        logs = np.round(np.log2(magnitudes.astype(np.float64)) / step) * step
    upper = np.clip(np.searchsorted(levels, logs), 0, levels.size - 1)
    lower = np.clip(upper - 1, 0, levels.size - 1)
    pick_lower = np.abs(levels[lower] - logs) < np.abs(levels[upper] - logs)
    return np.where(pick_lower, lower, upper) + 1


def dequantize_log(codes: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """Paddle's ``dequantize_log``: ``dict[c]`` for ``c >= 0``, ``-dict[c + 128]`` for ``c < 0``."""
    codes = codes.astype(np.int64)
    magnitude = dictionary[np.where(codes < 0, codes + LOG_DICT_SIZE, codes)]
    return np.where(codes < 0, -magnitude, magnitude).astype(np.float32)


# --------------------------------------------------------------- k-means, PQ
def assign_nearest(points: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean) of each point, in row chunks.

    Uses ``|x - c|^2 = |x|^2 - 2 x.c + |c|^2`` (the ``|x|^2`` term does not
    change the argmin), vectorised as one matrix product per chunk.
    """
    norms = np.einsum("kd,kd->k", centroids, centroids)
    out = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], chunk):
        distances = points[start:start + chunk] @ centroids.T
        distances *= -2.0
        distances += norms
        out[start:start + chunk] = np.argmin(distances, axis=1)
    return out


def _update_centroids(points, assignment, centroids, fixed_zero):
    """Mean of the points assigned to each centroid; empty clusters keep their centroid."""
    k, dim = centroids.shape
    counts = np.bincount(assignment, minlength=k).astype(np.float64)
    sums = np.zeros((k, dim), dtype=np.float64)
    _sum_sorted(sums, assignment, points)
    updated = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centroids)
    if fixed_zero is not None:
        updated[fixed_zero] = 0.0
    return updated.astype(centroids.dtype), counts


def _sum_sorted(sums: np.ndarray, assignment: np.ndarray, points: np.ndarray) -> None:
    """``sums[a] += p`` for every (a, p), by sorting and ``np.add.reduceat`` (fast for many points)."""
    order = np.argsort(assignment, kind="stable")
    keys = assignment[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sums[keys[starts]] = np.add.reduceat(points[order].astype(np.float64), starts, axis=0)


def _reseed_empty(points, assignment, centroids, counts, rng):
    """Move empty centroids onto the points farthest from their own centroid (largest errors first)."""
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return centroids
    errors = np.einsum("nd,nd->n", points - centroids[assignment], points - centroids[assignment])
    farthest = np.argsort(-errors, kind="stable")[: empty.size]
    if errors[farthest].max(initial=0.0) <= 0:
        return centroids
    centroids = centroids.copy()
    centroids[empty[: farthest.size]] = points[farthest]
    return centroids


def kmeans(points: np.ndarray, k: int, iterations: int, rng: np.random.Generator,
           fixed_zero: Optional[int] = None) -> np.ndarray:
    """Lloyd's k-means: ``k`` centroids minimising ``sum_i min_j |x_i - c_j|^2``.

    Initialised on ``k`` distinct points drawn with ``rng`` (with replacement
    when there are fewer points than ``k``); each iteration assigns every point
    to its nearest centroid and moves each centroid to the mean of its points;
    a centroid left empty moves to the point with the largest error. When
    ``fixed_zero`` is an index, that centroid is pinned to the zero vector.

    Returns:
        float32 centroids [k, dim].
    """
    points = np.asarray(points, dtype=np.float32)
    pick = rng.choice(points.shape[0], size=k, replace=points.shape[0] < k)
    centroids = points[pick].copy()
    if fixed_zero is not None:
        centroids[fixed_zero] = 0.0
    for _ in range(iterations):
        assignment = assign_nearest(points, centroids)
        centroids, counts = _update_centroids(points, assignment, centroids, fixed_zero)
        centroids = _reseed_empty(points, assignment, centroids, counts, rng)
        if fixed_zero is not None:
            centroids[fixed_zero] = 0.0
    return centroids


def pq_code_offset(codebook_size: int) -> int:
    """How codes are stored in int8: ``stored = code - offset`` (offset 128 when codes exceed 127, else 0).

    A lookup op's ``padding_idx`` outputs stored code 0, i.e. centroid ``offset``.
    """
    return 128 if codebook_size > 128 else 0


def product_quantize(table: np.ndarray, subspaces: int, codebook_size: int, iterations: int, seed: int,
                     sample_rows: Optional[int] = None, fixed_zero: Optional[int] = None) -> PQTable:
    """Product quantization of a [V, D] table.

    Each row is split into ``M = subspaces`` sub-vectors of ``D/M`` values; in
    each sub-space a ``K = codebook_size`` codebook is fitted by :func:`kmeans`
    (on ``sample_rows`` rows drawn without replacement with ``seed``, or all
    rows) and every row's sub-vector is coded by its nearest centroid:
    ``W[v] ~= concat_m C_m[codes[v, m]]``. Storage: ``V*M`` codes of
    ``log2 K`` bits plus ``M*K*D/M`` floats. ``fixed_zero`` pins that centroid
    index to zero in every sub-space (used so a padding row reconstructs zero).

    Raises:
        ConfigError: ``subspaces`` does not divide ``D``.
    """
    table = np.asarray(table, dtype=np.float32)
    rows, dim = table.shape
    if subspaces > dim or dim % subspaces:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0]
        raise ConfigError(f"config key 'subspaces' got {subspaces}: does not divide the embedding width {dim}; "
                          f"allowed: {divisors}")
    rng = np.random.default_rng(seed)
    sample = rng.choice(rows, size=sample_rows, replace=False) if sample_rows and sample_rows < rows else None
    parts = table.reshape(rows, subspaces, dim // subspaces)
    codebooks = np.empty((subspaces, codebook_size, dim // subspaces), dtype=np.float32)
    codes = np.empty((rows, subspaces), dtype=np.int64)
    for m in range(subspaces):
        fit_on = parts[:, m] if sample is None else parts[sample, m]
        codebooks[m] = kmeans(fit_on, codebook_size, iterations, rng, fixed_zero)
        codes[:, m] = assign_nearest(parts[:, m], codebooks[m])
    return PQTable(codes=codes, codebooks=codebooks)


def reconstruct_pq(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """``concat_m codebooks[m, codes[..., m]]``: the [..., D] float32 rows the codes stand for."""
    subspaces = codebooks.shape[0]
    picked = codebooks[np.arange(subspaces), codes]
    return picked.reshape(*codes.shape[:-1], subspaces * codebooks.shape[2])
