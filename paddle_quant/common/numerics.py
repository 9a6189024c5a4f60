"""Quantization numerics in numpy: bit-exact references of Paddle 3.3.1's CPU kernels.

Everything is evaluated in float32 in the same order as the C++ kernels, so the
results equal Paddle's bit for bit (checked in ``tests/common/test_numerics.py`` by
running each op). No Paddle import here.

Conventions (shared by all functions):

* ``qmax = 2**(bits-1) - 1`` is Paddle's ``bin_cnt``; ``bits`` is 1..16.
* ``axis`` is Paddle's ``quant_axis``: ``None`` or a negative value means one
  scale for the whole tensor; ``axis >= 0`` means one scale per slice along
  that axis (``scale`` then has ``x.shape[axis]`` elements).
* ``round_half`` is how ties are broken: ``"even"`` (Paddle attr
  ``round_type=0``) or ``"away"`` from zero (``round_type=1``); see
  :data:`ROUND_TYPE`.

The common kernel (``ClipAndFakeQuantFunctor`` / ``QuantTensorFunctor``),
with ``inv(s) = 1/s`` if ``s > 1e-30`` else ``1/(s + 1e-6)`` (float32)::

    round_type 0:  q = clip(rint((qmax * inv(s)) * x), -qmax - 1, qmax)
    round_type 1:  q = round_away((qmax * inv(s)) * clip(x, -s, s))   # in [-qmax, qmax]
    dequantize:    y = (q * s) / qmax

Quirks worth knowing (all reproduced here):

* Zero scale: ``round_type=0`` divides by ``s + 1e-6``, so a zero scale
  saturates every non-zero ``x`` to ``qmax``/``-qmax-1``; ``round_type=1`` first
  clips ``x`` to ``[-0, 0]`` and gives 0 everywhere. An all-zero tensor under
  the abs-max ops therefore quantizes to 0 with scale 0.
* ``round_type=0`` clips to ``[-qmax-1, qmax]`` (-128 for 8 bits),
  ``round_type=1`` to ``[-qmax, qmax]``.
* The ``fake_*`` ops default to ``round_type=1``; ``quantize_linear`` and
  ``dequantize_linear`` default to ``round_type=0``.
* ``quantize_linear``/``dequantize_linear`` take their range from the ``qmax``
  attr (default 127) and ignore ``bit_length`` and ``qmin``; Paddle's own
  ``QuantizationTransformPassV2`` sets only ``bit_length``, so its 4-bit QDQ
  ops silently quantize on the 8-bit grid.
* Moving averages are ``state' = r*state + 1``, ``accum' = r*accum + max|x|``,
  ``scale = accum'/state'`` in float32 without fused multiply-add. The
  ``moving_rate`` attr is honoured by ``fake_quantize_moving_average_abs_max``,
  ``fake_quantize_dequantize_moving_average_abs_max`` and
  ``moving_average_abs_max_scale``, but ``quantize_linear`` in training
  hard-codes ``r = 0.9``; per-channel ``quantize_linear`` training uses the
  exact ``max|x_c|`` of the step.
* ``quantize_linear``'s ``is_test`` defaults to True in 3.3.1 (the attr comment
  says false). ``fake_channel_wise_quantize_abs_max`` with ``is_test=True``
  reads its scales from its own ``OutScale`` variable.
* ``fake_quantize_range_abs_max`` rescans only ``window[:iter]`` while
  ``iter < window_size`` (the entry just written is skipped), so its scale can
  fall below the current ``max|x|``.
* ``fake_channel_wise_dequantize_max_abs`` with two scales ignores
  ``quant_axis``; the channel dim is ``x_num_col_dims``.

One module on purpose (about 570 lines): it is the test oracle for every other part, and its
functions share the conventions and float32 helpers above; split by op family, each piece would
restate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from .errors import ConfigError

__all__ = [
    "ROUND_TYPE",
    "RoundHalf",
    "FakeQuantResult",
    "MovingAverageResult",
    "RangeAbsMaxResult",
    "qmax",
    "qmin",
    "abs_max_scale",
    "channel_scales",
    "quantize_linear",
    "dequantize_linear",
    "fake_quant_dequant",
    "weight_to_int",
    "scaled_weight",
    "update_moving_average",
    "quantize_linear_train",
    "fake_quantize_abs_max",
    "fake_quantize_dequantize_abs_max",
    "fake_channel_wise_quantize_abs_max",
    "fake_channel_wise_quantize_dequantize_abs_max",
    "fake_dequantize_max_abs",
    "fake_channel_wise_dequantize_max_abs",
    "fake_quantize_moving_average_abs_max",
    "fake_quantize_dequantize_moving_average_abs_max",
    "moving_average_abs_max_scale",
    "fake_quantize_range_abs_max",
]

RoundHalf = Literal["even", "away"]

ROUND_TYPE: dict[str, int] = {"even": 0, "away": 1}
"""Paddle's ``round_type`` attr value for each ``round_half`` mode."""

