"""Weight scale methods (numpy only): abs max, per-channel abs max, ADMM, power of two.

:func:`weight_scale` returns the threshold(s) a weight is quantized with in
Paddle's convention (``q = clip(rint(w * qmax / s), -qmax-1, qmax)``, see
:func:`paddle_quant.common.numerics.quantize_linear`): float32 of shape (1,) per
tensor or (C,) per channel along ``axis``.

An all-zero tensor or channel gets scale 1.0 under every method: it
quantizes to 0 exactly with any positive scale, and 1.0 keeps ``1/s`` and the
runtimes' scale checks finite (Paddle's abs max would give 0).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from ..common.errors import ConfigError, ConfigTypeError, closest_match
from ..common.numerics import qmax as _qmax
from ..common.numerics import fake_quant_dequant, quantize_linear

__all__ = ["WEIGHT_METHODS", "DEFAULT_ADMM_ITERATIONS", "weight_scale", "admm_scale", "qdq_squared_errors",
           "power_of_two_scale"]

WEIGHT_METHODS: tuple[str, ...] = ("abs_max", "channel_wise_abs_max", "admm", "power_of_two")
"""Methods :func:`weight_scale` accepts."""

DEFAULT_ADMM_ITERATIONS = 10
"""ADMM alternations at most (it stops earlier once ``q`` no longer changes)."""

_F32 = np.float32
_ZERO_SCALE = 1.0  # scale of an all-zero tensor or channel


def _rows(w: np.ndarray, axis: int | None) -> np.ndarray:
    """``w`` as float64 rows: one row per channel along ``axis``, or a single row."""
    if axis is None or axis < 0:
        return w.astype(np.float64).reshape(1, -1)
    if axis >= w.ndim:
        raise ConfigError(f"axis must be < w.ndim = {w.ndim} (or None/-1 for per tensor), got {axis}")
    return np.moveaxis(w, axis, 0).astype(np.float64).reshape(w.shape[axis], -1)


def _row_abs_max(rows: np.ndarray) -> np.ndarray:
    """Per-row ``max|w|``, with :data:`_ZERO_SCALE` for all-zero rows."""
    m = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    return np.where(m > 0, m, _ZERO_SCALE)


def qdq_squared_errors(rows: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Per row of ``rows`` (float64 (C, K)): ``sum (w - QDQ(w))**2`` with the float32 scale the model
    stores and the kernel's float32 arithmetic (:func:`~paddle_quant.common.numerics.fake_quant_dequant`),
    each sum exactly rounded (``math.fsum``), so any caller scoring the same scale gets the same number."""
    dequantized = fake_quant_dequant(rows, np.asarray(scale).astype(_F32), bits, axis=0).astype(np.float64)
    return np.array([math.fsum(row) for row in (rows - dequantized) ** 2])


def admm_scale(rows: np.ndarray, bits: int = 8, iterations: int = DEFAULT_ADMM_ITERATIONS) -> np.ndarray:
    """TNN's ADMM weight scale for each row of ``rows`` (float64 (C, K)), vectorised.

    Alternates, from ``s = max|w|``:
    ``q = clip(rint(w * qmax / s), -qmax-1, qmax)`` (the best grid point for
    ``s``, computed by :func:`~paddle_quant.common.numerics.quantize_linear`) and
    ``s = qmax * <w, q> / <q, q>`` (the least-squares scale for ``q``). Stops
    after ``iterations`` rounds or when no ``q`` changes; rows with ``q = 0``
    keep their scale.

    In exact arithmetic neither step increases ``||w - s q / qmax||**2``; in
    the kernel's float32 arithmetic one can, by a rounding (a weight with many
    zeros went 0.278196 -> 0.27820146). So every row keeps its best iterate,
    abs max included, scored by :func:`qdq_squared_errors` (ties keep the
    earlier one): never worse than abs max, by construction.

    Returns:
        float64 array of shape (C,), each value a float32 number (what the model stores).
    """
    q_max = _qmax(bits)
    if q_max < 1:
        raise ConfigError(f"bits must be in 2..16 for method 'admm', got {bits!r}")
    scale = _row_abs_max(rows)
    best = scale.astype(_F32).astype(np.float64)
    best_error = qdq_squared_errors(rows, best, bits)
    prev = None
    for _ in range(iterations):
        q = quantize_linear(rows, scale.astype(_F32), bits, axis=0).astype(np.float64)
        if prev is not None and np.array_equal(q, prev):
            break
        qq = np.einsum("ij,ij->i", q, q)
        wq = np.einsum("ij,ij->i", rows, q)
        scale = np.where(qq > 0, q_max * wq / np.where(qq > 0, qq, 1.0), scale)
        candidate = scale.astype(_F32).astype(np.float64)
        error = qdq_squared_errors(rows, candidate, bits)
        better = error < best_error
        best, best_error = np.where(better, candidate, best), np.where(better, error, best_error)
        prev = q
    return best


