"""Smoothing arithmetic (numpy only): the per-channel scale of SmoothQuant and the search for alpha.

For an input channel ``j`` with activation range ``a_j = max|X_j|`` (over the calibration data) and
weight range ``w_j = max|W_j|`` (over every weight op reading ``X``),

    s_j = a_j^alpha / w_j^(1 - alpha)

``alpha = 0`` puts all of a channel's range in the activation (``s = 1 / w``: weights normalised),
``alpha = 1`` all of it in the weight (``X / s`` has range 1 in every channel). When alpha is not given
it is chosen per tensor from :data:`ALPHA_CANDIDATES` by the error of the simulated int8 layer on
samples of its calibration inputs: activations fake-quantized per tensor at their abs max, weights per
output channel (or per tensor) at theirs, error = sum over the reading weight ops of
``||y_q - y||^2 / ||y||^2``. The abs-max activation grid stands in for the calibration algorithm's
clipped one; it ranks candidates, it is not the final scale.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALPHA_CANDIDATES", "SCALE_LIMITS", "smoothing_scale", "input_channel_peaks", "sample_rows",
           "sample_patches", "search_alpha"]

ALPHA_CANDIDATES = tuple(round(0.05 * i, 2) for i in range(21))
"""Alphas tried when none is given: 0, 0.05, ..., 1."""

SCALE_LIMITS = (1e-5, 1e5)
"""Scales are clipped into this range so that rescaled float32 values stay normal numbers."""


def smoothing_scale(activation_peak: np.ndarray, weight_peak: np.ndarray, alpha: float) -> np.ndarray:
    """``s_j = a_j^alpha / w_j^(1 - alpha)``, clipped to :data:`SCALE_LIMITS`; 1 where a range is zero or
    not finite (a dead channel keeps its values)."""
    a, w = np.asarray(activation_peak, np.float64), np.asarray(weight_peak, np.float64)
    valid = np.isfinite(a) & np.isfinite(w) & (a > 0) & (w > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = np.power(a, alpha) / np.power(w, 1.0 - alpha)
    return np.where(valid, np.clip(scale, *SCALE_LIMITS), 1.0)


def input_channel_peaks(grouped_weights) -> np.ndarray:
    """``max |W_j|`` per input channel over weights given as ``[groups, out / groups, in / groups, k]``."""
    peaks = [np.abs(w).max(axis=(1, 3)).reshape(-1) for w in grouped_weights]
    return np.max(np.stack(peaks), axis=0)


def sample_rows(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` random rows of ``x`` flattened to ``[-1, channels]`` (channels last), as ``[n, C, 1]``."""
    rows = x.reshape(-1, x.shape[-1])
    pick = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return rows[pick][:, :, None].astype(np.float64)


def sample_patches(x: np.ndarray, kernel: tuple[int, int], dilations: tuple[int, int], count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` random convolution windows of NCHW ``x`` as ``[n, C, kh * kw]`` (windows inside the
    input, zero-padded when the input is smaller than one window)."""
    (kh, kw), (dh, dw) = kernel, dilations
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pad_h, pad_w = max(0, span_h - x.shape[2]), max(0, span_w - x.shape[3])
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))
    positions = x.shape[0] * (x.shape[2] - span_h + 1) * (x.shape[3] - span_w + 1)
    pick = rng.choice(positions, size=min(count, positions), replace=False)
    n, rest = np.divmod(pick, (x.shape[2] - span_h + 1) * (x.shape[3] - span_w + 1))
    top, left = np.divmod(rest, x.shape[3] - span_w + 1)
    rows = top[:, None, None] + dh * np.arange(kh)[None, :, None]
    cols = left[:, None, None] + dw * np.arange(kw)[None, None, :]
    windows = x[n[:, None, None], :, rows, cols]  # [n, kh, kw, C]
    return windows.reshape(len(pick), kh * kw, x.shape[1]).transpose(0, 2, 1).astype(np.float64)


def _fake_quant(values: np.ndarray, peak: np.ndarray, bits: int) -> np.ndarray:
    qmax = 2 ** (bits - 1) - 1
    scale = np.where(peak > 0, peak / qmax, 1.0)
    return np.clip(np.round(values / scale), -qmax, qmax) * scale


def _output(samples: np.ndarray, grouped: np.ndarray) -> np.ndarray:
    groups, _, per_group, k = grouped.shape
    return np.einsum("ngck,gock->ngo", samples.reshape(len(samples), groups, per_group, k), grouped)


def _layer_error(layers, references, scale, bits, per_channel) -> float:
    weight_bits, activation_bits = bits
    """Sum over the weight ops of the relative squared error of the fake-quantized layer at ``scale``."""
    activation_peak = max(float(np.abs(samples / scale.reshape(1, -1, 1)).max()) for samples, _ in layers)
    error = 0.0
    for (samples, grouped), reference in zip(layers, references):
        quantized = _fake_quant(samples / scale.reshape(1, -1, 1), np.asarray(activation_peak), activation_bits)
        weight = grouped * scale.reshape(grouped.shape[0], 1, -1, 1)
        peak = np.abs(weight).max(axis=(2, 3), keepdims=True) if per_channel else np.abs(weight).max()
        out = _output(quantized, _fake_quant(weight, peak, weight_bits))
        error += float(((out - reference) ** 2).sum() / max((reference ** 2).sum(), 1e-30))
    return error


def search_alpha(layers, activation_peak: np.ndarray, *, weight_bits: int = 8, activation_bits: int = 8,
                 per_channel: bool = True, candidates=ALPHA_CANDIDATES) -> tuple[float, dict[float, float]]:
    """The alpha of ``candidates`` with the smallest simulated int8 error (see the module docstring).

    Args:
        layers: one ``(samples, grouped_weight)`` per weight op reading the tensor: its calibration inputs as
            ``[n, C, k]`` (rows, or convolution windows) and its weight as ``[groups, out / groups,
            in / groups, k]``.
        activation_peak: ``max |X_j|`` per channel over the whole calibration data.
        weight_bits / activation_bits: bits of the simulated grids.
        per_channel: weights quantized per output channel (else per tensor).
        candidates: alphas to try; ties go to the first.

    Returns:
        The chosen alpha and the error of every candidate.
    """
    weight_peak = input_channel_peaks([grouped for _, grouped in layers])
    references = [_output(samples, grouped) for samples, grouped in layers]
    errors = {float(alpha): _layer_error(layers, references, smoothing_scale(activation_peak, weight_peak, alpha),
                                         (weight_bits, activation_bits), per_channel)
              for alpha in candidates}
    return min(errors, key=errors.get), errors
