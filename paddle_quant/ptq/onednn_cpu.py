"""What a model for oneDNN int8 on a CPU without an int8 dot-product instruction must state.

Paddle Inference's oneDNN int8 pipeline, on a CPU without AVX512-VNNI, AVX-VNNI or AMX (AVX2, or
AVX-512 without VNNI; :func:`paddle_quant.deploy.cpu.int8_dot_product`), computes what the QDQ
program does not say (measured on an AMD EPYC with AVX2, Paddle 3.3.1; docs/deploy.md, "CPUs
without VNNI"):

* **convolutions with signed inputs use half-scale weights.** Paddle restores the float weight
  ``w = q / 127 · s`` of every quantized conv2d/depthwise_conv2d, derives oneDNN's weight scale from
  each output channel's largest ``|w|`` (compute_propagate_scales_onednn_pass), and oneDNN's
  ``jit_uni_int8:avx2`` kernels reorder the weight at half that scale (``ONEDNN_VERBOSE=1``:
  ``wei:...:sa0.5``) so its 16-bit pair sums cannot saturate: the integer it multiplies is
  ``round(q / 2)``, and for odd ``q`` float rounding decides which way the half goes. One 3x3
  conv then deviates 2.2 output steps from the program.

  The program can state it: with every weight of a channel an **even integer**, except the
  channel's ``±127`` (which keep oneDNN's derived scale equal to the program's), ``q / 2`` is an
  exact integer and oneDNN computes what the program says; only the ``±127`` land on ``±63.5``,
  one integer per channel off by one (0.28 output steps on the same conv, mean 0.05). A ``conv2d``
  with one group does not need its own ``±127``: :mod:`paddle_quant.passes.anchor_channel` gives it
  one more input channel, of zeros, whose weight holds each output channel's ``127``, and every real
  weight is even within ``±126`` (:func:`anchored_even_integers`): oneDNN then runs the program
  exactly (4e-5 output steps, float rounding).
  :func:`half_scale_integers` puts the weights there, each odd integer moved to the even
  neighbour nearer its float value: 7 bits of resolution, as oneDNN runs anyway. With
  ``round_type="adaround"`` the rounding is learned on that grid itself (:func:`half_grid_scale`,
  :func:`from_half_grid`): the even integers are ``2k`` with ``k`` on the 7-bit grid whose step is two
  8-bit steps, so AdaRound chooses between the two even neighbours instead of the odd ones.
  Convolutions with unsigned inputs (relu outputs, :mod:`paddle_quant.passes.unsigned_grid`) are not
  halved by oneDNN and keep their 8-bit weights; their 16-bit pair sums can saturate instead.

* **pairs of u8 products saturate.** Without VNNI, oneDNN's int8 convolution multiplies u8 inputs by
  s8 weights with ``vpmaddubsw``, which adds the products of input channels ``2j`` and ``2j + 1``
  (same output channel, same tap) in 16 bits with saturation: up to 7.6 output steps on
  ``conv_relu_conv`` of ``bench/onednn_patterns.py`` where both weights of a pair are large and of one
  sign (an emulation with that pairing reproduces oneDNN to 1.5e-5 steps). A program can rule it out
  (``255 · (|w₂ⱼ| + |w₂ⱼ₊₁|) <= 32767`` for the pairs of one sign: each pair within ``128``), but that
  constraint cost PP-OCR cls (avg) 7.7 points of accuracy, deployed and simulated alike (84.0 % / 81.3 %
  with it, 91.67 % / 91.0 % without): not applied. A limit from each
  input channel's calibrated range instead of 255 would be much looser; not built.

* **int8 matmuls saturate.** ``mul``/``matmul``/``matmul_v2`` run oneDNN's ``gemm_s8s8s32`` there,
  which adds pairs of products in 16 bits (up to 41 output steps on one Linear layer,
  ``bench/onednn_patterns.py``). Weight matmuls are left in float for every oneDNN CPU anyway (their
  int8 weight scales are not the program's: ``common.backends.ONEDNN_FC_REASON``), and ``output_scales``
  defaults to ``"none"`` here: with output scales Paddle propagates a scale through transpose/reshape
  onto a float matmul's input and oneDNN runs it in int8 all the same (PP-OCRv4 rec, PaddleSlim's four op
  types, hist, 300 lines: 16.3 % deployed against 68.3 % simulated with ``"all"``; 69.7 / 70.7 with
  ``"none"``; ``bench/onednn_cpu_rec.py``). An explicit ``output_scales="all"`` is kept, with a warning.

* **each channel's ±127 is a tie.** ``127 / 2 = 63.5``: float rounding sends it to 63 or 64, so
  that one weight per channel runs as 126 or 128 where the program says 127, which no program
  states (the channel's largest weight has to be 127 for oneDNN's derived scale to be the
  program's) unless the 127 multiplies zeros: the anchor above, for every ``conv2d`` with one
  group. Without it, small on a conv2d (0.27 output steps on a 3x3 conv) but up to 15 points of
  PP-OCRv4 rec's exact match through its first 1x1 conv (docs/deploy.md); on a depthwise 3x3, whose few
  weights and large scale multiply the one-unit error, 0.66 steps alone and up to 16 steps where
  PP-OCRv4 rec's first depthwise output is requantized at a small scale, moving rec's deployed
  exact match 6-10 points from the simulation: depthwise convolutions with signed inputs are left
  in float, with a warning (those reading relu outputs are not halved and stay int8).

``PTQConfig.onednn_cpu`` says which CPU the model is for: ``"vnni"`` (exact int8 kernels; nothing
above applies), ``"avx2"`` (the rules above) or ``"auto"`` (the CPU quant_post runs on). Unset, it
is ``"vnni"``, the CPUs int8 is deployed on for speed, and quant_post warns on a CPU without VNNI
(:func:`warn_unset_without_vnni`): the rules cost a bit of weight resolution there, which a model
for a VNNI server should not pay.
"""