def power_of_two_scale(rows: np.ndarray) -> np.ndarray:
    """TVM ``power2``: ``2**ceil(log2(max|w|))`` per row (never clips), exact via ``frexp``."""
    mantissa, exponent = np.frexp(_row_abs_max(rows))
    exponent = np.where(mantissa == 0.5, exponent - 1, exponent)  # exact powers of two stay
    return np.ldexp(1.0, exponent)


def _check_iterations(iterations: int) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise ConfigTypeError(f"iterations must be an int >= 1, got {iterations!r}")
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations!r}")
    return int(iterations)


def _check_axis(method: str, axis: int | None) -> None:
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
        raise ConfigTypeError(f"axis must be an int or None, got {axis!r}")
    if method == "channel_wise_abs_max" and (axis is None or axis < 0):
        raise ConfigError(
            f"method 'channel_wise_abs_max' needs a channel axis >= 0 (0 for conv2d, "
            f"1 for mul/matmul/conv2d_transpose), got axis={axis!r}"
        )


def weight_scale(
    w: ArrayLike,
    method: str,
    *,
    bits: int = 8,
    axis: int | None = None,
    iterations: int = DEFAULT_ADMM_ITERATIONS,
) -> np.ndarray:
    """Quantization scale(s) of weight ``w`` by ``method`` (one of :data:`WEIGHT_METHODS`).

    Args:
        w: the float weight (non-empty, finite).
        method: ``abs_max`` (``max|w|``), ``channel_wise_abs_max`` (the same,
            but a channel axis is required), ``admm`` (:func:`admm_scale`) or
            ``power_of_two`` (:func:`power_of_two_scale`).
        bits: weight bits (1..16; ``admm`` needs 2..16).
        axis: channel axis (Paddle's ``quant_axis``): one scale per index of
            that axis; None or negative means one scale for the tensor (not
            allowed with ``channel_wise_abs_max``).
        iterations: ADMM rounds at most.

    Returns:
        float32 array: shape (1,) per tensor, (w.shape[axis],) per channel.
        All-zero tensors/channels get 1.0 (see module docstring).

    Raises:
        ConfigError: unknown method, bad axis/bits/iterations, empty or
            non-finite ``w``.
    """
    if not isinstance(method, str) or method not in WEIGHT_METHODS:
        hint = closest_match(method, WEIGHT_METHODS)
        extra = f" (did you mean {hint!r}?)" if hint else ""
        raise ConfigError(f"method must be one of {list(WEIGHT_METHODS)}, got {method!r}{extra}")
    _check_axis(method, axis)
    _qmax(bits)
    w = np.asarray(w)
    if w.size == 0:
        raise ConfigError(f"w must be a non-empty array, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ConfigError("w contains NaN or inf; no scale can be computed")
    rows = _rows(w, axis)
    if method == "admm":
        scale = admm_scale(rows, bits, _check_iterations(iterations))
    elif method == "power_of_two":
        scale = power_of_two_scale(rows)
    else:
        scale = _row_abs_max(rows)
    return scale.astype(_F32)
