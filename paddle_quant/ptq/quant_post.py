"""Post-training quantization: ``quant_post`` / ``quant_post_static`` with PaddleSlim's signatures.

Flow: load the inference model -> (optionally) equalize conv pairs and smooth activations in
fp32 -> plan which tensors to quantize -> stream the
calibration batches through observers -> weight scales -> (round_type="adaround")
learn each weight's rounding in a second pass -> insert QDQ ops with
the calibrated scales -> freeze -> (per deploy_backend) fold conv/affine chains and
quantize pool inputs, round requantized outputs -> save into a temporary folder and rename it
into place. The model folder is never written to.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import paddle

from ..common.model_files import load_inference_program, model_files, save_inference_atomically
from ..common.program import legacy_ir, read_tensor
from .calibration import CalibrationStats, calibrate
from ..common.backends import NO_BACKEND_OUTPUT_SCALES_WARNING, ONEDNN_INT8_OPS_WARNING, ONEDNN_OUTPUT_SCALES_WARNING
from ..common.errors import ConfigError, ConfigTypeError
from ..export.scale_table import (SCALE_TABLE_FILENAME, ScaleTable, make_entry, observer_statistics, read_scale_table,
                                  table_json)
from ..export.tensorrt_cache import TENSORRT_CACHE_FILENAME, tensorrt_cache_text
from .feeds import check_reiterable, feed_batches, one_shot_sources
from ..passes.bias import bias_corrections, apply_bias_corrections, quantized_input_reducers
from ..passes.fold_affine import fold_conv_affine
from ..passes.freeze import freeze_in_place
from ..passes.plan import QuantPlan
from ..passes.anchor_channel import anchor_convs, anchorable
from ..passes.pool_inputs import quantize_pool_inputs
from ..passes.requantized_outputs import round_requantized_outputs
from ..passes.residual_relu import sign_residual_activations
from ..passes.unsigned_grid import state_unsigned_grid
from ..passes.rewrite import apply_plan
from . import onednn_cpu
from ..common.numerics import scaled_weight, weight_to_int
from .adaround import AdaRoundOptions, nearest_rounding, pack_rounding, rounded_weight, unpack_rounding
from .adaround_layers import learn_roundings
from .scale_tuning import program_outputs, tune_activation_scales
from .config import QUANT_POST_OP_TYPES, QUANT_POST_STATIC_OP_TYPES, PTQConfig
from .steps import (input_scaled, make_observers, observed_names, observer_algorithm, plan_post_training,
                    prepare_fp32, weight_scales, write_scales)

if TYPE_CHECKING:
    from .accuracy_control import AccuracyControlResult

__all__ = ["quant_post", "quant_post_static", "PTQResult", "run_with_accuracy_control"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PTQResult:
    """What a post-training run did: where the model is, how many batches, what was quantized."""

    model_file: Path
    params_file: Path
    batches: int
    quantized_tensors: tuple[str, ...]
    skipped_ops: tuple[str, ...]
    scale_table: Path
    accuracy_control: "AccuracyControlResult | None" = None
    """What ``accuracy_control=`` searched and chose (None without it)."""


def _check_output(model_dir, output, allow_inside: bool) -> Path:
    source, target = Path(model_dir).resolve(), Path(output).resolve()
    if target == source or (source in target.parents and not allow_inside):
        raise ConfigError(
            f"quantize_model_path {str(output)!r} is the model folder or inside it; choose another folder "
            "(pass allow_output_in_model_dir=True to write a subfolder of model_dir)"
        )
    if target.exists() and not target.is_dir():
        raise ConfigError(f"quantize_model_path {str(output)!r} exists and is not a directory")
    return target


# ---------------------------------------------------------------- scales
def _scale_table(plan: QuantPlan, ptq: PTQConfig, scales: "_Scales", model_name: str, roundings: dict,
                 half_grid: frozenset, smoothing: dict) -> ScaleTable:
    """The table of every scale this run writes (see :mod:`paddle_quant.export.scale_table`), with
    AdaRound's rounding of each weight when it ran (and its grid for the weights on oneDNN's half grid) and the
    smoothing scales applied before calibration."""
    quantized, inputs = {t.var for t in plan.tensors if t.role == "activation"}, input_scaled(plan)
    entries = {t.var: make_entry("weight", scales.weights[t.var], bits=t.bits, axis=t.axis,
                                 algorithm=ptq.weight_method,
                                 rounding=pack_rounding(roundings[t.var]) if t.var in roundings else None,
                                 rounding_grid="onednn_half" if t.var in roundings and t.var in half_grid else None)
               for t in plan.tensors if t.role == "weight"}
    for name, value in scales.activations.items():
        entries[name] = make_entry("activation" if name in quantized else "output", value, bits=ptq.activation_bits,
                                   axis=None, algorithm=observer_algorithm(name, inputs, ptq),
                                   statistics=scales.statistics.get(name))
    return ScaleTable(model=model_name, tensors=entries,
                      smoothing={name: tuple(float(v) for v in values) for name, values in smoothing.items()})


@dataclass(frozen=True)
class _Scales:
    """Scales of one run: activations and observed outputs (per tensor), weights, what calibration saw."""

    activations: dict
    weights: dict
    statistics: dict


def _calibrated_scales(exe, program, scope, plan, ptq, feed_names, sources, corrections):
    observers = make_observers(plan, ptq)
    batches = feed_batches(feed_names, batch_size=ptq.batch_size, **sources)
    stats = calibrate(exe, program, scope, batches, observers, feed_names=feed_names,
                      batch_nums=ptq.batch_nums, show_progress=ptq.show_progress,
                      mean_of={c.input: c.input_mean for c in corrections})
    scales = _Scales({n: o.compute_scale() for n, o in observers.items()}, weight_scales(plan, scope, ptq),
                     {n: observer_statistics(o) for n, o in observers.items()})
    return scales, stats


def _quantized_input_means(exe, program, scope, ptq, corrections, scales: _Scales, feed_names, sources,
                           batches: int) -> dict:
    """With ``bias_correction_inputs``: each corrected op's input mean after its quantizer, from a second pass
    over the first ``batches`` calibration batches of the fp32 ``program``; ``{}`` otherwise."""
    if not (ptq.bias_correction_inputs and corrections):
        return {}
    reducers = quantized_input_reducers(corrections, scales.activations, ptq.activation_bits)
    data = feed_batches(feed_names, batch_size=ptq.batch_size, **sources)
    return calibrate(exe, program, scope, data, {}, feed_names=feed_names, batch_nums=batches,
                     show_progress=ptq.show_progress, mean_of=reducers).channel_means


def _multiplied(scales: _Scales, multipliers: dict) -> _Scales:
    """``scales`` with each activation scale named in ``multipliers`` times its multiplier (tune_scales)."""
    activations = {name: (np.asarray(value) * multipliers[name]).astype(np.asarray(value).dtype)
                   if name in multipliers else value for name, value in scales.activations.items()}
    return dataclasses.replace(scales, activations=activations)


def _table_scales(plan, table: ScaleTable) -> _Scales:
    """Scales read back from a table instead of calibrating."""
    names = observed_names(plan)
    weights = [t.var for t in plan.tensors if t.role == "weight"]
    return _Scales(table.scales(names, kinds=("activation", "output")), table.scales(weights, kinds=("weight",)),
                   {n: dict(table.tensors[n].statistics) for n in names})


def _roundings(exe, program, scope, plan, ptq: PTQConfig, scales: _Scales, table_in, feed_names, sources,
               batches: int, half_grid: frozenset) -> dict:
    """``{weight: up bits}`` for round_type="adaround": read from the table, or learned in a second pass over
    the first ``batches`` calibration batches; ``{}`` when rounding to nearest. The weights in ``half_grid``
    are learned on oneDNN's half grid (:func:`.onednn_cpu.half_grid_scale`)."""
    weights = [t.var for t in plan.tensors if t.role == "weight"]
    if ptq.round_type == "round":
        if table_in is not None and table_in.has_roundings:
            _logger.warning("scale_table records AdaRound roundings, but round_type='round': weights are rounded "
                            "to nearest (pass round_type='adaround' to re-apply them)")
        return {}
    if table_in is not None:
        packed = table_in.roundings(weights, half_grid)
        return {n: unpack_rounding(packed[n], read_tensor(scope, n).shape, name=n) for n in weights}
    data = itertools.islice(feed_batches(feed_names, batch_size=ptq.batch_size, **sources), batches)
    return learn_roundings(exe, program, scope, plan, data, feed_names=feed_names, weight_scales=scales.weights,
                           activation_scales=scales.activations, activation_bits=ptq.activation_bits,
                           max_rows=ptq.adaround_rows, memory_mb=ptq.adaround_memory_mb,
                           options=AdaRoundOptions(iterations=ptq.adaround_iterations),
                           show_progress=ptq.show_progress,
                           grids={n: (onednn_cpu.half_grid_scale(scales.weights[n]), onednn_cpu.HALF_GRID_BITS)
                                  for n in half_grid})