from __future__ import annotations

import functools
import logging
from typing import Collection

import numpy as np

from ..deploy.cpu import int8_dot_product

__all__ = ["HALF_SCALE_OP_TYPES", "FLOAT_REASONS", "OUTPUT_SCALES_WARNING", "HALF_GRID_BITS",
           "UNSET_WITHOUT_VNNI_WARNING", "planned_unsigned", "reads_unsigned", "resolve_onednn_cpu",
           "warn_unset_without_vnni", "half_scale_integers", "half_grid_scale", "from_half_grid",
           "anchored_even_integers", "anchored_scale"]

_logger = logging.getLogger(__name__)

HALF_SCALE_OP_TYPES = ("conv2d",)
"""Op types quantized for a CPU without VNNI whose int8 weights oneDNN reorders at half scale there."""

OUTPUT_SCALES_WARNING = (
    "output_scales='all' with onednn_cpu='avx2': Paddle propagates the output scales onto the inputs of the matmuls "
    "the program leaves in float, and oneDNN then runs them in int8 with saturating kernels (PP-OCRv4 rec: 16.3 % "
    "deployed vs 68.3 % simulated); leave output_scales unset ('none' for this CPU) unless the model has no matmul")
"""Logged when an explicit output_scales='all' meets onednn_cpu='avx2'."""

FLOAT_REASONS = {
    "depthwise_conv2d": ("oneDNN on a CPU without VNNI/AMX runs each channel's +-127 weight as 126 or 128 (a tie of "
                         "its half-scale weights that no program states); on a depthwise conv's few weights that moves "
                         "PP-OCRv4 rec's deployed exact match 6-10 points from the simulation (depthwise convs reading "
                         "relu outputs are not halved and stay int8)"),
}
"""Op types left in float for a CPU without VNNI, and why (docs/deploy.md, 'CPUs without VNNI'); weight
matmuls are left in float for every oneDNN CPU (``BackendProfile.float_op_types``)."""