_F32 = np.float32
_TINY = _F32(1e-30)  # kernel: s <= 1e-30 counts as zero
_EPS = _F32(1e-6)  # kernel: ... and is replaced by s + 1e-6
_QLINEAR_TRAIN_RATE = 0.9  # hard-coded in QuantizeLinearTrainKernel


class FakeQuantResult(NamedTuple):
    """Outputs of an abs-max fake-quant op.

    Attributes:
        out: ``Out`` (integer grid or dequantized values, float32).
        scale: ``OutScale``: shape (1,) per tensor, (C,) per channel.
    """

    out: np.ndarray
    scale: np.ndarray


class MovingAverageResult(NamedTuple):
    """Outputs of an op with a moving-average scale.

    Attributes:
        out: ``Out``/``Y`` (float32).
        scale: ``OutScale`` (float32, shape (1,) or (C,)).
        state: ``OutState`` (float32, shape (1,)), or the input state where the
            kernel leaves it untouched.
        accum: ``OutAccum`` (float32, shape (1,)), likewise.
    """

    out: np.ndarray
    scale: np.ndarray
    state: np.ndarray | None
    accum: np.ndarray | None


class RangeAbsMaxResult(NamedTuple):
    """Outputs of ``fake_quantize_range_abs_max``.

    Attributes:
        out: ``Out``, the integer grid as float32.
        scale: ``OutScale`` (float32, shape (1,)).
        window: ``OutScales``, the updated window buffer (float32).
    """

    out: np.ndarray
    scale: np.ndarray
    window: np.ndarray | None


# --------------------------------------------------------------------------- basics