def _integers(scope, plan, scales: _Scales, roundings: dict, half_grid: frozenset, anchored: frozenset) -> dict:
    """The int8 weights freeze stores instead of rounding to nearest: the roundings', and for oneDNN on a CPU
    without VNNI every conv weight in ``half_grid`` on oneDNN's half-scale grid (:mod:`paddle_quant.ptq.onednn_cpu`;
    AdaRound's roundings of those weights are on that grid already): even integers, each channel's ``±127`` kept,
    or for the ``anchored`` convs (their ``127`` is the anchor's, :mod:`paddle_quant.passes.anchor_channel`) even
    integers within ``±126``."""
    tensors = {t.var: t for t in plan.tensors if t.role == "weight"}
    integers = {}
    for name, up in roundings.items():
        t, w = tensors[name], read_tensor(scope, name)
        if name in half_grid:
            integers[name] = _from_half_grid(w, t, scales.weights[name], up, anchored=name in anchored)
        else:
            integers[name] = rounded_weight(w, scales.weights[name], t.bits, t.axis, up)
    for name in sorted(anchored - set(roundings)):
        t, w = tensors[name], read_tensor(scope, name)
        up = nearest_rounding(w, onednn_cpu.half_grid_scale(scales.weights[name]), onednn_cpu.HALF_GRID_BITS, t.axis)
        integers[name] = _from_half_grid(w, t, scales.weights[name], up, anchored=True)
    integers.update(_half_scale_weights(scope, tensors, scales, half_grid - anchored - set(roundings)))
    return integers