UNSET_WITHOUT_VNNI_WARNING = (
    "quant_post(deploy_backend='onednn'): onednn_cpu is not set, so the model is built for a CPU with VNNI/AMX; "
    "this CPU has neither, and oneDNN int8 here runs such a model differently from the simulation (PP-OCRv4 rec, "
    "conv2d, avg: 65.7 % exact match deployed vs 89.0 % simulated; built with onednn_cpu='avx2': 75.7 % deployed, "
    "72.3 % simulated, and with bias_correction=True too 86.0 / 87.0). To deploy on a CPU like this one pass "
    "onednn_cpu='avx2' (or 'auto'); for a VNNI/AMX server pass onednn_cpu='vnni' to silence this "
    "(docs/deploy.md, 'CPUs without VNNI')")
"""Logged once per process by :func:`warn_unset_without_vnni`."""

_CHANNEL_MAX = 127
"""The largest weight integer of a channel: oneDNN derives its weight scale from it."""


def resolve_onednn_cpu(onednn_cpu: str) -> str:
    """``"vnni"`` or ``"avx2"``: ``onednn_cpu`` itself, or for ``"auto"`` what this CPU has."""
    return _this_cpu() if onednn_cpu == "auto" else onednn_cpu


@functools.lru_cache(maxsize=None)
def _this_cpu() -> str:
    resolved = "vnni" if int8_dot_product() else "avx2"
    _logger.info("onednn_cpu='auto': this CPU %s an int8 dot-product instruction (VNNI/AMX), so oneDNN int8 models "
                 "are built for onednn_cpu=%r", "has" if resolved == "vnni" else "has no", resolved)
    return resolved


def planned_unsigned(plan, block) -> frozenset:
    """The tensors of the fp32 ``block`` oneDNN will store unsigned once ``plan`` quantizes or observes them
    (:func:`paddle_quant.passes.unsigned_grid.unsigned_tensors` with the plan's activations and observers)."""
    from ..passes.unsigned_grid import unsigned_tensors  # the passes import paddle; configs are checked without it

    scaled = {t.var for t in plan.tensors if t.role == "activation"} | {o.var for o in plan.observers}
    return frozenset(unsigned_tensors(block, scaled))


def reads_unsigned(conv_op, unsigned: Collection[str]) -> bool:
    """Whether oneDNN feeds ``conv_op`` an unsigned int8 input: its ``Input`` is among ``unsigned``
    (:func:`paddle_quant.passes.unsigned_grid.unsigned_tensors`)."""
    return conv_op.input("Input")[0] in unsigned


@functools.lru_cache(maxsize=1)
def warn_unset_without_vnni() -> None:
    """Log :data:`UNSET_WITHOUT_VNNI_WARNING` once per process when this CPU has no VNNI/AMX."""
    if not int8_dot_product():
        _logger.warning(UNSET_WITHOUT_VNNI_WARNING)


def _reaches_channel_max(integers: np.ndarray, channel_axis: int) -> np.ndarray:
    """Per output channel (kept as a size-1 axis elsewhere): whether its largest ``|integer|`` is 127, the
    channels whose derived oneDNN scale is the program's."""
    other_axes = tuple(a for a in range(integers.ndim) if a != channel_axis % integers.ndim)
    return np.abs(integers).max(axis=other_axes, keepdims=True, initial=0) == _CHANNEL_MAX


