"""The steps quant_post strings together, shared with analyze so the two cannot drift apart:
the exact fp32 rewrites (equalization, smoothing), plan what to quantize, make the observers,
compute weight scales, write scales into the scope."""

from __future__ import annotations

import collections
import dataclasses
import logging

import numpy as np

from ..common import naming
from ..common.program import read_tensor, write_tensor
from ..common.errors import ConfigError, ProgramStateError
from ..observers import make_observer
from ..passes.equalize import equalize_layers
from ..passes.input_affine import fold_input_affine
from ..passes.int8_outputs import int8_op_outputs
from ..passes.plan import QuantPlan, plan_quantization
from ..passes.smooth import CONSUMER_TYPES, apply_smoothing, consumer_weight, plan_smoothing
from ..passes.pool_inputs import pool_inputs_to_observe
from . import onednn_cpu
from .calibration import channel_peaks
from .config import DEFAULT_OP_TYPE_LISTS, PTQConfig
from .smoothing import input_channel_peaks, sample_patches, sample_rows, search_alpha, smoothing_scale
from .weight_methods import weight_scale

__all__ = ["observed_names", "make_observers", "observer_algorithm", "input_scaled", "weight_scales", "write_scales",
           "plan_post_training", "prepare_fp32", "depthwise_targets", "SEARCH_SAMPLES"]

_logger = logging.getLogger(__name__)


def observed_names(plan: QuantPlan) -> list[str]:
    """Activations the plan quantizes, then the observed outputs that are not quantized tensors."""
    names = [t.var for t in plan.tensors if t.role == "activation"]
    quantized = {t.var for t in plan.tensors}
    names += [o.var for o in plan.observers if o.var not in quantized]
    return list(dict.fromkeys(names))


def make_observers(plan: QuantPlan, ptq: PTQConfig) -> dict:
    """A fresh observer for every tensor in :func:`observed_names`, of the algorithm
    :func:`observer_algorithm` gives it."""
    inputs = input_scaled(plan)
    return {name: make_observer(observer_algorithm(name, inputs, ptq), bits=ptq.activation_bits,
                                hist_percent=ptq.hist_percent)
            for name in observed_names(plan)}


def input_scaled(plan: QuantPlan) -> set[str]:
    """Tensors whose scale quantizes an op's input: the quantized activations, and the observed tensors a
    runtime quantizes as inputs (``ObservedOutput.runtime_input``: oneDNN's pool inputs)."""
    return ({t.var for t in plan.tensors if t.role == "activation"} |
            {o.var for o in plan.observers if o.runtime_input})


def observer_algorithm(name: str, inputs: set, ptq: PTQConfig) -> str:
    """The calibration algorithm of tensor ``name``: ``ptq``'s algo when its scale quantizes an input (in
    ``inputs``, :func:`input_scaled`), its ``output_algo`` when it is an observed output."""
    return ptq.activation_algorithm if name in inputs else ptq.output_algorithm


def weight_scales(plan: QuantPlan, scope, ptq: PTQConfig) -> dict[str, np.ndarray]:
    """The scale of every weight the plan quantizes, by ``ptq.weight_method``, from the scope."""
    return {t.var: weight_scale(read_tensor(scope, t.var), ptq.weight_method, bits=t.bits, axis=t.axis)
            for t in plan.tensors if t.role == "weight"}


def write_scales(scope, place, scales: dict[str, np.ndarray]) -> None:
    """Write ``{tensor: scale}`` into the scope as the ``{tensor}@scale`` vars the QDQ ops read."""
    for name, value in scales.items():
        write_tensor(scope, place, naming.scale(name), np.asarray(value, np.float32).reshape(-1))


def plan_post_training(program, ptq: PTQConfig) -> QuantPlan:
    """What quant_post quantizes in ``program``: the plan minus ``skip_tensor_list``, observers per
    ``output_scales`` (``'int8_ops'``: those :func:`~paddle_quant.passes.int8_outputs.int8_op_outputs` names;
    plus, for oneDNN, the pool inputs its int8 convolutions would requantize); warns about absent op types,
    ProgramStateError when nothing can be quantized."""
    config = ptq.to_quant_config()
    plan = plan_quantization(program.global_block(), config).without_tensors(ptq.skip_tensor_list)
    present = {op.type for op in program.global_block().ops}
    absent = sorted(set(config.effective_op_types) - present) if not ptq.is_full_quantize else []
    if absent:
        # a default list names types for many models: one this model lacks is not news; a type the user named is
        level = logging.INFO if ptq.quantizable_op_type in DEFAULT_OP_TYPE_LISTS else logging.WARNING
        _logger.log(level, "quant_post: op types %s are not in the model; nothing of those types is quantized",
                    absent)
    if ptq.onednn_without_vnni:
        plan = _float_ops_without_vnni(plan, program.global_block())
    if ptq.effective_output_scales == "none":
        plan = dataclasses.replace(plan, observers=())
    elif ptq.effective_output_scales == "int8_ops":
        kept = int8_op_outputs(program.global_block(), plan)
        plan = dataclasses.replace(plan, observers=tuple(o for o in plan.observers if o.var in kept))
    if ptq.quantize_pool_inputs:
        requantized = pool_inputs_to_observe(program.global_block(), plan)
        plan = dataclasses.replace(plan, observers=plan.observers + requantized)
    if plan.is_empty:
        raise ProgramStateError(
            f"no tensor of the model can be quantized with quantizable_op_type={list(config.effective_op_types)}; "
            f"the model's op types are {sorted(present)}"
        )
    return plan