def _from_half_grid(w, tensor, scale, up, *, anchored: bool) -> np.ndarray:
    """The 8-bit integers of the half-grid rounding ``up`` of weight ``w``."""
    half = rounded_weight(w, onednn_cpu.half_grid_scale(scale), onednn_cpu.HALF_GRID_BITS, tensor.axis, up)
    if anchored:
        return onednn_cpu.anchored_even_integers(half)
    return onednn_cpu.from_half_grid(half, weight_to_int(w, scale, tensor.bits, tensor.axis, round_half="even"))


def _with_anchored_scales(scales: "_Scales", anchored: frozenset) -> "_Scales":
    """``scales`` with each anchored weight's scale widened by 127/126 (:func:`.onednn_cpu.anchored_scale`): its
    largest weight is then the even 126, not clipped to it."""
    if not anchored:
        return scales
    weights = {n: onednn_cpu.anchored_scale(s) if n in anchored else s for n, s in scales.weights.items()}
    return dataclasses.replace(scales, weights=weights)


def _anchored_weights(plan, block, half_grid: frozenset) -> frozenset:
    """The weights of ``half_grid`` whose convs :mod:`paddle_quant.passes.anchor_channel` anchors (one group)."""
    return frozenset(var for op in plan.ops if anchorable(block.ops[op.index])
                     for _, var in op.inputs if var in half_grid)


