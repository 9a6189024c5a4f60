"""What a model for oneDNN int8 on a CPU without an int8 dot-product instruction must state.

Paddle Inference's oneDNN int8 pipeline, on a CPU without AVX512-VNNI, AVX-VNNI or AMX (AVX2, or
AVX-512 without VNNI; :func:`paddle_quant.deploy.cpu.int8_dot_product`), runs two things the QDQ
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
  one integer per channel off by one (0.28 output steps on the same conv, mean 0.05).
  :func:`half_scale_integers` puts the weights there, each odd integer moved to the even
  neighbour nearer its float value: 7 bits of resolution, as oneDNN runs anyway.
  Convolutions with unsigned inputs (relu outputs) are not halved by oneDNN; the rule is applied
  to every quantized convolution alike (exact there too, one bit coarser).

* **int8 matmuls saturate.** ``mul``/``matmul``/``matmul_v2`` run oneDNN's ``gemm_s8s8s32`` there,
  which deviates up to 41 output steps on one Linear layer (``bench/onednn_patterns.py``): no
  weight grid the program can hold avoids it, so those ops are left in float, with a warning.

``PTQConfig.onednn_cpu`` says which CPU the model is for: ``"vnni"`` (exact int8 kernels; nothing
above applies), ``"avx2"`` (the rules above) or ``"auto"`` (the CPU quant_post runs on). Unset, it
is ``"vnni"``, the CPUs int8 is deployed on for speed, and quant_post warns on a CPU without VNNI
(:func:`warn_unset_without_vnni`): the rules cost a bit of weight resolution there, which a model
for a VNNI server should not pay.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ..deploy.cpu import int8_dot_product

__all__ = ["ONEDNN_CPUS", "HALF_SCALE_OP_TYPES", "FLOAT_OP_TYPES", "FLOAT_REASON", "UNSET_WITHOUT_VNNI_WARNING",
           "resolve_onednn_cpu", "warn_unset_without_vnni", "half_scale_integers"]

_logger = logging.getLogger(__name__)

ONEDNN_CPUS = ("auto", "vnni", "avx2")
"""``PTQConfig.onednn_cpu`` values."""

HALF_SCALE_OP_TYPES = ("conv2d", "depthwise_conv2d")
"""Op types whose int8 weights oneDNN reorders at half scale without VNNI."""

FLOAT_OP_TYPES = ("mul", "matmul", "matmul_v2")
"""Op types left in float for a CPU without VNNI."""

FLOAT_REASON = ("oneDNN's int8 matmul on a CPU without VNNI/AMX (gemm_s8s8s32) saturates: up to 41 output steps "
                "from the program on one Linear layer (bench/onednn_patterns.py, docs/deploy.md 'CPUs without VNNI')")

UNSET_WITHOUT_VNNI_WARNING = (
    "quant_post(deploy_backend='onednn'): onednn_cpu is not set, so the model is built for a CPU with VNNI/AMX; "
    "this CPU has neither, and oneDNN int8 here runs such a model differently from the simulation (PP-OCRv4 rec, "
    "PaddleSlim's four op types, hist: 71.0 % exact match deployed = simulated with onednn_cpu='avx2', against "
    "~20-30 % deployed without it). To deploy on a CPU like this one pass onednn_cpu='avx2' (or 'auto'); for a "
    "VNNI/AMX server pass onednn_cpu='vnni' to silence this (docs/deploy.md, 'CPUs without VNNI')")
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


@functools.lru_cache(maxsize=1)
def warn_unset_without_vnni() -> None:
    """Log :data:`UNSET_WITHOUT_VNNI_WARNING` once per process when this CPU has no VNNI/AMX."""
    if not int8_dot_product():
        _logger.warning(UNSET_WITHOUT_VNNI_WARNING)


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
    moved = np.moveaxis(q, channel_axis, 0).reshape(q.shape[channel_axis], -1)
    exact_channels = np.abs(moved).max(axis=1, initial=0) == _CHANNEL_MAX
    eligible = np.moveaxis(np.broadcast_to(exact_channels.reshape(-1, *([1] * (q.ndim - 1))),
                                           np.moveaxis(q, channel_axis, 0).shape), 0, channel_axis)
    odd = (q % 2 != 0) & (np.abs(q) != _CHANNEL_MAX) & eligible
    up = (v > q) | ((v == q) & (q < 0))
    even = np.clip(np.where(up, q + 1, q - 1), -_CHANNEL_MAX + 1, _CHANNEL_MAX - 1)
    return np.where(odd, even, q)