def _float_ops_without_vnni(plan: QuantPlan, block) -> QuantPlan:
    """The plan with the ops oneDNN runs differently on a CPU without VNNI left in float (onednn_cpu 'avx2'),
    with a warning per op type: depthwise convs that oneDNN feeds signed inputs (weight matmuls are already
    left in float for every oneDNN CPU by the plan)."""
    unsigned = onednn_cpu.planned_unsigned(plan, block)
    for op_type, reason in onednn_cpu.FLOAT_REASONS.items():
        indices = [op.index for op in plan.ops if op.op_type == op_type and
                   (op_type != "depthwise_conv2d" or not onednn_cpu.reads_unsigned(block.ops[op.index], unsigned))]
        if indices:
            _logger.warning("quant_post: %d %s ops left in float for onednn_cpu='avx2': %s", len(indices), op_type,
                            reason)
            plan = plan.without_ops(indices, f"left in float for onednn_cpu='avx2': {reason}")
    return plan


SEARCH_SAMPLES = 512
"""Rows (or convolution windows) per weight op, from the first two calibration batches, on which alpha is
searched when ``smooth_alpha`` is None."""


def prepare_fp32(exe, program, scope, place, ptq: PTQConfig, batches, feed_names, recorded=None) -> dict:
    """The exact fp32 rewrites ``ptq`` asks for, before planning: input-affine folding, cross-layer equalization,
    then smoothing (depthwise conv inputs first, then the rest).

    Args:
        batches: a callable returning a fresh iterator of feed dicts (smoothing reads the data once here).
        recorded: smoothing scales per tensor to apply instead of measuring them (a scale table's); they must be
            exactly the tensors this run smooths (ConfigError naming the difference).

    Returns:
        The smoothing scales applied, per tensor (float64 arrays).
    """
    if ptq.effective_fold_input_affine:
        folds = fold_input_affine(program, scope, place)
        _logger.log(logging.INFO if folds or ptq.fold_input_affine is None else logging.WARNING,
                    "fold_input_affine: %d affine chain(s) folded into "
                    "the conv reading them%s", len(folds), "" if folds else " (no unpadded one-group conv2d with a "
                    "bias add reads a parameter multiply/add)")
    if ptq.equalize_layers:
        pairs = equalize_layers(program, scope, place)
        _logger.log(logging.INFO if pairs else logging.WARNING, "equalize_layers: %d conv pair(s) equalized%s",
                    len(pairs), "" if pairs else " (no conv -> relu/affine/batch_norm -> conv pair in the model)")
    applied = {}
    if ptq.effective_smooth_depthwise:
        applied.update(_smooth_depthwise(exe, program, scope, place, ptq, batches, feed_names, recorded))
    if ptq.smooth_activations:
        applied.update(_smooth(exe, program, scope, place, ptq, batches, feed_names, tuple(applied), recorded))
    if recorded is not None and set(recorded) != set(applied):
        raise ConfigError(
            f"scale_table records smoothing scales for {sorted(set(recorded) - set(applied))[:10]}, which this run "
            f"does not smooth (smooth_depthwise={ptq.effective_smooth_depthwise}, "
            f"smooth_activations={ptq.smooth_activations}); "
            "re-apply a table with the smoothing options it was written with")
    return applied


def depthwise_targets(program, op_types) -> tuple:
    """The smoothing targets read only by depthwise convolutions of ``op_types`` (one input channel per group:
    ``depthwise_conv2d``, or a ``conv2d`` with as many groups as input channels), whose input-channel scale a
    per-output-channel weight scale takes whole."""
    readers = tuple(t for t in ("depthwise_conv2d", "conv2d") if t in op_types)
    block = program.global_block()
    return tuple(t for t in plan_smoothing(program, readers)
                 if all(block.var(c.weight).shape[1] == 1 for c in t.consumers))


