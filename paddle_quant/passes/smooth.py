"""SmoothQuant-style activation smoothing (Xiao et al., 2023), exact in fp32, before quantization.

For a weight op ``Y = X W`` (``mul``, ``matmul``, ``matmul_v2``, ``conv2d``, ``depthwise_conv2d``)
whose input ``X`` has a few channels with large ranges, dividing input channel ``j`` of ``X`` by
``s_j > 0`` and multiplying the weight's input channel ``j`` by ``s_j`` leaves ``Y`` unchanged and
moves range from the activation (per-tensor int8 scale) to the weight (per-channel scales):

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)

(the numbers, and the search for ``alpha``, are in :mod:`paddle_quant.ptq.smoothing`). The division
of ``X`` is folded into what produces it, found by walking back from ``X``:

* ``layer_norm`` over the last axis, or ``batch_norm`` in inference mode: Scale and Bias divided;
* ``elementwise_mul`` by a per-channel or scalar parameter: that parameter divided;
* ``elementwise_add`` by such a parameter: divided, and the walk goes on through its other input;
* ``relu`` / ``leaky_relu`` (positively homogeneous): the walk goes on through its input;
* a weight op (``conv2d``, ``depthwise_conv2d``, ``mul``, ``matmul_v2``) with a persistable weight:
  the weight's output channels divided.

Anything else (``relu6``, ``hard_swish``, ``reshape2``, a feed ...) ends the walk without a target.
Every tensor on the walk is read by one op only; ``X`` itself may feed several weight ops (a
layer norm feeding the query, key and value projections): they are smoothed together, with one
``s`` computed from the largest of their weight ranges. Parameters are never rewritten in place:
the rescaled copies are written under :func:`paddle_quant.common.naming.smoothed` names.
:func:`plan_smoothing` returns the targets (pure data); :func:`apply_smoothing` writes given scales.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..common import naming
from ..common.program import is_persistable, read_tensor, write_tensor
from .equalize import OpGraph, channel_operand, write_copy

__all__ = ["CONSUMER_TYPES", "Consumer", "ScaledParam", "SmoothTarget", "plan_smoothing", "consumer_weight",
           "apply_smoothing"]

CONSUMER_TYPES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "conv2d": ("Input", "Filter"), "depthwise_conv2d": ("Input", "Filter"), "mul": ("X", "Y"),
    "matmul": ("X", "Y"), "matmul_v2": ("X", "Y"),
})
"""Weight ops whose input can be smoothed: (activation slot, weight slot)."""

_PRODUCER_WEIGHTS: Mapping[str, str] = MappingProxyType({
    "conv2d": "Filter", "depthwise_conv2d": "Filter", "mul": "Y", "matmul_v2": "Y"})
"""Weight ops that can absorb ``1 / s`` in their output channels: the weight slot."""


@dataclass(frozen=True)
class Consumer:
    """One weight op reading the smoothed tensor.

    Attributes:
        op: index in the block. weight: its weight variable.
        input_axis: the weight's input-channel axis (conv: 1, with ``groups``).
        groups: convolution groups (1 for matmuls).
    """

    op: int
    weight: str
    input_axis: int
    groups: int


@dataclass(frozen=True)
class ScaledParam:
    """A parameter divided by ``s`` along ``axis`` (-1: a per-channel vector, or a scalar made one)."""

    op: int
    var: str
    axis: int


@dataclass(frozen=True)
class SmoothTarget:
    """A tensor to smooth: its channel axis, the weight ops reading it, and where ``1 / s`` goes."""

    var: str
    channel_axis: int
    channels: int
    consumers: tuple[Consumer, ...]
    producer: str
    divided: tuple[ScaledParam, ...]


# ---------------------------------------------------------------- consumers
def _attr(op, name, default):
    return op.attr(name) if op.has_attr(name) else default


def _consumer(block, op, index: int, tensor: str):
    """(Consumer, channel axis of ``tensor``, channels) when ``op`` reads ``tensor`` as its smoothable input."""
    slots = CONSUMER_TYPES.get(op.type)
    if slots is None or op.input(slots[0]) != [tensor] or len(op.input(slots[1])) != 1:
        return None
    weight = op.input(slots[1])[0]
    if weight == tensor or not is_persistable(block, weight):
        return None
    shape, rank = tuple(block.var(weight).shape), len(block.var(tensor).shape)
    if op.type in ("conv2d", "depthwise_conv2d"):
        if _attr(op, "data_format", "NCHW") not in ("NCHW", "AnyLayout") or len(shape) != 4:
            return None
        groups = int(_attr(op, "groups", 1))
        return Consumer(index, weight, 1, groups), 1, shape[1] * groups
    if len(shape) != 2 or rank < 2:
        return None
    if op.type == "mul":
        if _attr(op, "x_num_col_dims", 1) != rank - 1 or _attr(op, "y_num_col_dims", 1) != 1:
            return None
        return Consumer(index, weight, 0, 1), rank - 1, shape[0]
    transpose_x, transpose_y = (("trans_x", "trans_y") if op.type == "matmul_v2" else ("transpose_X", "transpose_Y"))
    if _attr(op, transpose_x, False):
        return None
    axis = 1 if _attr(op, transpose_y, False) else 0
    return Consumer(index, weight, axis, 1), rank - 1, shape[axis]


def _consumers(graph: OpGraph, tensor: str, op_types):
    """(consumers, channel axis, channels) when every reader of ``tensor`` is a smoothable weight op of
    ``op_types``, else None."""
    readers = graph.readers.get(tensor, [])
    if any(op.type not in op_types for op in readers):
        return None
    found = [_consumer(graph.block, op, graph.position[id(op)], tensor) for op in readers]
    if not found or any(f is None for f in found) or len({(f[1], f[2]) for f in found}) != 1:
        return None
    return tuple(f[0] for f in found), found[0][1], found[0][2]


# ---------------------------------------------------------------- producers
def _norm_params(op, tensor, channel_axis, rank):
    """Scale and Bias of a layer norm over the channel axis or an inference batch norm over axis 1."""
    if op.type == "layer_norm":
        ok = channel_axis == rank - 1 and _attr(op, "begin_norm_axis", 1) == rank - 1
    else:
        ok = (channel_axis == 1 and bool(_attr(op, "is_test", False))
              and _attr(op, "data_layout", "NCHW") in ("NCHW", "AnyLayout"))
    params = [op.input(slot)[0] for slot in ("Scale", "Bias") if op.input(slot)]
    return params if ok and len(params) == 2 else None


def _weight_producer(graph: OpGraph, op, channels: int, channel_axis: int):
    """The weight of a producing weight op and its output-channel axis, when its output channels are ours."""
    slot = _PRODUCER_WEIGHTS.get(op.type)
    if slot is None or len(op.input(slot)) != 1 or not is_persistable(graph.block, op.input(slot)[0]):
        return None
    weight = op.input(slot)[0]
    shape = tuple(graph.block.var(weight).shape)
    if op.type in ("conv2d", "depthwise_conv2d"):
        axis = 0 if channel_axis == 1 and _attr(op, "data_format", "NCHW") in ("NCHW", "AnyLayout") else None
    elif op.type == "mul":
        axis = 1 if _attr(op, "y_num_col_dims", 1) == 1 and channel_axis != 1 else None
    else:
        axis = (0 if _attr(op, "trans_y", False) else 1) if channel_axis != 1 else None
    if axis is None or len(shape) <= axis or shape[axis] != channels:
        return None
    return weight, axis


def _walk_back(graph: OpGraph, tensor: str, channels: int, channel_axis: int):
    """(producer type, divided params) absorbing ``1 / s`` for ``tensor``, or None (see the module docstring)."""
    block, divided = graph.block, []
    rank = len(block.var(tensor).shape)
    first = True
    while True:
        if not first and len(graph.readers.get(tensor, [])) != 1:
            return None
        first = False
        op = graph.writers.get(tensor)
        if op is None:
            return None
        index = graph.position[id(op)]
        if op.type in ("layer_norm", "batch_norm"):
            params = _norm_params(op, tensor, channel_axis, rank)
            if params is None or not all(is_persistable(block, p) for p in params):
                return None
            return op.type, tuple(divided) + tuple(ScaledParam(index, p, -1) for p in params)
        if op.type in ("elementwise_add", "elementwise_mul"):
            found = [(n, channel_operand(graph, op, n, channels, channel_axis))
                     for n in (op.input("X")[0], op.input("Y")[0]) if not is_persistable(block, n)]
            found = [(n, operand) for n, operand in found if operand is not None]
            if len(found) != 1:
                return None
            tensor, operand = found[0]
            divided.append(ScaledParam(operand[0], operand[1], -1))
            if op.type == "elementwise_mul":
                return "elementwise_mul", tuple(divided)
            continue
        if op.type in ("relu", "leaky_relu"):
            tensor = op.input("X")[0]
            continue
        producer = _weight_producer(graph, op, channels, channel_axis)
        if producer is None:
            return None
        return op.type, tuple(divided) + (ScaledParam(index, producer[0], producer[1]),)


def plan_smoothing(program, op_types=tuple(CONSUMER_TYPES)) -> tuple[SmoothTarget, ...]:
    """Every tensor of ``program`` that feeds only smoothable weight ops of ``op_types`` and whose producer
    can absorb ``1 / s`` (see the module docstring), in program order.

    Args:
        program: a legacy-IR inference program (fp32).
        op_types: the consumer types allowed (quant_post: the weight op types it quantizes; smoothing the
            input of a layer left in float gains nothing).

    Returns:
        The targets (pure data; op indices refer to ``program.global_block().ops``).
    """
    graph = OpGraph(program.global_block())
    targets, seen = [], set()
    for op in graph.block.ops:
        slots = CONSUMER_TYPES.get(op.type)
        if slots is None or len(op.input(slots[0])) != 1 or op.input(slots[0])[0] in seen:
            continue
        tensor = op.input(slots[0])[0]
        seen.add(tensor)
        found = _consumers(graph, tensor, op_types) if graph.block.has_var(tensor) else None
        if found is None:
            continue
        consumers, axis, channels = found
        walked = _walk_back(graph, tensor, channels, axis)
        if walked is not None:
            targets.append(SmoothTarget(tensor, axis, channels, consumers, walked[0], walked[1]))
    return tuple(targets)


# ---------------------------------------------------------------- apply
def consumer_weight(weight: np.ndarray, consumer: Consumer) -> np.ndarray:
    """The weight as ``[groups, out / groups, in / groups, k]``: input channel ``j`` is
    ``[j // (in / groups), :, j % (in / groups), :]`` (conv filters, and 2-D matmul weights with k = 1)."""
    if consumer.input_axis == 1 and weight.ndim == 4:
        out, per_group = weight.shape[0], weight.shape[1]
        return weight.reshape(consumer.groups, out // consumer.groups, per_group, -1)
    moved = np.moveaxis(weight, consumer.input_axis, 1)  # [out, in]
    return moved.reshape(1, moved.shape[0], moved.shape[1], 1)


def _multiplied(weight: np.ndarray, consumer: Consumer, scale: np.ndarray) -> np.ndarray:
    grouped = consumer_weight(weight, consumer)
    scaled = grouped * scale.reshape(consumer.groups, 1, -1, 1)
    if consumer.input_axis == 1 and weight.ndim == 4:
        return scaled.reshape(weight.shape)
    return np.moveaxis(scaled.reshape(scaled.shape[1], scaled.shape[2]), 1, consumer.input_axis)


def _divided(value: np.ndarray, param: ScaledParam, scale: np.ndarray, channel_axis: int) -> np.ndarray:
    if param.axis >= 0:  # a producing weight: its output channels
        shape = [1] * value.ndim
        shape[param.axis] = -1
        return value / scale.reshape(shape)
    if value.size == 1:  # a scalar becomes one value per channel, broadcast like the tensor's channels
        return (value.reshape(-1)[0] / scale).reshape((1, -1, 1, 1) if channel_axis == 1 else (-1,))
    return (value.reshape(-1) / scale).reshape(value.shape)


def apply_smoothing(program, scope, place, targets, scales) -> None:
    """Divide each target's producer by ``s`` and multiply its consumers' weights by ``s``.

    Args:
        program: the program ``targets`` were planned on; changed in place (inputs renamed).
        scope: holds its parameters; read, never overwritten (copies under ``@smoothed`` names).
        place: where to write the copies.
        targets: from :func:`plan_smoothing`.
        scales: ``s`` per target (float arrays of ``target.channels`` positive values), in the same order.
    """
    block, copies = program.global_block(), {}
    for target, scale in zip(targets, scales):
        scale = np.asarray(scale, np.float64)
        for consumer in target.consumers:
            _update(block, scope, place, copies, consumer.op, consumer.weight,
                    lambda value, c=consumer: _multiplied(value, c, scale))
        for param in target.divided:
            _update(block, scope, place, copies, param.op, param.var,
                    lambda value, p=param, t=target: _divided(value, p, scale, t.channel_axis))


def _update(block, scope, place, copies: dict, op_index: int, var: str, change) -> None:
    """Apply ``change`` to what op ``op_index`` reads as ``var``: a first change writes an ``@smoothed`` copy,
    later ones (a weight both consumer of one target and producer of the next) rewrite that copy."""
    key = (op_index, var)
    if key in copies:
        write_tensor(scope, place, copies[key], change(read_tensor(scope, copies[key]).astype(np.float64))
                     .astype(np.float32))
        return
    copies[key] = write_copy(block, scope, place, block.ops[op_index], var,
                             change(read_tensor(scope, var).astype(np.float64)), rename=naming.smoothed)
