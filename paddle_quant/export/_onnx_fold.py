"""Conv folding for the ONNX export: ``conv -> bias add -> batch_norm -> * a -> + b`` chains become one ``Conv``.

``y = multiplier * conv(x, W) + bias`` per output channel: the int8 weight values are kept (sign
flipped where the multiplier is negative) and the channel scales become ``scale * |multiplier|``;
the bias is int32 at ``x_scale * w_scale`` where a QuantizeLinear follows (onnxruntime's
QLinearConv), float32 otherwise. Private to the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.program import is_observer, read_tensor
from ._onnx_ops import (_Graph, _attr, _check_nchw, _conv_attrs, _has_tensor_inputs, _in, _nonzero_weight_scale,
                        stored_integers, zero_point_const)


# ---------------------------------------------------------------- conv folding (bias, batch_norm)
@dataclass(frozen=True)
class _FoldedConv:
    """A conv2d whose following bias add / batch_norm / scalar or per-channel affine ops become its weights and bias.

    ``y = multiplier * conv(x, W) + bias`` per output channel, written to ``output``;
    ``absorbed`` are the op indices no longer emitted (the adds, batch norms, observer
    pairs between them and the weight's dequantize op).
    """

    output: str
    multiplier: np.ndarray
    bias: np.ndarray
    absorbed: frozenset


def _index_maps(block):
    consumers, producer = {}, {}
    for index, op in enumerate(block.ops):
        for name in op.input_arg_names:
            consumers.setdefault(name, []).append(index)
        for name in op.output_arg_names:
            producer[name] = index
    return consumers, producer


def _is_observer_quant(op) -> bool:
    return op.type == "quantize_linear" and is_observer(op)


def _through_observer(block, consumers, var):
    """(var, absorbed) past an observer QDQ pair that is ``var``'s only consumer, else (var, [])."""
    users = consumers.get(var, [])
    if len(users) != 1 or not _is_observer_quant(block.ops[users[0]]):
        return var, []
    quantized = block.ops[users[0]].output("Y")[0]
    after = consumers.get(quantized, [])
    if len(after) != 1 or block.ops[after[0]].type != "dequantize_linear":
        return var, []
    return block.ops[after[0]].output("Y")[0], [users[0], after[0]]


def _constant(block, scope, producer, var):
    """Value of ``var`` when it is a stored tensor, possibly through reshape2/assign and observer pairs."""
    if block.has_var(var) and block.var(var).persistable:
        return read_tensor(scope, var)
    op = block.ops[producer[var]] if var in producer else None
    if op is None:
        return None
    if op.type == "dequantize_linear" and op.input("X")[0] in producer:
        quant = block.ops[producer[op.input("X")[0]]]
        return _constant(block, scope, producer, quant.input("X")[0]) if _is_observer_quant(quant) else None
    if op.type in ("reshape2", "assign") and not _has_tensor_inputs(op, ("Shape", "ShapeTensor")):
        return _constant(block, scope, producer, op.input("X")[0])
    return None


def _channel_operand(block, scope, producer, op, var, channels):
    """The per-channel vector an ``elementwise_add``/``elementwise_mul`` applies to the NCHW conv output
    ``var`` (its other operand: one value for every channel, on either side, or one per channel as ``Y``
    along axis 1), or None."""
    operands = op.input("X") + op.input("Y")
    if len(operands) != 2 or operands.count(var) != 1:
        return None
    other = operands[1] if operands[0] == var else operands[0]
    value = _constant(block, scope, producer, other)
    if value is None:
        return None
    shape, axis = tuple(block.var(other).shape), int(_attr(op, "axis", -1))
    if value.size == 1 and len(shape) <= len(block.var(var).shape):  # broadcast: the output keeps var's shape
        return np.full(channels, float(value.reshape(-1)[0]))
    if value.size != channels or op.input("X") != [var]:
        return None
    if (len(shape) == 1 and axis == 1) or shape in ((1, channels, 1, 1), (channels, 1, 1)):
        return value.astype(np.float64).reshape(-1)
    return None


def _fold_step(block, scope, producer, op, var, multiplier, bias):
    """(multiplier, bias) after applying ``op`` to ``var``, or None when ``op`` cannot be folded."""
    if op.type == "batch_norm" and op.input("X") == [var]:
        gamma, beta, mean, variance = (read_tensor(scope, op.input(k)[0]).astype(np.float64)
                                       for k in ("Scale", "Bias", "Mean", "Variance"))
        factor = gamma / np.sqrt(variance + float(op.attr("epsilon")))
        return multiplier * factor, (bias - mean) * factor + beta
    if op.type in ("elementwise_add", "elementwise_mul"):
        operand = _channel_operand(block, scope, producer, op, var, multiplier.size)
        if operand is None:
            return None
        return (multiplier, bias + operand) if op.type == "elementwise_add" else (multiplier * operand,
                                                                                   bias * operand)
    return None


def _plan_conv(block, scope, consumers, producer, index):
    op = block.ops[index]
    channels = int(block.var(op.input("Filter")[0]).shape[0])
    var, multiplier, bias = op.output("Output")[0], np.ones(channels), np.zeros(channels)
    absorbed = []
    while True:
        past, pair = _through_observer(block, consumers, var)
        users = consumers.get(past, [])
        if len(users) != 1:
            break
        step = _fold_step(block, scope, producer, block.ops[users[0]], past, multiplier, bias)
        if step is None:
            break
        multiplier, bias = step
        absorbed += pair + users
        var = block.ops[users[0]].output("Y" if block.ops[users[0]].type == "batch_norm" else "Out")[0]
    weight_dq = producer.get(op.input("Filter")[0])
    if weight_dq is not None and consumers.get(op.input("Filter")[0]) == [index]:
        absorbed.append(weight_dq)
    return _FoldedConv(var, multiplier, bias, frozenset(absorbed))


def _foldable_weight(g: _Graph, op, multiplier) -> bool:
    if not np.all(np.isfinite(multiplier) & (multiplier != 0)):
        return False
    scale = g.by_dequantized.get(op.input("Filter")[0])
    if scale is None:
        return g.block.var(op.input("Filter")[0]).persistable
    if scale.int_values is None:  # not frozen: refused by _check_scales with the tensor's name
        return False
    flips = (multiplier < 0).reshape([-1] + [1] * (scale.int_values.ndim - 1))
    return scale.axis in (0, None) and not np.any(flips & (scale.int_values == -128))


def _plan_conv_folds(g: _Graph) -> dict:
    """Conv op index -> _FoldedConv for every conv2d whose bias add, batch_norm or affine ops can be folded."""
    block = g.block
    consumers, producer = _index_maps(block)
    plans = {}
    for index, op in enumerate(block.ops):
        if op.type not in ("conv2d", "depthwise_conv2d"):
            continue
        plan = _plan_conv(block, g.scope, consumers, producer, index)
        if plan.output != op.output("Output")[0] and _foldable_weight(g, op, plan.multiplier):
            plans[index] = plan
    return plans


def _folded_weight(g: _Graph, op, multiplier):
    """(weight tensor name, ONNX weight scale per channel or None) with ``multiplier`` folded in."""
    name = op.input("Filter")[0]
    scale = g.by_dequantized.get(name)
    channels = multiplier.size
    if scale is None:
        values = read_tensor(g.scope, name) * multiplier.reshape([-1, 1, 1, 1])
        return g.const(values.astype(np.float32), "folded_weight"), None
    sign = np.where(multiplier < 0, -1, 1).reshape([-1, 1, 1, 1])
    ints = (scale.int_values.astype(np.int16) * sign).astype(np.int8)
    onnx_scale = _nonzero_weight_scale((np.broadcast_to(scale.scale, [channels]).astype(np.float64)
                                        * np.abs(multiplier) / scale.qmax).astype(np.float32))
    zero = zero_point_const(g, g.weight_type, [channels])
    stored = g.const(stored_integers(ints, g.weight_type), "folded_weight_int8")
    weight = g.node("DequantizeLinear", [stored, g.const(onnx_scale, "scale"), zero], axis=0)[0]
    return weight, onnx_scale


def _folded_bias(g: _Graph, op, bias, weight_scale, requantized: bool):
    """Bias as int32 + DequantizeLinear (scale x_scale * w_scale, what QLinearConv needs) or float32.

    int32 only where onnxruntime can fuse a QLinearConv (``requantized``: a QuantizeLinear follows
    the conv); elsewhere the conv runs in float and rounding the bias would only add error.
    """
    x_scale = g.by_dequantized.get(op.input("Input")[0])
    if requantized and weight_scale is not None and x_scale is not None and x_scale.kind != "weight":
        step = (weight_scale * np.float32(x_scale.scale[0] / np.float32(x_scale.qmax))).astype(np.float32)
        ints = np.round(bias / step.astype(np.float64))
        if np.all(np.abs(ints) < 2 ** 31 - 1):
            zero = g.const(np.zeros(step.shape, np.int32), "zero_point")
            return g.node("DequantizeLinear", [g.const(ints.astype(np.int32), "bias_int32"),
                                               g.const(step, "bias_scale"), zero], axis=0)[0]
    return g.const(bias.astype(np.float32), "folded_bias")


def _emit_folded_conv(g: _Graph, op, plan: _FoldedConv) -> None:
    _check_nchw(op)
    weight, weight_scale = _folded_weight(g, op, plan.multiplier)
    bias = _folded_bias(g, op, plan.bias, weight_scale, plan.output in g.kept_observers)
    g.node("Conv", [_in(g, op, "Input"), weight, bias], [plan.output], **_conv_attrs(op))
