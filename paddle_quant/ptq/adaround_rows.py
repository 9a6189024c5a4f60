"""The input rows a layer multiplies its weight with, and their Gram matrices (numpy only).

A conv2d / depthwise_conv2d or a matmul computes, for every output row,
``out[:, g·Og + o] = Σ_k rows_g[:, k] · cols[g, k, o]``: for a conv the rows are the
im2col patches of its input (one per output pixel, ``Ig·kh·kw`` values ordered as
the filter's ``[Ig, kh, kw]``), for a matmul the rows of its input flattened to 2-D.
:func:`to_columns` puts a weight in that ``(groups, K, Og)`` form, :func:`conv_rows` and
:func:`matmul_rows` give the rows of a batch (a seeded random subset of at most
``max_rows`` of them, so a large feature map costs no more than a small one), and
:class:`GramObserver` sums ``x̂ᵀx̂`` and ``x̂ᵀ(x·W)`` over the batches, which is all AdaRound
needs from the data (:mod:`paddle_quant.ptq.adaround`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.errors import ConfigError

__all__ = ["WeightLayout", "ConvGeometry", "to_columns", "from_columns", "conv_rows", "matmul_rows",
           "group_matmul", "GramObserver"]


@dataclass(frozen=True)
class WeightLayout:
    """How a weight tensor maps to ``(groups, K, Og)`` columns.

    Attributes:
        groups: conv groups (1 for a matmul).
        outputs_first: the weight is ``[O, ...]`` (conv filters, ``matmul_v2(trans_y=True)``), else ``[K, O]``.
    """

    groups: int = 1
    outputs_first: bool = True


@dataclass(frozen=True)
class ConvGeometry:
    """A conv2d's window: kernel ``(kh, kw)``, strides, paddings ``(top, bottom, left, right)``, dilations."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    paddings: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)


def to_columns(a: np.ndarray, layout: WeightLayout) -> np.ndarray:
    """``a`` (weight-shaped) as ``(groups, K, Og)`` columns, float64."""
    a = np.asarray(a, np.float64)
    if layout.outputs_first:
        return a.reshape(layout.groups, a.shape[0] // layout.groups, -1).transpose(0, 2, 1)
    return a.reshape(1, a.shape[0], -1)


def from_columns(c: np.ndarray, shape: tuple[int, ...], layout: WeightLayout) -> np.ndarray:
    """Inverse of :func:`to_columns`: ``(groups, K, Og)`` back to the weight's ``shape``."""
    if layout.outputs_first:
        return np.ascontiguousarray(c.transpose(0, 2, 1)).reshape(shape)
    return c.reshape(shape)


def group_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[g] @ b[g]`` for every group: one BLAS call for one group, numpy's own loop (einsum) for many.

    numpy's stacked matmul makes one threaded BLAS call per group; with many small groups
    (depthwise convs) and the CPU shared, each call waited for its threads: 7 s per batch for 240
    groups of 2048 x 25 rows on PP-OCRv4 rec, against about 0.2 s for einsum.
    """
    if a.shape[0] == 1:
        return np.matmul(a, b)
    return np.einsum("gij,gjk->gik", a, b)


def _sample(total: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if total <= max_rows:
        return np.arange(total)
    return np.sort(rng.choice(total, size=max_rows, replace=False))


def conv_rows(x: np.ndarray, geometry: ConvGeometry, groups: int, *, max_rows: int,
              rng: np.random.Generator) -> np.ndarray:
    """im2col rows of an NCHW batch ``x``, at most ``max_rows`` output pixels: ``(groups, n, Ig·kh·kw)``."""
    (kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw) = (
        geometry.kernel, geometry.strides, geometry.paddings, geometry.dilations)
    padded = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, H', W', kh, kw]
    n, channels, height, width = windows.shape[:4]
    if channels % groups:
        raise ConfigError(f"input has {channels} channels, not a multiple of groups={groups}")
    picked = _sample(n * height * width, max_rows, rng)
    batch, rest = np.divmod(picked, height * width)
    rows = windows[batch, :, rest // width, rest % width]  # [S, C, kh, kw]
    # contiguous: numpy's stacked matmul on this transposed view was 30x slower (PP-OCR cls depthwise layers)
    return np.ascontiguousarray(rows.reshape(len(picked), groups, -1).transpose(1, 0, 2))


def matmul_rows(x: np.ndarray, leading_dims: int, *, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``x`` flattened after its first ``leading_dims`` dims, at most ``max_rows``: ``(1, n, K)``."""
    x = np.asarray(x, np.float32)
    flat = x.reshape(int(np.prod(x.shape[:leading_dims])), -1)
    return flat[_sample(flat.shape[0], max_rows, rng)][None]


class GramObserver:
    """Streams, per group, ``A = Σ x̂ᵀx̂`` (``(groups, K, K)``) and ``BW = Σ x̂ᵀ(x·W)`` (``(groups, K, Og)``),
    float64, and the row count, for a layer with weight columns ``W``.

    ``x`` are a layer's float input rows, ``x̂`` the same rows as the deployed op sees them
    (quantize-dequantized); the batches themselves are not kept. Summing ``x̂ᵀ(x·W)`` instead of
    ``x̂ᵀx`` needs ``Og`` columns instead of ``K`` (a quarter of the memory for a 3x3 conv).
    """

    def __init__(self, weight_columns: np.ndarray) -> None:
        """Empty sums for a layer whose weight is ``weight_columns`` (``(groups, K, Og)``, :func:`to_columns`)."""
        self.weight_columns = np.asarray(weight_columns, np.float64)
        self.groups, self.k, self.outputs = self.weight_columns.shape
        self.reset()

    def update(self, rows_hat: np.ndarray, rows: np.ndarray) -> None:
        """Add one batch: ``rows_hat`` and ``rows`` of shape ``(groups, n, K)``, the same rows."""
        if rows.shape != (self.groups, rows.shape[1], self.k) or rows_hat.shape != rows.shape:
            raise ConfigError(f"rows of shape {rows.shape} / {rows_hat.shape} do not fit "
                              f"(groups={self.groups}, n, K={self.k})")
        rows_hat, rows = np.asarray(rows_hat, np.float64), np.asarray(rows, np.float64)
        transposed = rows_hat.transpose(0, 2, 1)
        self.a += group_matmul(transposed, rows_hat)
        self.bw += group_matmul(transposed, group_matmul(rows, self.weight_columns))
        self.rows += rows.shape[1]

    def reset(self) -> None:
        """Forget every batch."""
        self.a = np.zeros((self.groups, self.k, self.k))
        self.bw = np.zeros((self.groups, self.k, self.outputs))
        self.rows = 0
