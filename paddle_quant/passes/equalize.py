"""Cross-layer equalization (Nagel et al., 2019, "Data-Free Quantization"): balance the per-channel
weight ranges of two convolutions in a row, exactly, in fp32, before quantization.

For ``conv1 -> f -> conv2`` where ``f`` commutes with a positive per-channel scale (``f(x / s) =
f(x) / s``), dividing output channel ``i`` of ``conv1`` (its filter row and everything added to it)
by ``s_i > 0`` and multiplying input channel ``i`` of ``conv2`` by ``s_i`` leaves the output of
``conv2`` unchanged. With ``r1_i = max |W1[i]|`` and ``r2_i = max |W2[:, i]|``,

    s_i = sqrt(r1_i * r2_i) / r2_i = sqrt(r1_i / r2_i)

gives both the range ``sqrt(r1_i * r2_i)``, so a per-tensor (or per-channel) int8 grid wastes less
of its range on a few large channels. Chains of pairs (``conv -> relu -> conv -> relu -> conv``)
share a convolution; the pass sweeps over all pairs until no scale moves by more than a tolerance.

What may stand between the two convolutions is data (:data:`EQUIVARIANT_OPS`): ``relu`` and
``leaky_relu`` (positively homogeneous), ``elementwise_mul`` by a parameter (unchanged),
``elementwise_add`` by a parameter (the conv bias, a folded batch norm's shift: divided by ``s``),
and ``batch_norm`` in inference mode (its mean and bias divided by ``s``; scale and variance
unchanged, so ``eps`` stays exact). ``relu6``, ``hard_swish``, ``sigmoid``, ``hard_sigmoid`` and
the like clip or bend at fixed values and do not commute: a pair through them is not formed.
The first convolution's output and every tensor between must be read by exactly one op and not be
fetched; the second convolution may be grouped or depthwise (its input channel ``c`` is column
``c % (C / groups)`` of group ``c // (C / groups)``).

As :mod:`.fold_affine` does, the caller's parameters are never rewritten: every rescaled tensor
is written to the scope under a new name (:func:`paddle_quant.common.naming.equalized`) and the
op that reads it is pointed there. The plan (:func:`plan_equalization`) is structural and pure
data; :func:`equalize_layers` applies it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..common import naming
from ..common.program import is_persistable, read_tensor, readers_by_var, write_tensor, writer_by_var

__all__ = ["CONV_TYPES", "EQUIVARIANT_OPS", "DividedParam", "EqualizationPair", "EqualizedPair",
           "plan_equalization", "equalize_layers", "channel_ranges", "OpGraph", "channel_operand",
           "per_channel_shape", "write_copy"]

_logger = logging.getLogger(__name__)

CONV_TYPES = ("conv2d", "depthwise_conv2d")
"""Op types a pair starts and ends with (NCHW)."""

EQUIVARIANT_OPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "relu": (),
    "leaky_relu": (),
    "elementwise_mul": (),
    "elementwise_add": ("param",),
    "batch_norm": ("Mean", "Bias"),
})
"""Op types with ``f(x / s) = f(x) / s`` for a positive per-channel ``s``, and which of their
parameters must be divided by ``s`` for that ("param": the parameter operand of an elementwise op)."""


@dataclass(frozen=True)
class DividedParam:
    """A parameter divided by ``s`` per channel, and the op that reads it (an op between the two
    convolutions, or the ``reshape2`` that feeds one its parameter)."""

    op: int
    var: str


@dataclass(frozen=True)
class EqualizationPair:
    """Two convolutions equalized together, and what lies between (op indices in the block)."""

    first: int
    second: int
    first_filter: str
    second_filter: str
    between: tuple[str, ...]
    channels: int
    second_groups: int
    divided: tuple[DividedParam, ...]


@dataclass(frozen=True)
class EqualizedPair:
    """An applied pair: the plan entry and the per-channel scale ``s`` it ended with (product over sweeps)."""

    pair: EqualizationPair
    scale: np.ndarray


# ---------------------------------------------------------------- plan
def _nchw(op) -> bool:
    return not op.has_attr("data_format") or op.attr("data_format") in ("NCHW", "AnyLayout")


def _filter_shape(block, op):
    name = op.input("Filter")[0]
    if not is_persistable(block, name) or not _nchw(op):
        return None
    shape = tuple(block.var(name).shape)
    return shape if len(shape) == 4 and all(d > 0 for d in shape) else None


def per_channel_shape(shape, channels: int, axis: int, is_y: bool, channel_axis: int, rank: int) -> bool:
    """True if an elementwise operand of ``shape`` (attribute ``axis``; the op's Y when ``is_y``) broadcasts
    one value, or one value per channel along ``channel_axis`` (1: NCHW, ``rank - 1``: channels last), over
    a tensor of ``rank``."""
    shape = tuple(shape)
    if (int(np.prod(shape)) if shape else 1) == 1:
        return axis == -1
    if channel_axis == rank - 1 and shape == (1,) * (rank - 1) + (channels,) and axis == -1:
        return True
    if channel_axis == rank - 1 and shape == (channels,) and axis in (-1, rank - 1):
        return True
    if channel_axis == 1 and rank == 4 and shape == (1, channels, 1, 1) and axis == -1:
        return True
    return channel_axis == 1 and shape == (channels,) and is_y and axis == 1


def channel_operand(graph, op, tensor: str, channels: int, channel_axis: int = 1):
    """(op index, parameter) of the parameter operand of an elementwise ``op`` reading ``tensor`` when it is
    per channel (along ``channel_axis``) or scalar: a persistable var, or a ``reshape2`` of one to
    [1, C, 1, 1] (``paddle.nn.Conv2D``'s bias) read by ``op`` alone; None otherwise."""
    block, x, y = graph.block, op.input("X")[0], op.input("Y")[0]
    if tensor not in (x, y) or x == y or not block.has_var(tensor):
        return None
    operand = y if tensor == x else x
    axis = op.attr("axis") if op.has_attr("axis") else -1
    rank = len(block.var(tensor).shape)
    if not per_channel_shape(block.var(operand).shape, channels, axis, operand == y, channel_axis, rank):
        return None
    if is_persistable(block, operand):
        return graph.position[id(op)], operand
    reshape = graph.writers.get(operand)
    if reshape is None or reshape.type != "reshape2" or len(graph.readers.get(operand, [])) != 1:
        return None
    source = reshape.input("X")[0]
    if not is_persistable(block, source) or tuple(block.var(source).shape) != (channels,):
        return None
    return graph.position[id(reshape)], source


def _step(graph, op, tensor: str, channels: int):
    """(output, divided params) of one equivariant op reading ``tensor``, or None when it is not one."""
    block = graph.block
    if op.type not in EQUIVARIANT_OPS:
        return None
    if op.type in ("elementwise_mul", "elementwise_add"):
        operand = channel_operand(graph, op, tensor, channels)
        if operand is None:
            return None
        return op.output("Out")[0], ((DividedParam(*operand),) if EQUIVARIANT_OPS[op.type] else ())
    if op.type == "batch_norm":
        layout = op.attr("data_layout") if op.has_attr("data_layout") else "NCHW"
        params = [op.input(slot)[0] for slot in EQUIVARIANT_OPS["batch_norm"]]
        if (op.input("X")[0] != tensor or not op.attr("is_test") or layout != "NCHW"
                or not all(is_persistable(block, p) for p in params)):
            return None
        return op.output("Y")[0], tuple(DividedParam(graph.position[id(op)], p) for p in params)
    return (op.output("Out")[0], ()) if op.input("X")[0] == tensor else None


class OpGraph:
    """Readers, writers and op positions of one block."""

    def __init__(self, block) -> None:
        self.block = block
        self.readers = readers_by_var(block)
        self.writers = writer_by_var(block)
        self.position = {id(op): i for i, op in enumerate(block.ops)}


def _pair_from(graph: OpGraph, index: int, conv):
    """The pair starting at ``conv`` (op ``index``), or None."""
    block = graph.block
    shape = _filter_shape(block, conv)
    if shape is None:
        return None
    channels, tensor, between, divided = shape[0], conv.output("Output")[0], [], []
    while True:
        following = graph.readers.get(tensor, [])
        if len(following) != 1:  # a fetched tensor is also read by its fetch op
            return None
        op = following[0]
        if op.type in CONV_TYPES:
            break
        step = _step(graph, op, tensor, channels)
        if step is None:
            return None
        tensor = step[0]
        between.append(op.type)
        divided += step[1]
    second_shape = _filter_shape(block, op)
    groups = int(op.attr("groups")) if op.has_attr("groups") else 1
    if (op.input("Input")[0] != tensor or second_shape is None or second_shape[1] * groups != channels
            or second_shape[0] % groups):
        return None
    return EqualizationPair(index, graph.position[id(op)], conv.input("Filter")[0], op.input("Filter")[0],
                            tuple(between), channels, groups, tuple(divided))


def plan_equalization(program) -> tuple[EqualizationPair, ...]:
    """Every ``conv -> (equivariant ops)* -> conv`` pair of ``program``'s global block, in program order.

    Args:
        program: a legacy-IR inference program (fp32).

    Returns:
        The pairs (pure data; indices refer to ``program.global_block().ops``).
    """
    graph = OpGraph(program.global_block())
    pairs = (_pair_from(graph, index, op) for index, op in enumerate(graph.block.ops) if op.type in CONV_TYPES)
    return tuple(p for p in pairs if p is not None)


# ---------------------------------------------------------------- numbers (numpy only)
def channel_ranges(first: np.ndarray, second: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``r1_i = max |first[i]|`` over output channel ``i`` and ``r2_i = max |second[:, i]|`` over input
    channel ``i`` of a ``groups``-grouped ``second`` ([Cout, C / groups, kh, kw])."""
    r1 = np.abs(first.reshape(first.shape[0], -1)).max(axis=1)
    out, per_group = second.shape[0], second.shape[1]
    grouped = np.abs(second.reshape(groups, out // groups, per_group, -1))
    return r1, grouped.max(axis=(1, 3)).reshape(-1)


def _balancing_scale(first: np.ndarray, second: np.ndarray, groups: int) -> np.ndarray:
    """``s_i = sqrt(r1_i r2_i) / r2_i``; 1 where a range is zero or the result is not a positive finite number."""
    r1, r2 = channel_ranges(first, second, groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(r1 * r2) / r2  # r1 = 0: 0; r2 = 0: nan or inf
        return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _rescale(first: np.ndarray, second: np.ndarray, groups: int, scale: np.ndarray):
    """``first`` with output channel ``i`` divided by ``s_i``, ``second`` with input channel ``i`` multiplied."""
    out, per_group = second.shape[0], second.shape[1]
    first = first / scale.reshape(-1, 1, 1, 1)
    grouped = second.reshape(groups, out // groups, per_group, -1) * scale.reshape(groups, 1, per_group, 1)
    return first, grouped.reshape(second.shape)


# ---------------------------------------------------------------- apply
def _new_var(block, name: str, like: str, shape) -> str:
    while block.has_var(name):
        name += "_"
    block.create_var(name=name, shape=list(shape), dtype=block.var(like).dtype, persistable=True)
    return name


def write_copy(block, scope, place, op, old: str, value: np.ndarray, rename=naming.equalized) -> str:
    """Write ``value`` under ``rename(old)`` (made unique) and point ``op`` there (its inputs, and in-place
    outputs such as batch norm's MeanOut); ``old`` stays as it was for every other reader. Returns the name."""
    name = _new_var(block, rename(old), old, value.shape)
    write_tensor(scope, place, name, value.astype(np.float32))
    op._rename_input(old, name)
    if old in op.output_arg_names:
        op._rename_output(old, name)
    return name


def _divided(value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A per-channel or scalar parameter divided by ``scale`` per channel (a scalar becomes [1, C, 1, 1])."""
    if value.size == 1:
        return (value.reshape(-1)[0] / scale).reshape(1, -1, 1, 1)
    return (value.reshape(-1) / scale).reshape(value.shape)


def equalize_layers(program, scope, place, pairs: tuple[EqualizationPair, ...] | None = None, *,
                    max_sweeps: int = 50, tolerance: float = 1e-6) -> tuple[EqualizedPair, ...]:
    """Balance the weight ranges of every pair of ``program`` (see the module docstring); exact in fp32.

    Args:
        program: legacy-IR inference program (fp32); changed in place (inputs renamed).
        scope: holds its parameters; read, never overwritten: rescaled copies are written next to them.
        place: where to write the copies.
        pairs: a plan from :func:`plan_equalization` on this program (None: plan it here).
        max_sweeps: passes over all pairs at most (pairs that share a convolution move each other).
        tolerance: stop when no ``|log s_i|`` of a sweep exceeds this.

    Returns:
        One :class:`EqualizedPair` per pair, with its total scale.
    """
    block = program.global_block()
    pairs = plan_equalization(program) if pairs is None else tuple(pairs)
    filters = {}
    for pair in pairs:
        filters.setdefault(pair.first, read_tensor(scope, pair.first_filter).astype(np.float64))
        filters.setdefault(pair.second, read_tensor(scope, pair.second_filter).astype(np.float64))
    totals = [np.ones(pair.channels) for pair in pairs]
    for _ in range(max_sweeps if pairs else 0):
        worst = 0.0
        for k, pair in enumerate(pairs):
            scale = _balancing_scale(filters[pair.first], filters[pair.second], pair.second_groups)
            filters[pair.first], filters[pair.second] = _rescale(filters[pair.first], filters[pair.second],
                                                                 pair.second_groups, scale)
            totals[k] = totals[k] * scale
            worst = max(worst, float(np.abs(np.log(scale)).max()))
        if worst <= tolerance:
            break
    for index, value in filters.items():
        op = block.ops[index]
        write_copy(block, scope, place, op, op.input("Filter")[0], value)
    for pair, total in zip(pairs, totals):
        for param in pair.divided:
            write_copy(block, scope, place, block.ops[param.op], param.var,
                        _divided(read_tensor(scope, param.var).astype(np.float64), total))
    return tuple(EqualizedPair(pair, total) for pair, total in zip(pairs, totals))