def _log_signed_residuals(rewritten) -> None:
    if rewritten:
        _logger.info("deploy_backend='onednn': %d relu/relu6 after a conv + signed residual written as "
                     "leaky_relu(0)/clip so oneDNN does not read the residual into a u8 output "
                     "(passes/residual_relu.py): %s", len(rewritten), [r.output for r in rewritten][:10])


def _half_grid_weights(plan, ptq: PTQConfig, block) -> frozenset:
    """The conv weights oneDNN reorders at half scale (``onednn_cpu="avx2"``, int8 convs with signed inputs, 8 bits;
    narrower ones are logged and left); empty for other targets. A conv whose input stays float (a skipped tensor)
    runs in float there: its weight keeps the ordinary grid."""
    if not ptq.onednn_without_vnni:
        return frozenset()
    tensors = {t.var: t for t in plan.tensors if t.role == "weight"}
    unsigned = onednn_cpu.planned_unsigned(plan, block)
    conv_weights = {var for op in plan.ops if op.op_type in onednn_cpu.HALF_SCALE_OP_TYPES
                    and op.reads_quantized("Input")  # int8 in oneDNN: the input is quantized
                    and not onednn_cpu.reads_unsigned(block.ops[op.index], unsigned)
                    for _, var in op.inputs if var in tensors}
    narrow = sorted(n for n in conv_weights if tensors[n].bits != 8)
    if narrow:
        _logger.warning("onednn_cpu='avx2': weights of fewer than 8 bits are not put on oneDNN's half-scale grid, "
                        "so oneDNN runs them differently from the program: %s", narrow[:10])
    return frozenset(conv_weights - set(narrow))


def _half_scale_weights(scope, tensors: dict, scales: _Scales, names) -> dict:
    """``{conv weight: nearest integers moved to oneDNN's half-scale grid}`` for the weights ``names`` (those
    rounded to nearest; AdaRound's are learned on that grid)."""
    result = {}
    for name in sorted(names):
        t, w = tensors[name], read_tensor(scope, name)
        nearest = weight_to_int(w, scales.weights[name], t.bits, t.axis, round_half="even")
        scaled = scaled_weight(w, scales.weights[name], t.bits, t.axis)
        result[name] = onednn_cpu.half_scale_integers(nearest, scaled).astype(np.int8)
    return result


def _without_unrunnable_smoothing_default(ptq: PTQConfig, sources: dict, table_in) -> PTQConfig:
    """``ptq`` with ``smooth_depthwise=False`` where the backend's default smoothing cannot or must not run: the
    calibration data can be read only once (smoothing reads it twice), or the scale table re-applied records no
    smoothing (it was written without). An explicit ``smooth_depthwise`` is left as given."""
    if ptq.smooth_depthwise is not None or not ptq.effective_smooth_depthwise:
        return ptq
    one_shot = one_shot_sources(sources) if table_in is None else ()
    if table_in is not None and not table_in.smoothing:
        reason = "the scale table re-applied records no smoothing scales"
    elif one_shot:
        reason = (f"{one_shot[0]} can be read only once and smoothing reads the calibration data twice (pass a "
                  "callable or a list to have it)")
    else:
        return ptq
    _logger.warning("smooth_depthwise (the default of deploy_backend=%r) is off for this run: %s",
                    ptq.deploy_backend, reason)
    return ptq.model_copy(update={"smooth_depthwise": False})