def _smooth_depthwise(exe, program, scope, place, ptq: PTQConfig, batches, feed_names, recorded) -> dict:
    """Smoothing with alpha 1 on the inputs of depthwise convolutions (``smooth_depthwise``): every input channel
    divided by its calibration maximum, the convolution's channel multiplied by it. Returns the scales applied."""
    targets = depthwise_targets(program, ptq.to_quant_config().weight_op_types)
    if not targets:
        _logger.log(logging.INFO if ptq.smooth_depthwise is None else logging.WARNING,
                    "smooth_depthwise: no tensor to smooth (no input of a quantized depthwise conv made by a "
                    "batch_norm, per-channel or scalar affine, or weight op through relu)")
        return {}
    scales, _ = _smoothing_scales(exe, program, scope, ptq, batches, feed_names, targets, 1.0, recorded)
    apply_smoothing(program, scope, place, targets, scales)
    _logger.info("smooth_depthwise: %d depthwise conv input(s) brought to one range per channel (%d conv(s))",
                 len(targets), sum(len(t.consumers) for t in targets))
    return {t.var: s for t, s in zip(targets, scales)}


def _smooth(exe, program, scope, place, ptq: PTQConfig, batches, feed_names, done, recorded) -> dict:
    targets = tuple(t for t in plan_smoothing(program, ptq.to_quant_config().weight_op_types) if t.var not in done)
    if not targets:
        _logger.warning("smooth_activations: no tensor to smooth (no input of a quantized matmul/mul/conv made by "
                        "a layer_norm, batch_norm, per-channel affine or weight op through relu)")
        return {}
    scales, alphas = _smoothing_scales(exe, program, scope, ptq, batches, feed_names, targets, ptq.smooth_alpha,
                                       recorded)
    apply_smoothing(program, scope, place, targets, scales)
    _logger.info("smooth_activations: %d tensor(s) smoothed into %d weight op(s); alpha %s", len(targets),
                 sum(len(t.consumers) for t in targets),
                 "from the scale table" if recorded is not None else ptq.smooth_alpha if ptq.smooth_alpha is not None
                 else f"searched: {dict(sorted(collections.Counter(alphas).items()))}")
    return {t.var: s for t, s in zip(targets, scales)}


def _recorded_scales(targets, recorded) -> list[np.ndarray]:
    """The scales a table records for ``targets``; ConfigError naming a tensor it has none (or the wrong count) for."""
    missing = [t.var for t in targets if t.var not in recorded]
    if missing:
        raise ConfigError(f"scale_table records no smoothing scales for {missing[:10]}, which this run smooths; "
                          "re-apply a table with the smoothing options it was written with")
    wrong = [t.var for t in targets if len(recorded[t.var]) != t.channels]
    if wrong:
        raise ConfigError(f"scale_table's smoothing scales of {wrong[:10]} do not have one value per channel of "
                          "those tensors; the table was written for another model")
    return [np.asarray(recorded[t.var], np.float64) for t in targets]


def _smoothing_scales(exe, program, scope, ptq: PTQConfig, batches, feed_names, targets, alpha, recorded=None):
    """The smoothing scale ``s`` of each target: the ``recorded`` ones, or from one pass over the calibration data at
    ``alpha`` or, when it is None, at the alpha searched per target; returns (scales, alphas used)."""
    if recorded is not None:
        return _recorded_scales(targets, recorded), []
    keep = [t.var for t in targets] if alpha is None else []
    peaks, kept = channel_peaks(exe, program, scope, batches(), {t.var: t.channel_axis for t in targets},
                                feed_names=feed_names, batch_nums=ptq.batch_nums, keep=keep,
                                show_progress=ptq.show_progress)
    block, rng, scales, alphas = program.global_block(), np.random.default_rng(0), [], []
    for target in targets:
        grouped = [consumer_weight(read_tensor(scope, c.weight).astype(np.float64), c) for c in target.consumers]
        chosen = alpha
        if chosen is None:
            layers = [(_samples(block.ops[c.op], target, kept[target.var], rng), g)
                      for c, g in zip(target.consumers, grouped)]
            chosen, _ = search_alpha(layers, peaks[target.var], weight_bits=ptq.weight_bits,
                                     activation_bits=ptq.activation_bits,
                                     per_channel=ptq.weight_quantize_type == "channel_wise_abs_max")
        alphas.append(chosen)
        scales.append(smoothing_scale(peaks[target.var], input_channel_peaks(grouped), chosen))
        _logger.debug("smoothing: %s (from %s) alpha %.2f", target.var, target.producer, chosen)
    return scales, alphas


def _samples(op, target, arrays, rng) -> np.ndarray:
    """Calibration inputs of weight op ``op`` as ``[n, C, k]``: windows of a convolution, rows of a matmul."""
    per_batch = max(1, SEARCH_SAMPLES // max(1, len(arrays)))
    if target.channel_axis == 1 and op.type in ("conv2d", "depthwise_conv2d"):
        kernel = tuple(op.block.var(op.input(CONSUMER_TYPES[op.type][1])[0]).shape[2:])
        dilations = tuple(op.attr("dilations")) if op.has_attr("dilations") else (1, 1)
        return np.concatenate([sample_patches(a, kernel, dilations, per_batch, rng) for a in arrays])
    return np.concatenate([sample_rows(a, per_batch, rng) for a in arrays])
