"""Bias correction arithmetic (numpy only).

Quantizing a weight ``W`` to ``Ŵ`` shifts the expected output of a linear op by
``E[(Ŵ - W) x] = (Ŵ - W) · E[x]`` per output channel. Subtracting that shift
from the bias removes the mean error (Nagel et al., "Data-Free Quantization",
2019, section 4.2; here with ``E[x]`` measured on the calibration data).
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_output_shift", "matmul_output_shift", "conv_input_mean", "matmul_input_mean"]


def conv_output_shift(delta_w: np.ndarray, input_mean: np.ndarray, groups: int = 1) -> np.ndarray:
    """Per-output-channel shift of a grouped conv: ``Δ[o] = Σ_{i,kh,kw} ΔW[o,i,kh,kw] · E[x][g(o)·I/g + i]``.

    Args:
        delta_w: ``Ŵ - W`` of shape [O, I/g, kh, kw].
        input_mean: mean of each input channel, shape [I].
        groups: conv groups (``O`` and ``I`` are multiples of it).
    """
    out_channels, in_per_group = delta_w.shape[:2]
    grouped_w = delta_w.reshape(groups, out_channels // groups, in_per_group, -1).sum(axis=3)
    grouped_mean = np.asarray(input_mean, np.float64).reshape(groups, in_per_group)
    return np.einsum("goi,gi->go", grouped_w, grouped_mean).reshape(out_channels)


def matmul_output_shift(delta_w: np.ndarray, input_mean: np.ndarray, *, transposed: bool = False) -> np.ndarray:
    """Shift of ``x @ W`` (W [in, out]) or ``x @ W.T`` when ``transposed`` (W [out, in]): ``E[x] @ ΔW``."""
    weight = delta_w.T if transposed else delta_w
    return np.asarray(input_mean, np.float64) @ weight.reshape(weight.shape[0], -1)


def conv_input_mean(x: np.ndarray) -> np.ndarray:
    """Mean of each channel of an NCHW batch."""
    return x.mean(axis=(0,) + tuple(range(2, x.ndim)), dtype=np.float64)


def matmul_input_mean(x: np.ndarray, leading_dims: int) -> np.ndarray:
    """Mean of each input feature once the first ``leading_dims`` dims are flattened into rows."""
    rows = int(np.prod(x.shape[:leading_dims]))
    return x.reshape(rows, -1).mean(axis=0, dtype=np.float64)