# ---------------------------------------------------------------- the run
def _warn_about_settings(ptq: PTQConfig) -> None:
    """The warnings a post-training run logs about its options before it starts."""
    if ptq.activation_bits != 8:
        _logger.warning("activation_bits=%d: the model runs in the Paddle Executor, but Paddle Inference's oneDNN "
                        "int8 pass accepts only 8-bit activations", ptq.activation_bits)
    if ptq.deploy_backend == "onednn" and ptq.onednn_cpu is None:
        onednn_cpu.warn_unset_without_vnni()
    if ptq.deploy_backend == "onednn" and ptq.output_scales == "all":
        _logger.warning(onednn_cpu.OUTPUT_SCALES_WARNING if ptq.onednn_without_vnni else ONEDNN_OUTPUT_SCALES_WARNING)
    if ptq.deploy_backend == "onednn" and ptq.output_scales == "int8_ops":
        _logger.warning(ONEDNN_INT8_OPS_WARNING)
    if ptq.deploy_backend is None and ptq.output_scales in ("none", "int8_ops"):
        _logger.warning(NO_BACKEND_OUTPUT_SCALES_WARNING, ptq.output_scales)


def run_post_training(exe, model_dir, quantize_model_path, ptq: PTQConfig, *, sources: dict, scope=None,
                      model_filename=None, params_filename=None, save_model_filename="model.pdmodel",
                      save_params_filename="model.pdiparams", allow_output_in_model_dir=False,
                      scale_table=None, tuned_multipliers: dict | None = None) -> PTQResult:
    """The post-training run behind ``quant_post``/``quant_post_static`` (see them for the arguments).

    With ``tune_scales`` the run searches the activation scales on the model it built
    (:mod:`paddle_quant.ptq.scale_tuning`) and then builds it again from the start with the calibrated scales
    times ``tuned_multipliers`` (``{tensor: multiplier}``), so every pass that derives from an activation scale
    reads the tuned one, and the scale table re-applies to the same model. The rebuild loads into a fresh
    private scope (``scope`` holds the searched build), so nothing of the first build is read by the second."""
    if tuned_multipliers is None:  # the rebuild after tune_scales' search has said it once
        _warn_about_settings(ptq)
    model, params = model_files(model_dir, model_filename, params_filename)
    target = _check_output(model_dir, quantize_model_path, allow_output_in_model_dir)
    table_in = _table_argument(scale_table, ptq)
    ptq = _without_unrunnable_smoothing_default(ptq, sources, table_in)
    if ptq.smooth_activations and table_in is None:
        check_reiterable(sources, "smooth_activations=True")
    if ptq.smooth_depthwise and table_in is None:
        check_reiterable(sources, "smooth_depthwise=True")
    if ptq.round_type == "adaround" and table_in is None:
        check_reiterable(sources, "round_type='adaround'")
    if ptq.bias_correction_inputs:
        check_reiterable(sources, "bias_correction_inputs=True")
    searching = ptq.tune_scales and table_in is None and tuned_multipliers is None
    if searching:
        check_reiterable(sources, "tune_scales=True")
    scope = paddle.static.Scope() if scope is None else scope
    place = getattr(exe, "place", None) or paddle.CPUPlace()
    with legacy_ir():
        program, feed_names, fetch_names = load_inference_program(exe, scope, model, params)
        if ptq.unsigned_grid:
            _log_signed_residuals(sign_residual_activations(program))
        smoothing = prepare_fp32(exe, program, scope, place, ptq,
                                 lambda: feed_batches(feed_names, batch_size=ptq.batch_size, **sources), feed_names,
                                 recorded=None if table_in is None else table_in.smoothing)
        plan = plan_post_training(program, ptq)
        corrections = bias_corrections(program, plan) if ptq.bias_correction else []
        if table_in is None:
            scales, stats = _calibrated_scales(exe, program, scope, plan, ptq, feed_names, sources, corrections)
        else:
            scales, stats = _table_scales(plan, table_in), CalibrationStats()
        if tuned_multipliers:
            scales = _multiplied(scales, tuned_multipliers)
        half_grid = _half_grid_weights(plan, ptq, program.global_block())  # plan indices: before apply_plan
        anchored = _anchored_weights(plan, program.global_block(), half_grid)
        program_scales = _with_anchored_scales(scales, anchored)  # the table keeps the calibrated ones
        roundings = _roundings(exe, program, scope, plan, ptq, program_scales, table_in, feed_names, sources,
                               stats.batches, half_grid)
        integers = _integers(scope, plan, program_scales, roundings, half_grid, anchored)
        quantized_means = _quantized_input_means(exe, program, scope, ptq, corrections, program_scales, feed_names,
                                                 sources, stats.batches)
        if searching:  # fp32 outputs on the tuning batches, before the program is quantized in place
            tuning_batches = list(itertools.islice(feed_batches(feed_names, batch_size=ptq.batch_size, **sources),
                                                   ptq.tune_scales_batches or stats.batches))
            reference = program_outputs(exe, program, scope, tuning_batches, fetch_names)
        config, quantized = ptq.to_quant_config(), program  # loaded for inference: no copy needed
        apply_plan(quantized, plan, config, scope, place, mode="test", rewire_backward=False)
        write_scales(scope, place, program_scales.activations)
        write_scales(scope, place, program_scales.weights)
        frozen = freeze_in_place(quantized, config, scope, place, integers)
        apply_bias_corrections(frozen, corrections, stats.channel_means, scope, place, quantized_means)
        if ptq.effective_fold_affine:
            fold_conv_affine(frozen, scope, place)
        if ptq.quantize_pool_inputs:
            quantize_pool_inputs(frozen, scope, place, float_pools=ptq.float_pools)
        if ptq.round_requantized_outputs:
            round_requantized_outputs(frozen)
        if anchored:
            anchor_convs(frozen, scope, place, anchored)
        if ptq.unsigned_grid:
            _logger.info("oneDNN stores these quantized tensors unsigned (u8 at 255 / scale), as the program now "
                         "states: %s", state_unsigned_grid(frozen))
        if searching:
            multipliers = tune_activation_scales(exe, frozen, scope, place, tuning_batches, reference, fetch_names,
                                                 list(scales.activations))
    if searching:
        return run_post_training(exe, model_dir, quantize_model_path, ptq, sources=sources, scope=None,
                                 model_filename=model_filename, params_filename=params_filename,
                                 save_model_filename=save_model_filename, save_params_filename=save_params_filename,
                                 allow_output_in_model_dir=allow_output_in_model_dir, tuned_multipliers=multipliers)
    with legacy_ir():
        table = _scale_table(plan, ptq, scales, model.name, roundings, half_grid, smoothing)
        files = save_inference_atomically(exe, scope, frozen, feed_names, fetch_names, target, save_model_filename,
                                          save_params_filename, _extra_files(table, ptq))
    skipped = tuple(f"{s.op_type}#{s.index}: {s.reason}" for s in plan.skipped)
    return PTQResult(files[0], files[1], stats.batches, tuple(t.var for t in plan.tensors), skipped,
                     target / SCALE_TABLE_FILENAME)