def qmax(bits: int) -> int:
    """Largest level of a signed ``bits``-bit grid: ``2**(bits-1) - 1``.

    Raises:
        ConfigError: ``bits`` is not in 1..16 (the range Paddle's ops accept).
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ConfigError(f"bits must be an int in 1..16, got {bits!r}")
    return (1 << (int(bits) - 1)) - 1


def qmin(bits: int, *, narrow: bool = False) -> int:
    """Smallest level: ``-qmax - 1``, or ``-qmax`` for the symmetric (narrow) grid."""
    return -qmax(bits) if narrow else -qmax(bits) - 1


def _check_round_half(round_half: str) -> None:
    if round_half not in ROUND_TYPE:
        raise ConfigError(f"round_half must be one of {sorted(ROUND_TYPE)}, got {round_half!r}")


def _per_channel(axis: int | None) -> bool:
    return axis is not None and axis >= 0


def _as_f32(x) -> np.ndarray:
    return np.asarray(x, dtype=_F32)


def _inverse(s: np.ndarray) -> np.ndarray:
    """Kernel ``inverse``: ``1/s``, or ``1/(s + 1e-6)`` when ``s <= 1e-30`` (float32).

    Negative scales take the second branch too, as in the kernel.
    """
    s = _as_f32(s)
    with np.errstate(divide="ignore", over="ignore"):  # the branch np.where drops
        return np.where(s <= _TINY, _F32(1) / (s + _EPS), _F32(1) / s).astype(_F32)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """``std::round`` in float32: nearest integer, ties away from zero."""
    t = np.trunc(v)
    frac = v - t  # exact in float32
    return (t + np.where(np.abs(frac) >= 0.5, np.sign(v), _F32(0))).astype(_F32)


def _round(v: np.ndarray, round_half: RoundHalf) -> np.ndarray:
    return np.rint(v) if round_half == "even" else _round_half_away(v)


def _broadcast_scale(scale, x: np.ndarray, axis: int | None) -> np.ndarray:
    """Scale as float32, shaped to broadcast against ``x`` (scalar per tensor)."""
    s = _as_f32(scale).reshape(-1)
    if s.size == 0:
        raise ConfigError("scale is empty")
    if not _per_channel(axis):
        return s[:1].reshape(())  # the kernel reads scale[0]
    if axis >= x.ndim:
        raise ConfigError(f"axis {axis} out of range for a {x.ndim}-d tensor")
    if s.size != x.shape[axis]:
        raise ConfigError(f"need {x.shape[axis]} scales along axis {axis}, got {s.size}")
    shape = [1] * x.ndim
    shape[axis] = s.size
    return s.reshape(shape)


def abs_max_scale(x: ArrayLike, axis: int | None = None) -> np.ndarray:
    """Abs-max scale: ``max|x|`` over the tensor, or per slice along ``axis``.

    Args:
        x: input tensor.
        axis: None (or negative) for one scale; ``axis >= 0`` for one scale per
            index of that axis, reduced over all other dims.

    Returns:
        float32 array of shape (1,) per tensor, (x.shape[axis],) per channel.
    """
    a = np.abs(_as_f32(x))
    if not _per_channel(axis):
        return np.array([a.max()], dtype=_F32)
    if axis >= a.ndim:
        raise ConfigError(f"axis {axis} out of range for a {a.ndim}-d tensor")
    others = tuple(d for d in range(a.ndim) if d != axis)
    return a.max(axis=others).astype(_F32).reshape(-1)


def channel_scales(w: ArrayLike, axis: int) -> np.ndarray:
    """Per-channel abs-max scales of a weight, float32 of shape (w.shape[axis],)."""
    if not _per_channel(axis):
        raise ConfigError(f"channel_scales needs a channel axis >= 0, got {axis!r}")
    return abs_max_scale(w, axis)


# ---------------------------------------------------------------------- linear QDQ


def _quantize(x, scale, bits: int, axis: int | None, round_half: RoundHalf, narrow: bool):
    """Shared kernel: ``clip(round((qmax * inv(s)) * x'), qmin, qmax)`` in float32."""
    _check_round_half(round_half)
    x = _as_f32(x)
    s = _broadcast_scale(scale, x, axis)
    if round_half == "away":  # ClipFunctor(-s, s) before rounding
        x = np.minimum(np.maximum(x, -s), s)
    v = (_F32(qmax(bits)) * _inverse(s)) * x
    q = np.clip(_round(v, round_half), _F32(qmin(bits, narrow=narrow)), _F32(qmax(bits)))
    return q.astype(_F32)


def _dequantize(q, scale, max_range, axis: int | None) -> np.ndarray:
    """``(q * s) / max_range`` in float32."""
    q = _as_f32(q)
    return ((q * _broadcast_scale(scale, q, axis)) / _F32(max_range)).astype(_F32)


def quantize_linear(
    x: ArrayLike, scale: ArrayLike, bits: int = 8, axis: int | None = -1, round_half: RoundHalf = "even"
) -> np.ndarray:
    """Paddle ``quantize_linear`` (inference, ``is_test=True``): integer grid as float32.

    ``q = clip(rint((qmax * inv(s)) * x), -qmax-1, qmax)`` for ``round_half="even"``
    (``round_type=0``, the op's default); ``q = round_away((qmax * inv(s)) *
    clip(x, -s, s))`` in ``[-qmax, qmax]`` for ``"away"``. ``inv(s) = 1/s``,
    or ``1/(s+1e-6)`` for ``s <= 1e-30``, all float32.

    The op reads its range from the ``qmax`` attr, not ``bit_length``: a graph
    writer must set ``qmax=qmax(bits)`` (and ``qmin``) for this to match.

    Args:
        x: float tensor.
        scale: one scale (shape () or (1,)) or ``x.shape[axis]`` scales.
        bits: bit width.
        axis: channel axis, or None/-1 per tensor.
        round_half: tie breaking, see module docstring.
    """
    return _quantize(x, scale, bits, axis, round_half, narrow=round_half == "away")


def dequantize_linear(q: ArrayLike, scale: ArrayLike, bits: int = 8, axis: int | None = -1) -> np.ndarray:
    """Paddle ``dequantize_linear``: ``y = (q * s) / qmax`` in float32.

    ``q`` may be the float grid or an integer array (the kernel casts it to
    float32 first). Like ``quantize_linear`` the op takes ``qmax`` from its attr.
    """
    return _dequantize(q, scale, qmax(bits), axis)


def fake_quant_dequant(
    x: ArrayLike,
    scale: ArrayLike,
    bits: int = 8,
    axis: int | None = -1,
    round_half: RoundHalf = "even",
    narrow: bool | None = None,
) -> np.ndarray:
    """Quantize then dequantize: ``(q * s) / qmax`` with ``q`` as in :func:`quantize_linear`.

    This is what every fused Paddle op computes (``ClipAndFakeQuantDequantFunctor``).

    Args:
        x: float tensor.
        scale: one scale or ``x.shape[axis]`` scales.
        bits: bit width.
        axis: channel axis, or None/-1 per tensor.
        round_half: ``"even"`` or ``"away"``.
        narrow: clip to ``[-qmax, qmax]`` instead of ``[-qmax-1, qmax]``; None
            means what Paddle's kernel does (narrow exactly when ``"away"``).
    """
    narrow = round_half == "away" if narrow is None else narrow
    q = _quantize(x, scale, bits, axis, round_half, narrow)
    return _dequantize(q, scale, qmax(bits), axis)


def weight_to_int(
    w: ArrayLike, scale: ArrayLike, bits: int = 8, axis: int | None = -1, round_half: RoundHalf = "even"
) -> np.ndarray:
    """Integer weight as convert stores it: :func:`quantize_linear` cast to int8/int16.

    Returns:
        int8 array for ``bits <= 8``, int16 otherwise.
    """
    dtype = np.int8 if qmax(bits) <= 127 else np.int16
    return quantize_linear(w, scale, bits, axis, round_half=round_half).astype(dtype)


def scaled_weight(w: ArrayLike, scale: ArrayLike, bits: int = 8, axis: int | None = -1) -> np.ndarray:
    """The value ``quantize_linear`` (``round_type=0``) rounds: ``(qmax * inv(s)) * w`` in float32.

    ``weight_to_int(w, s) == clip(rint(scaled_weight(w, s)), -qmax-1, qmax)``; AdaRound picks
    ``floor`` or ``floor + 1`` of the same float32 value instead, so a rounding recorded as
    one bit per weight gives the same integers wherever it is re-applied.
    """
    w = _as_f32(w)
    return ((_F32(qmax(bits)) * _inverse(_broadcast_scale(scale, w, axis))) * w).astype(_F32)


# --------------------------------------------------------------- moving averages


def update_moving_average(state, accum, abs_max, rate: float = 0.9):
    """One step of Paddle's ``FindMovingAverageAbsMaxFunctor`` (float32, no FMA).

    ``state' = r*state + 1``; ``accum' = r*accum + abs_max``;
    ``scale = accum' / state'``, where ``r`` is ``rate`` rounded to float32 (the
    attr is a float). Paddle initialises state and accum to 1.

    Returns:
        ``(state', accum', scale)``, each float32 of shape (1,).
    """
    r = _F32(rate)
    state = (r * _as_f32(state).reshape(-1)[:1] + _F32(1)).astype(_F32)
    accum = (r * _as_f32(accum).reshape(-1)[:1] + _F32(abs_max)).astype(_F32)
    return state, accum, (accum / state).astype(_F32)


def quantize_linear_train(
    x,
    *,
    state=None,
    accum=None,
    bits: int = 8,
    axis: int | None = -1,
    round_half: RoundHalf = "even",
) -> MovingAverageResult:
    """Paddle ``quantize_linear`` with ``is_test=False`` (QAT, QDQ format).

    Per tensor: the scale is the moving average of ``max|x|`` with the rate
    hard-coded to 0.9 (the ``moving_rate`` attr is ignored), the input
    ``Scale`` is not read, and ``x`` is quantized with the new scale. Per
    channel: the scale is the exact ``max|x|`` of each channel this step and
    ``InState``/``InAccum`` are not touched (returned as given).

    Raises:
        ConfigError: per-tensor training without ``state`` and ``accum``.
    """
    if not _per_channel(axis):
        if state is None or accum is None:
            raise ConfigError("per-tensor quantize_linear training needs state and accum")
        state, accum, scale = update_moving_average(state, accum, abs_max_scale(x)[0], _QLINEAR_TRAIN_RATE)
    else:
        scale = abs_max_scale(x, axis)
    out = _quantize(x, scale, bits, axis, round_half, narrow=round_half == "away")
    return MovingAverageResult(out, scale, state, accum)


# ------------------------------------------------------------- old-format ops


def fake_quantize_abs_max(x, bits: int = 8, *, round_half: RoundHalf = "away") -> FakeQuantResult:
    """``fake_quantize_abs_max``: ``s = max|x|``; ``Out`` = :func:`quantize_linear` grid.

    Default ``round_type`` of the op is 1 (``"away"``, grid ``[-qmax, qmax]``).
    """
    scale = abs_max_scale(x)
    return FakeQuantResult(quantize_linear(x, scale, bits, round_half=round_half), scale)


def fake_quantize_dequantize_abs_max(
    x, bits: int = 8, *, round_half: RoundHalf = "away"
) -> FakeQuantResult:
    """``fake_quantize_dequantize_abs_max``: :func:`fake_quant_dequant` with ``s = max|x|``."""
    scale = abs_max_scale(x)
    return FakeQuantResult(fake_quant_dequant(x, scale, bits, round_half=round_half), scale)


def fake_channel_wise_quantize_abs_max(
    x, bits: int = 8, axis: int = 0, *, round_half: RoundHalf = "away", scale=None
) -> FakeQuantResult:
    """``fake_channel_wise_quantize_abs_max`` (``quant_axis`` 0 or 1 in Paddle).

    Training (``scale=None``): ``s_c = max|x_c|``. With ``is_test=True`` the
    kernel reads the scales already stored in its ``OutScale`` variable; pass
    them as ``scale`` for that mode.
    """
    scale = channel_scales(x, axis) if scale is None else _as_f32(scale).reshape(-1)
    return FakeQuantResult(quantize_linear(x, scale, bits, axis, round_half=round_half), scale)


def fake_channel_wise_quantize_dequantize_abs_max(
    x, bits: int = 8, axis: int = 0, *, round_half: RoundHalf = "away"
) -> FakeQuantResult:
    """``fake_channel_wise_quantize_dequantize_abs_max``: per-channel :func:`fake_quant_dequant`."""
    scale = channel_scales(x, axis)
    return FakeQuantResult(fake_quant_dequant(x, scale, bits, axis, round_half=round_half), scale)


def fake_dequantize_max_abs(x, scale, max_range: float) -> np.ndarray:
    """``fake_dequantize_max_abs``: ``(x * scale[0]) / max_range`` in float32."""
    return _dequantize(x, scale, max_range, None)


def fake_channel_wise_dequantize_max_abs(
    x,
    scales: Sequence,
    bits: Sequence[int] = (8,),
    axis: int = 0,
    x_num_col_dims: int = 1,
) -> np.ndarray:
    """``fake_channel_wise_dequantize_max_abs`` with one or two ``Scales``.

    One scale tensor (weights): ``(x * s_c) / qmax(bits[0])`` along ``axis``.
    Two (a conv/mul output: channel scales, then one activation scale):
    ``((x * s_c) * a) / (qmax(bits[0]) * qmax(bits[1]))`` with the channel on
    dim ``x_num_col_dims``; ``axis`` is then ignored.
    """
    if len(scales) == 1:
        return _dequantize(x, scales[0], qmax(bits[0]), axis)
    if len(scales) != 2:
        raise ConfigError(f"Scales must hold 1 or 2 tensors, got {len(scales)}")
    x = _as_f32(x)
    act = _as_f32(scales[1]).reshape(-1)
    if act.size != 1:
        raise ConfigError(f"the second scale must have one value, got {act.size}")
    max_range = _F32(qmax(bits[0]) * qmax(bits[1]))
    weighted = (x * _broadcast_scale(scales[0], x, x_num_col_dims)) * act[0]
    return (weighted / max_range).astype(_F32)


def _moving_average_op(x, in_scale, state, accum, rate, is_test, fake_op):
    """Shared body of the two ``*_moving_average_abs_max`` fake ops."""
    if is_test:
        scale = _as_f32(in_scale).reshape(-1)
        return MovingAverageResult(fake_op(x, scale), scale, state, accum)
    state, accum, scale = update_moving_average(state, accum, abs_max_scale(x)[0], rate)
    return MovingAverageResult(fake_op(x, scale), scale, state, accum)


def fake_quantize_moving_average_abs_max(
    x,
    in_scale,
    state=None,
    accum=None,
    *,
    bits: int = 8,
    rate: float = 0.9,
    round_half: RoundHalf = "away",
    is_test: bool = False,
) -> MovingAverageResult:
    """``fake_quantize_moving_average_abs_max``: grid with a moving-average scale.

    Training: :func:`update_moving_average` with ``rate`` (the ``moving_rate``
    attr is honoured), then quantize with the new scale; ``InScale`` is not
    read. ``is_test``: quantize with ``in_scale``; nothing is updated.
    """
    def fake(v, s):
        return quantize_linear(v, s, bits, round_half=round_half)

    return _moving_average_op(x, in_scale, state, accum, rate, is_test, fake)


def fake_quantize_dequantize_moving_average_abs_max(
    x,
    in_scale,
    state=None,
    accum=None,
    *,
    bits: int = 8,
    rate: float = 0.9,
    round_half: RoundHalf = "away",
    is_test: bool = False,
) -> MovingAverageResult:
    """``fake_quantize_dequantize_moving_average_abs_max``: as the quant op, then dequantized."""
    def fake(v, s):
        return fake_quant_dequant(v, s, bits, round_half=round_half)

    return _moving_average_op(x, in_scale, state, accum, rate, is_test, fake)


def moving_average_abs_max_scale(x, state, accum, *, rate: float = 0.9) -> MovingAverageResult:
    """``moving_average_abs_max_scale`` (output observer) in training.

    ``Out`` is a copy of ``x``; the scale follows :func:`update_moving_average`
    with ``rate`` (honoured). With ``is_test=True`` the op only copies ``x``
    and leaves ``OutScale``, ``OutState`` and ``OutAccum`` untouched.
    """
    state, accum, scale = update_moving_average(state, accum, abs_max_scale(x)[0], rate)
    return MovingAverageResult(_as_f32(x).copy(), scale, state, accum)


def _range_window_max(window: np.ndarray, it: int, window_size: int) -> np.float32:
    """Kernel's rescan: ``|max|`` of the first ``min(it, window_size)`` entries.

    For ``it < window_size`` the just-written entry ``window[it]`` is outside
    the scanned range; an empty range (``it == 0``) yields ``|window[0]|``.
    """
    size = min(it, window_size)
    return np.abs(window[:size]).max() if size else np.abs(window[0])


def fake_quantize_range_abs_max(
    x,
    in_scale,
    window=None,
    it: int = 0,
    *,
    window_size: int = 10000,
    bits: int = 8,
    round_half: RoundHalf = "away",
    is_test: bool = False,
) -> RangeAbsMaxResult:
    """``fake_quantize_range_abs_max``: scale = max of ``max|x|`` over a window of steps.

    Training, with ``cur = max|x|``, ``idx = it % window_size`` and
    ``last = in_scale[0]``: ``removed = window[idx]``; ``window[idx] = cur``;
    the scale is ``cur`` if ``last < cur``, else the rescanned window max if
    ``|removed - last| < 1e-6`` (see :func:`_range_window_max`), else ``last``.
    ``Iter`` (``it``) is only read; an ``increment`` op advances it.
    ``is_test``: quantize with ``in_scale``; nothing is updated.

    Args:
        x: float tensor.
        in_scale: ``InScale`` (the previous scale).
        window: ``OutScales`` buffer of ``window_size`` floats (zeros at start).
        it: ``Iter`` step counter.
        window_size: the op attr.
        bits: bit width.
        round_half: tie breaking (op default ``"away"``).
        is_test: inference mode.
    """
    last = _as_f32(in_scale).reshape(-1)[:1]
    if is_test:
        return RangeAbsMaxResult(quantize_linear(x, last, bits, round_half=round_half), last, window)
    window = _as_f32(np.zeros(window_size) if window is None else window).copy()
    cur = abs_max_scale(x)[0]
    idx = it % window_size
    removed = window[idx]
    window[idx] = cur
    best = last[0]
    if best < cur:
        best = cur
    elif float(np.abs(removed - best)) < 1e-6:
        best = _range_window_max(window, it, window_size)
    scale = np.array([best], dtype=_F32)
    return RangeAbsMaxResult(quantize_linear(x, scale, bits, round_half=round_half), scale, window)
