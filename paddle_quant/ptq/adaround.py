"""AdaRound: learned up/down rounding of a layer's weights (Nagel et al., "Up or Down? Adaptive
Rounding for Post-Training Quantization", ICML 2020), numpy only.

For one layer with weight ``W``, scale(s) ``s`` and ``bits``, every weight gets the integer
below or above the value Paddle's ``quantize_linear`` kernel rounds::

    v = (qmax · inv(s)) · W                     float32, numerics.scaled_weight
    q = clip(floor(v) + r, -qmax - 1, qmax),     r ∈ {0, 1}

(the grid freeze uses for ``round_type=0``), chosen to move the layer's output least on the
calibration inputs::

    E(q) = Σ_rows ‖x̂ · Ŵ(q) - x · W‖²,          Ŵ(q) = q · s / qmax

where ``x`` is the layer's float input and ``x̂`` the same input quantize-dequantized with the
layer's activation scale, as the deployed int8 op multiplies it. ``E`` depends on the data only
through ``A = Σ x̂ᵀx̂`` and ``BW = Σ x̂ᵀ(x·W)`` per conv group
(:class:`~paddle_quant.ptq.adaround_rows.GramObserver`)::

    E(q) = tr(Ŵᵀ A Ŵ) - 2 tr(Ŵᵀ BW) + const

so the batches stream through and each iteration costs ``groups · K² · Og`` multiply-adds,
whatever the number of rows.

Relaxation: ``r → h(V) = clip(σ(V)(ζ - γ) + γ, 0, 1)``, ζ = 1.1, γ = -0.1, with ``V`` started
where ``h = v - floor(v)`` (the soft weight is the float weight); the loss::

    (E(Ŵ) - E(W)) / (E(nearest) - E(W))  +  λ · mean(1 - |2h - 1|^β)

is minimised by Adam; the regulariser is off for the first ``warmup`` fraction of the
iterations, then ``β`` falls linearly from 20 to 2. The result is ``r = [h ≥ 0.5]``. Unlike the
paper (``E/N + λ Σ``, λ = 0.01) both terms are normalised, the error by what rounding to
nearest adds to the float weight's and the regulariser by the number of weights, so one λ
(default 30) suits layers of any size and weight magnitude: on toy convs with weights of
standard deviation 1 and 0.05 the paper's form either left most ``h`` undecided after 500
iterations or decided them by the regulariser alone. It is kept only when its ``E`` is below that of rounding to nearest (ties keep
nearest), so the returned rounding is never worse than nearest on the calibration inputs.

The rounding is one bit per weight: :func:`rounded_weight` turns it into the integers the frozen
model holds, :func:`pack_rounding` / :func:`unpack_rounding` store it in the scale table.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np

from ..common.errors import ConfigError
from ..common.numerics import dequantize_linear, qmax, qmin, scaled_weight
from .adaround_rows import GramObserver, WeightLayout, from_columns, group_matmul, to_columns

__all__ = ["AdaRoundOptions", "RoundingResult", "learn_rounding", "nearest_rounding", "rounded_weight",
           "output_error", "pack_rounding", "unpack_rounding"]

_ZETA, _GAMMA = 1.1, -0.1
_ADAM = (0.9, 0.999, 1e-8)


@dataclass(frozen=True)
class AdaRoundOptions:
    """The optimiser's settings: Adam's iterations and learning rate, λ of the normalised loss (see the
    module docstring), the warm-up fraction without regulariser and β's start and end."""

    iterations: int = 500
    reg_weight: float = 30.0
    learning_rate: float = 0.05
    warmup: float = 0.2
    beta: tuple[float, float] = (20.0, 2.0)


@dataclass(frozen=True)
class RoundingResult:
    """A layer's rounding: ``up`` (bool, the weight's shape), the error ``E`` it gives (without the
    constant term) and nearest's, and whether the learned rounding was kept."""

    up: np.ndarray
    error: float
    nearest_error: float
    learned: bool