def _table_argument(scale_table, ptq: PTQConfig) -> ScaleTable | None:
    if scale_table is None:
        return None
    if ptq.bias_correction:
        raise ConfigError("bias_correction=True needs calibration data (channel means of the inputs); "
                          "it cannot be combined with scale_table=")
    return read_scale_table(scale_table)


def _extra_files(table: ScaleTable, ptq: PTQConfig) -> dict[str, str]:
    files = {SCALE_TABLE_FILENAME: table_json(table)}
    if ptq.deploy_backend == "tensorrt":
        files[TENSORRT_CACHE_FILENAME] = tensorrt_cache_text(table)
    return files


def quant_post(executor, model_dir, quantize_model_path, sample_generator=None, model_filename=None,
               params_filename=None, batch_size=16, batch_nums=None, scope=None, algo="KL",
               quantizable_op_type=QUANT_POST_OP_TYPES, is_full_quantize=False,
               is_use_cache_file=False, cache_dir="./temp_post_training", *, batch_generator=None,
               data_loader=None, save_model_filename="model.pdmodel", save_params_filename="model.pdiparams",
               allow_output_in_model_dir=False, scale_table=None, accuracy_control=None, **options) -> PTQResult:
    """Quantize a saved inference model with calibration data (PaddleSlim's documented ``quant_post``).

    Args:
        executor: a ``paddle.static.Executor`` (its place holds the tensors).
        model_dir: folder of the fp32 inference model; never written to.
        quantize_model_path: output folder, written atomically (a temporary folder renamed into place).
        sample_generator: callable returning an iterable of single samples, batched by ``batch_size``.
        model_filename / params_filename: file names inside ``model_dir`` (found automatically when the
            folder holds one ``*.pdmodel``).
        batch_size: samples per batch for ``sample_generator``.
        batch_nums: number of calibration batches (None: all the data).
        scope: scope to load the model into; None uses a fresh private scope.
        algo: activation algorithm: KL, hist, mse, emd, avg, abs_max (alias direct), min_max.
        quantizable_op_type: op types to quantize; ``is_full_quantize`` quantizes every supported type.
        is_use_cache_file / cache_dir: accepted for compatibility; calibration keeps only observer state
            (histograms, running maxima), so nothing is cached and nothing is written to ``cache_dir``.
        batch_generator / data_loader: alternative sources (whole batches; feed dicts or a DataLoader).
        save_model_filename / save_params_filename: names of the written files.
        allow_output_in_model_dir: permit ``quantize_model_path`` inside ``model_dir``.
        scale_table: path of a scale table (``scale_table.json``, written next to every model this
            function emits) to apply instead of calibrating; no data source is needed then. The same
            model, options and table give a byte-identical model.
        accuracy_control: an :class:`~paddle_quant.ptq.accuracy_control.AccuracyControl`: search the
            algorithms, recovery settings and (if needed) a skip list for the model with the most int8
            compute within its ``max_drop`` of fp32 on its runtime; the options given here are the base
            of every candidate. The result's ``accuracy_control`` says what was chosen.
        **options: the other :class:`~paddle_quant.ptq.config.PTQConfig` fields (hist_percent,
            weight_bits, activation_bits, weight_quantize_type, weight_method, bias_correction, bias_correction_inputs,
            fold_affine, equalize_layers, smooth_activations, smooth_alpha, smooth_depthwise, float_pools,
            skip_tensor_list, onnx_format, round_type, adaround_iterations, tune_scales, tune_scales_batches,
            show_progress, ...).
            ``round_type="adaround"`` and ``tune_scales=True`` read the calibration data a second time (the
            source must be re-iterable: a callable or a DataLoader).

    Returns:
        A :class:`PTQResult` (PaddleSlim returns None).
    """
    del is_use_cache_file, cache_dir  # nothing to cache: see the docstring
    ptq = PTQConfig(algo=algo, batch_size=batch_size, batch_nums=batch_nums,
                    quantizable_op_type=tuple(quantizable_op_type), is_full_quantize=is_full_quantize, **options)
    sources = {"sample_generator": sample_generator, "batch_generator": batch_generator, "data_loader": data_loader}
    files = {"model_filename": model_filename, "params_filename": params_filename,
             "save_model_filename": save_model_filename, "save_params_filename": save_params_filename,
             "allow_output_in_model_dir": allow_output_in_model_dir}
    if accuracy_control is not None:
        if scale_table is not None:
            raise ConfigError("accuracy_control calibrates every candidate itself; it cannot be combined with "
                              "scale_table=")
        return run_with_accuracy_control(executor, model_dir, quantize_model_path, ptq, sources, accuracy_control,
                                         files)
    return run_post_training(executor, model_dir, quantize_model_path, ptq, sources=sources, scope=scope,
                             scale_table=scale_table, **files)