def half_scale_integers(integers: np.ndarray, scaled: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """The conv weight ``integers`` on oneDNN's half-scale grid: even integers, each channel's ``±127`` kept.

    Args:
        integers: the 8-bit weight integers (rounded to nearest, or AdaRound's).
        scaled: the float values they were rounded from (``numerics.scaled_weight``), same shape.
        channel_axis: the output-channel axis (0 for conv2d/depthwise_conv2d filters).

    Returns:
        int64 integers: an odd integer moves to the even neighbour nearer its float value (toward
        zero on a tie), never past ``±126``; a ``±127`` stays. A channel whose largest ``|integer|`` is
        not 127 (per-tensor or clipped scales; all zeros) is returned unchanged: oneDNN rescales it
        to its own maximum, which no grid here states.
    """
    q = np.asarray(integers).astype(np.int64)
    v = np.asarray(scaled, dtype=np.float64)
    if q.shape != v.shape:
        raise ValueError(f"integers {q.shape} and scaled values {v.shape} differ in shape")
    exact_channel = _reaches_channel_max(q, channel_axis)
    odd = (q % 2 != 0) & (np.abs(q) != _CHANNEL_MAX) & exact_channel
    up = (v > q) | ((v == q) & (q < 0))
    even = np.clip(np.where(up, q + 1, q - 1), -_CHANNEL_MAX + 1, _CHANNEL_MAX - 1)
    return np.where(odd, even, q)


HALF_GRID_BITS = 7
"""The grid of the even integers ``2k`` (``|k| <= 63``) as AdaRound learns it: 7 bits at :func:`half_grid_scale`."""


def half_grid_scale(scale) -> np.ndarray:
    """The scale at which the 7-bit grid's ``k`` means the 8-bit integer ``2k`` at ``scale``: ``scale·126/127``
    (``k·s₇/63 = 2k·s/127``), float32."""
    return (np.asarray(scale, dtype=np.float64) * (2 * 63) / _CHANNEL_MAX).astype(np.float32)


def from_half_grid(half: np.ndarray, nearest: np.ndarray, channel_axis: int = 0) -> np.ndarray:
    """8-bit weight integers from integers ``half`` on the 7-bit half grid (AdaRound's, at :func:`half_grid_scale`).

    Args:
        half: the 7-bit integers ``k``.
        nearest: the 8-bit integers rounded to nearest at the weight's own scale (same shape).
        channel_axis: the output-channel axis (oneDNN derives a conv's weight scale per output channel, whatever
            the program's scale is).

    Returns:
        int8: ``2k`` within ``±126``, each channel's ``±127`` of ``nearest`` kept (they keep oneDNN's derived
        scale the program's, as :func:`half_scale_integers` does); a channel whose largest ``|nearest|`` is not
        127 is ``nearest`` unchanged (no grid states what oneDNN runs there).
    """
    k, q = np.asarray(half).astype(np.int64), np.asarray(nearest).astype(np.int64)
    if k.shape != q.shape:
        raise ValueError(f"half-grid integers {k.shape} and nearest integers {q.shape} differ in shape")
    exact_channel = _reaches_channel_max(q, channel_axis)
    even = np.clip(2 * k, -_CHANNEL_MAX + 1, _CHANNEL_MAX - 1)
    on_grid = np.where(np.abs(q) == _CHANNEL_MAX, q, even)
    return np.where(exact_channel, on_grid, q).astype(np.int8)


def anchored_even_integers(half: np.ndarray) -> np.ndarray:
    """8-bit weight integers ``2k`` within ``±126`` from the half-grid integers ``k``, for a conv whose channels'
    ``127`` is the anchor's (:mod:`paddle_quant.passes.anchor_channel`): every weight halves exactly."""
    return np.clip(2 * np.asarray(half).astype(np.int64), -_CHANNEL_MAX + 1, _CHANNEL_MAX - 1).astype(np.int8)


def anchored_scale(scale) -> np.ndarray:
    """The weight scale an anchored conv's program states for the calibrated ``scale``: ``scale·127/126``, float32.
    The anchor's 127 is that scale and the largest real weight the even 126 (``126·(scale·127/126)/127 =
    scale``), so no real weight is clipped; the half grid's step is ``2·scale/126``."""
    return (np.asarray(scale, dtype=np.float64) * _CHANNEL_MAX / (_CHANNEL_MAX - 1)).astype(np.float32)