def rounded_weight(w: np.ndarray, scale: np.ndarray, bits: int, axis: int | None, up: np.ndarray) -> np.ndarray:
    """The int8 weight of a rounding: ``clip(floor(v) + up, -qmax-1, qmax)``, ``v`` as the kernel computes it."""
    lower = np.floor(scaled_weight(w, scale, bits, axis))
    if up.shape != lower.shape:
        raise ConfigError(f"rounding has shape {up.shape}, the weight {lower.shape}")
    return np.clip(lower + up, qmin(bits), qmax(bits)).astype(np.int8)


def nearest_rounding(w: np.ndarray, scale: np.ndarray, bits: int, axis: int | None) -> np.ndarray:
    """The ``up`` bits that reproduce round-to-nearest (:func:`~paddle_quant.common.numerics.weight_to_int`)."""
    v = scaled_weight(w, scale, bits, axis)
    return np.rint(v) > np.floor(v)


def output_error(q: np.ndarray, w: np.ndarray, scale: np.ndarray, bits: int, axis: int | None,
                 layout: WeightLayout, gram: GramObserver) -> float:
    """``tr(ŴᵀAŴ) - 2 tr(ŴᵀBW)`` for integers ``q`` dequantized as the kernel does (``E`` minus its constant)."""
    dequantized = to_columns(dequantize_linear(q, scale, bits, axis), layout)
    return float(np.sum(dequantized * (group_matmul(gram.a, dequantized) - 2.0 * gram.bw)))