def _calibration_in_memory(model: Path, params, ptq: PTQConfig, sources: dict) -> list[dict]:
    """The first ``batch_nums`` calibration batches as feed dicts (every candidate of a search sees them)."""
    from ..deploy.runtimes import make_runner

    feed_names = make_runner("executor", model, params).input_names
    batches = feed_batches(feed_names, batch_size=ptq.batch_size, **sources)
    return list(itertools.islice(batches, ptq.batch_nums)) if ptq.batch_nums is not None else list(batches)


def run_with_accuracy_control(exe, model_dir, output, ptq: PTQConfig, sources: dict, control, files: dict) -> PTQResult:
    """quant_post with ``accuracy_control`` (see :mod:`paddle_quant.ptq.accuracy_control`); ``files`` holds
    quant_post's model_filename, params_filename, save_model_filename, save_params_filename and
    allow_output_in_model_dir."""
    from .accuracy_control import AccuracyControl, search_quantization

    if not isinstance(control, AccuracyControl):
        raise ConfigTypeError(f"accuracy_control must be a paddle_quant.AccuracyControl, got {type(control).__name__}")
    model, params = model_files(model_dir, files["model_filename"], files["params_filename"])
    if params is None:
        raise ConfigError(f"model_dir {str(model_dir)!r}: accuracy_control needs a combined params file; pass "
                          "params_filename=")
    target = _check_output(model_dir, output, files["allow_output_in_model_dir"])
    calibration = _calibration_in_memory(model, params, ptq, sources)
    base = ptq.model_dump()
    results: dict[Path, PTQResult] = {}

    def run(folder: Path, options: dict, skipped: tuple[str, ...]) -> PTQResult:
        config = PTQConfig(**{**base, **options, "skip_tensor_list": base["skip_tensor_list"] + skipped})
        results[folder] = run_post_training(exe, model_dir, folder, config,
                                            sources={"data_loader": lambda: iter(calibration)},
                                            **{**files, "allow_output_in_model_dir": True})
        return results[folder]

    found, folder = search_quantization(control, fp32_files=(model, params), target=target, calibration=calibration,
                                        base_options=base, run=run)
    chosen = results[folder]
    return dataclasses.replace(chosen, model_file=target / chosen.model_file.name,
                               params_file=target / chosen.params_file.name,
                               scale_table=target / chosen.scale_table.name, accuracy_control=found)


