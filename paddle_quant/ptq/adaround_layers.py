"""AdaRound over a model: which layers, one streaming pass for their input statistics, then layer by layer.

Planning (:func:`plan_adaround`) reads the fp32 program: for every weight the plan quantizes,
its op's input tensor and geometry (conv2d / depthwise_conv2d with NCHW input and explicit or
VALID padding; mul, matmul and matmul_v2 with a 2-D weight), or the reason it keeps rounding to
nearest (logged). Learning (:func:`learn_roundings`) runs the fp32 program once more over the
calibration batches, fetching the layers' inputs in groups whose tensors fit ``memory_mb`` (one
run per group and batch), and adds each input to its layer's Gram matrices
(:class:`~paddle_quant.ptq.adaround_rows.GramObserver`); no input outlives its batch. Then each
layer is optimised on its own (:func:`~paddle_quant.ptq.adaround.learn_rounding`).

Each layer's input is the fp32 model's (not the model quantized so far) quantize-dequantized
with the layer's calibrated activation scale: what the deployed int8 op multiplies, up to the
error of the layers before it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from tqdm import tqdm

from ..common.errors import ConfigError
from ..common.numerics import fake_quant_dequant
from ..common.program import ops_in_program_order, read_tensor
from ..passes.plan import QuantPlan
from .adaround import AdaRoundOptions, learn_rounding, nearest_rounding
from .adaround_rows import ConvGeometry, GramObserver, WeightLayout, conv_rows, matmul_rows, to_columns
from .calibration import check_feed, release_free_heap, tensor_sizes

__all__ = ["AdaRoundLayer", "plan_adaround", "learn_roundings"]

_logger = logging.getLogger(__name__)
_CONV = ("conv2d", "depthwise_conv2d")
_MATMUL = ("mul", "matmul", "matmul_v2")


@dataclass(frozen=True)
class AdaRoundLayer:
    """One layer AdaRound learns: its weight and input tensors, the weight's layout, the conv window
    (None for a matmul) and, for a matmul, how many leading input dims are rows (None: all but the last)."""

    weight: str
    input: str
    op_type: str
    layout: WeightLayout
    geometry: ConvGeometry | None
    leading_dims: int | None


def _attr(op, name, default):
    return op.attr(name) if op.has_attr(name) else default


def _conv_layer(op, weight: str, activation: str, shape) -> AdaRoundLayer | str:
    if _attr(op, "data_format", "NCHW") not in ("NCHW", "AnyLayout"):
        return f"data_format {op.attr('data_format')!r} (only NCHW)"
    algorithm = _attr(op, "padding_algorithm", "EXPLICIT")
    if algorithm not in ("EXPLICIT", "VALID"):
        return f"padding_algorithm {algorithm!r} (only EXPLICIT and VALID)"
    pads = [int(p) for p in op.attr("paddings")] if algorithm == "EXPLICIT" else [0, 0]
    pads = (pads[0], pads[0], pads[1], pads[1]) if len(pads) == 2 else tuple(pads)
    groups = int(_attr(op, "groups", 1)) or 1
    geometry = ConvGeometry(tuple(shape[2:]), tuple(int(s) for s in op.attr("strides")), pads,
                            tuple(int(d) for d in op.attr("dilations")))
    return AdaRoundLayer(weight, activation, op.type, WeightLayout(groups, True), geometry, None)


def _matmul_layer(op, weight: str, activation: str, shape) -> AdaRoundLayer | str:
    if len(shape) != 2:
        return f"a {len(shape)}-d weight (only 2-d)"
    if op.type == "mul":
        if int(_attr(op, "y_num_col_dims", 1)) != 1:
            return "y_num_col_dims != 1"
        return AdaRoundLayer(weight, activation, op.type, WeightLayout(1, False), None,
                             int(_attr(op, "x_num_col_dims", 1)))
    transposed = bool(_attr(op, "trans_y" if op.type == "matmul_v2" else "transpose_Y", False))
    if bool(_attr(op, "trans_x" if op.type == "matmul_v2" else "transpose_X", False)):
        return "a transposed input"
    if float(_attr(op, "alpha", 1.0)) != 1.0:
        return f"alpha={op.attr('alpha')}"
    return AdaRoundLayer(weight, activation, op.type, WeightLayout(1, transposed), None, None)


def plan_adaround(program, plan: QuantPlan) -> tuple[list[AdaRoundLayer], dict[str, str]]:
    """The layers AdaRound learns, and ``{weight: reason}`` for the quantized weights that keep nearest."""
    block = program.global_block()
    weights = [t.var for t in plan.tensors if t.role == "weight"]
    readers = {w: [op for op in block.ops if w in op.input_arg_names] for w in weights}
    layers, skipped = [], {}
    for weight in weights:
        if len(readers[weight]) != 1:
            skipped[weight] = f"read by {len(readers[weight])} ops"
            continue
        op = readers[weight][0]
        if op.type not in _CONV + _MATMUL:
            skipped[weight] = f"op type {op.type} (AdaRound handles {list(_CONV + _MATMUL)})"
            continue
        activation = next(n for n in op.input_arg_names if n != weight)
        shape = tuple(block.var(weight).shape)
        layer = (_conv_layer if op.type in _CONV else _matmul_layer)(op, weight, activation, shape)
        if isinstance(layer, str):
            skipped[weight] = f"{op.type} with {layer}"
        else:
            layers.append(layer)
    return layers, skipped


def _rows(layer: AdaRoundLayer, x: np.ndarray, max_rows: int, rng) -> np.ndarray:
    if layer.geometry is not None:
        return conv_rows(x, layer.geometry, layer.layout.groups, max_rows=max_rows, rng=rng)
    leading = x.ndim - 1 if layer.leading_dims is None else layer.leading_dims
    return matmul_rows(x, leading, max_rows=max_rows, rng=rng)


def _groups_within(layers, sizes: Mapping[str, int], budget: int) -> list[list[AdaRoundLayer]]:
    """Consecutive layers whose distinct inputs (float32) fit ``budget`` bytes together (at least one each)."""
    groups, current, used = [], [], set()
    for layer in layers:
        extra = 0 if layer.input in used else 4 * sizes[layer.input]
        if current and 4 * sum(sizes[n] for n in used) + extra > budget:
            groups.append(current)
            current, used = [], set()
        current.append(layer)
        used.add(layer.input)
    return groups + ([current] if current else [])


@dataclass(frozen=True)
class _Pass:
    """What the streaming pass needs besides the layers."""

    activation_scales: Mapping[str, np.ndarray]
    activation_bits: int
    max_rows: int
    memory_mb: int
    seed: int = 0


def _collect(exe, program, scope, layers, batches: Iterable, feed_names, settings: _Pass) -> tuple[dict, int]:
    """``{weight: GramObserver}`` over ``batches``, and how many batches there were."""
    grams = {layer.weight: GramObserver(to_columns(read_tensor(scope, layer.weight), layer.layout)) for layer in layers}
    block, groups, seen = program.global_block(), None, 0
    number = {layer.weight: position for position, layer in enumerate(layers)}
    with ops_in_program_order():
        for index, feed in enumerate(batches):
            check_feed(block, feed_names, feed, index)
            if groups is None:
                sizes = tensor_sizes(exe, program, scope, sorted({layer.input for layer in layers}), feed)
                groups = _groups_within(layers, sizes, settings.memory_mb * 2**20)
            for group in groups:
                names = list(dict.fromkeys(layer.input for layer in group))
                values = dict(zip(names, exe.run(program, feed=dict(feed), fetch_list=names, scope=scope,
                                                 return_numpy=True)))
                for layer in group:
                    rng = np.random.default_rng([settings.seed, number[layer.weight], index])
                    rows = _rows(layer, values[layer.input], settings.max_rows, rng)
                    scale = settings.activation_scales.get(layer.input)
                    rows_hat = rows if scale is None else fake_quant_dequant(rows, scale, settings.activation_bits)
                    grams[layer.weight].update(rows_hat, rows)
                del values
                release_free_heap()
            seen += 1
    return grams, seen


def learn_roundings(exe, program, scope, plan: QuantPlan, batches: Iterable, *, feed_names,
                    weight_scales: Mapping[str, np.ndarray], activation_scales: Mapping[str, np.ndarray],
                    activation_bits: int, max_rows: int, memory_mb: int, options: AdaRoundOptions,
                    show_progress: bool | None = None,
                    grids: Mapping[str, tuple[np.ndarray, int]] | None = None) -> dict[str, np.ndarray]:
    """AdaRound every weight of ``plan``: ``{weight: up bits}`` (nearest's bits for the layers it skips).

    Args:
        exe, program, scope: the fp32 program (before the plan is applied) and where its parameters are.
        plan: what is quantized; every weight tensor of it gets an entry.
        batches: the calibration feed dicts, read once.
        weight_scales / activation_scales: the calibrated scales; an input the plan does not quantize is
            taken as it is (an observed output's scale is not applied to it).
        max_rows: input rows (conv output pixels, matmul rows) sampled per batch and layer.
        memory_mb: fetched inputs per run at most (one run per group of layers and batch).
        options: optimiser settings.
        grids: ``{weight: (scale, bits)}`` of the grid to learn a weight's rounding on when it is not the
            weight's calibrated scale and bits (oneDNN's half grid, :mod:`.onednn_cpu`); its bits are then
            on that grid.
    """
    tensors = {t.var: t for t in plan.tensors if t.role == "weight"}
    grids = grids or {}
    grid = {name: grids.get(name, (weight_scales[name], tensor.bits)) for name, tensor in tensors.items()}
    layers, skipped = plan_adaround(program, plan)
    for weight, reason in skipped.items():
        _logger.warning("AdaRound: %s keeps rounding to nearest: %s", weight, reason)
    quantized = {t.var for t in plan.tensors if t.role == "activation"}
    settings = _Pass({n: s for n, s in activation_scales.items() if n in quantized}, activation_bits, max_rows,
                     memory_mb)
    started = time.perf_counter()
    grams, seen = _collect(exe, program, scope, layers, batches, feed_names, settings)
    collected = time.perf_counter()
    if layers and seen == 0:
        raise ConfigError("AdaRound's pass over the calibration data yielded no batch; the data source must "
                          "be readable twice (a callable, or a re-iterable such as a DataLoader)")
    roundings, learned = {}, 0
    for name, tensor in tensors.items():
        if name not in grams:
            roundings[name] = nearest_rounding(read_tensor(scope, name), *grid[name], tensor.axis)
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    for layer in tqdm(layers, desc="adaround", unit="layer", disable=not enabled, leave=False):
        tensor = tensors[layer.weight]
        scale, bits = grid[layer.weight]
        result = learn_rounding(read_tensor(scope, layer.weight), scale, bits=bits, axis=tensor.axis,
                                layout=layer.layout, gram=grams.pop(layer.weight), options=options)
        roundings[layer.weight] = result.up
        learned += result.learned
    _logger.info("AdaRound: %d of %d layers use the learned rounding (the others: nearest was better or the "
                 "layer was skipped); input statistics %.1f s, optimisation %.1f s", learned, len(tensors),
                 collected - started, time.perf_counter() - collected)
    return roundings