def _soft(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sigmoid(V)``, ``h(V)`` and where ``h`` is not clipped (its gradient is non-zero), in ``v``'s dtype."""
    one = v.dtype.type(1)
    sig = one / (one + np.exp(-v))
    raw = sig * v.dtype.type(_ZETA - _GAMMA) + v.dtype.type(_GAMMA)
    return sig, np.clip(raw, 0, 1), (raw > 0) & (raw < 1)


def _regulariser_gradient(h: np.ndarray, beta: float) -> np.ndarray:
    """``d/dh Σ (1 - |2h - 1|^β) = -2β |2h - 1|^(β-1) sign(2h - 1)``."""
    d = 2 * h - 1
    return h.dtype.type(-2.0 * beta) * np.abs(d) ** h.dtype.type(beta - 1.0) * np.sign(d)


def _beta(step: int, options: AdaRoundOptions) -> float | None:
    """β at ``step``, or None during the warm-up (no regulariser)."""
    start = int(options.warmup * options.iterations)
    if step < start:
        return None
    progress = (step - start) / max(options.iterations - start, 1)
    high, low = options.beta
    return high + (low - high) * progress


def _optimise(lower, frac, step_size, target, gram: GramObserver, bits: int, options: AdaRoundOptions,
              norm: float):
    """Adam on ``V`` (columns form, ``norm`` = what nearest adds to the error); returns the final ``h(V)``.

    The residual ``AŴ - BW`` is ``(A·S·floor(v) - BW) + A·S·(q - floor(v))``: the first term once in
    float64, the second, small, each iteration in float32 (half the time of float64; the final
    comparison with nearest is in float64).
    """
    f32 = np.float32
    offset = (group_matmul(gram.a, step_size * lower) - target).astype(f32)
    a, lower, step_size = gram.a.astype(f32), lower.astype(f32), step_size.astype(f32)
    gain = step_size * f32(2.0 / norm)
    v = (-np.log((_ZETA - _GAMMA) / (frac - _GAMMA) - 1.0)).astype(f32)
    m, s = np.zeros_like(v), np.zeros_like(v)
    (b1, b2, eps), lo, hi = _ADAM, qmin(bits), qmax(bits)
    for step in range(options.iterations):
        sig, h, open_ = _soft(v)
        q = lower + h
        inside = (q >= lo) & (q <= hi)
        grad_h = (offset + group_matmul(a, step_size * (np.clip(q, lo, hi) - lower))) * gain * inside
        beta = _beta(step, options)
        if beta is not None:
            grad_h += f32(options.reg_weight / h.size) * _regulariser_gradient(h, beta)
        grad = grad_h * f32(_ZETA - _GAMMA) * sig * (1 - sig) * open_
        m = b1 * m + (1 - b1) * grad
        s = b2 * s + (1 - b2) * grad * grad
        t = step + 1
        v -= f32(options.learning_rate) * (m / f32(1 - b1 ** t)) / (np.sqrt(s / f32(1 - b2 ** t)) + f32(eps))
    return _soft(v)[1]


def learn_rounding(w: np.ndarray, scale: np.ndarray, *, bits: int, axis: int | None, layout: WeightLayout,
                   gram: GramObserver, options: AdaRoundOptions = AdaRoundOptions()) -> RoundingResult:
    """AdaRound one layer (see the module docstring); never worse than nearest on ``gram``'s data.

    Args:
        w: the float weight.
        scale: its scale(s), per tensor or along ``axis``.
        bits: weight bits (2..8).
        axis: channel axis of per-channel scales, None/-1 per tensor.
        layout: how ``w`` maps to ``(groups, K, Og)`` columns.
        gram: the layer's input statistics; at least one row.
        options: optimiser settings.
    """
    if gram.rows == 0:
        raise ConfigError("AdaRound needs calibration rows for every layer; this layer saw none")
    w = np.asarray(w, np.float32)
    nearest_up = nearest_rounding(w, scale, bits, axis)
    nearest = output_error(rounded_weight(w, scale, bits, axis, nearest_up), w, scale, bits, axis, layout, gram)
    columns = to_columns(w, layout)
    if columns.shape != gram.weight_columns.shape or not np.array_equal(columns, gram.weight_columns):
        raise ConfigError("the Gram sums were collected for another weight than the one given")
    target = gram.bw
    excess = nearest - float(np.sum(columns * (group_matmul(gram.a, columns) - 2.0 * target)))
    if not excess > 0:  # nearest is as good as the float weight: nothing to learn
        return RoundingResult(nearest_up, nearest, nearest, False)
    v = scaled_weight(w, scale, bits, axis)
    lower = np.floor(v)
    step_size = dequantize_linear(np.ones_like(w), scale, bits, axis)  # s / qmax as the kernel computes it
    h = _optimise(to_columns(lower, layout), to_columns(v, layout) - to_columns(lower, layout),
                  to_columns(step_size, layout), target, gram, bits, options, excess)
    learned_up = from_columns(h >= 0.5, w.shape, layout)
    learned = output_error(rounded_weight(w, scale, bits, axis, learned_up), w, scale, bits, axis, layout, gram)
    if learned < nearest:
        return RoundingResult(learned_up, learned, nearest, True)
    return RoundingResult(nearest_up, nearest, nearest, False)


def pack_rounding(up: np.ndarray) -> str:
    """One bit per weight (C order), packed and base64-encoded for the scale table."""
    return base64.b64encode(np.packbits(np.asarray(up, bool).ravel()).tobytes()).decode("ascii")


def unpack_rounding(text: str, shape: tuple[int, ...], *, name: str = "weight") -> np.ndarray:
    """The ``up`` bits of a weight of ``shape`` from :func:`pack_rounding`'s text; ConfigError if they do not fit."""
    size = int(np.prod(shape))
    try:
        raw = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
    except (binascii.Error, ValueError):
        raise ConfigError(f"scale_table rounding of {name!r} is not base64") from None
    if raw.size != (size + 7) // 8:
        raise ConfigError(f"scale_table rounding of {name!r} holds {raw.size * 8} bits; the weight has {size} "
                          "values (the table was written for another model)")
    return np.unpackbits(raw, count=size).astype(bool).reshape(shape)