def quant_post_static(executor, model_dir, quantize_model_path, batch_generator=None, sample_generator=None,
                      data_loader=None, model_filename=None, params_filename=None,
                      save_model_filename="model.pdmodel", save_params_filename="model.pdiparams", batch_size=1,
                      batch_nums=None, scope=None, algo="hist", round_type="round", hist_percent=0.9999,
                      bias_correction=False, quantizable_op_type=QUANT_POST_STATIC_OP_TYPES,
                      is_full_quantize=False, weight_bits=8, activation_bits=8,
                      activation_quantize_type="range_abs_max", weight_quantize_type="channel_wise_abs_max",
                      optimize_model=False, onnx_format=True, skip_tensor_list=None, deploy_backend=None,
                      **options) -> PTQResult:
    """PaddleSlim 2.6's ``quant_post_static`` signature and defaults; same run as :func:`quant_post`."""
    return quant_post(
        executor, model_dir, quantize_model_path, sample_generator=sample_generator, model_filename=model_filename,
        params_filename=params_filename, batch_size=batch_size, batch_nums=batch_nums, scope=scope, algo=algo,
        quantizable_op_type=quantizable_op_type, is_full_quantize=is_full_quantize, batch_generator=batch_generator,
        data_loader=data_loader, save_model_filename=save_model_filename, save_params_filename=save_params_filename,
        round_type=round_type, hist_percent=hist_percent, bias_correction=bias_correction, weight_bits=weight_bits,
        activation_bits=activation_bits, activation_quantize_type=activation_quantize_type,
        weight_quantize_type=weight_quantize_type, optimize_model=optimize_model, onnx_format=onnx_format,
        skip_tensor_list=skip_tensor_list, deploy_backend=deploy_backend, **options)
