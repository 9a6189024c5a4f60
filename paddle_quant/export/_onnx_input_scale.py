"""Fold the one-value multiply of the affine a float convolution reads into its weights (ONNX graph rewrite).

``conv(a * h + b, W) = conv(h + b / a, a W)`` for one value ``a != 0`` and ``b`` of any shape the add takes: the
zero padding is read as 0 on both sides (``a * 0 = 0``), so the identity holds at the borders too, unlike folding
the add (a padded border would read 0 where ``a * h + b`` reads ``b``:
:mod:`paddle_quant.passes.input_affine` folds whole chains into unpadded convs only). PP-LCNetV3's learnable
affine ``a * hard_swish(x) + b`` feeds every depthwise conv of PP-OCRv4 rec and det; onnxruntime folds neither
operand into the conv, so each runs an elementwise multiply over the whole activation. Folded, that multiply is
gone (hand-applied to rec's exports: 68.5 -> 64.0 ms per batch of 8 for the int8 export, 65.7 -> 61.8 for fp32).
The result equals the original in real arithmetic; in float32 it rounds ``h + b / a`` and ``a W`` instead of
``a * h + b`` (one unit in the last place). Private to the exporter.
"""

from __future__ import annotations

import numpy as np

from ._onnx_ops import _Graph, node_maps


def _single_value(g: _Graph, stored: dict, name: str):
    """The one float value of the initializer ``name``, else None."""
    tensor = stored.get(name)
    if tensor is None or tensor.data_type != g.onnx.TensorProto.FLOAT:
        return None
    value = g.onnx.numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _other(node, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def _scaled_input(g: _Graph, conv, writers, readers, stored):
    """(add, multiply, h, a) when ``conv`` reads ``Add(Mul(h, a), b)`` with constant ``a != 0`` and ``b``, each
    tensor read by the next node alone, else None."""
    add = writers.get(conv.input[0])
    if add is None or add.op_type != "Add" or len(readers.get(add.output[0], [])) != 1:
        return None
    for operand in add.input:
        multiply = writers.get(operand)
        if multiply is None or multiply.op_type != "Mul" or _other(add, operand) not in stored:
            continue
        if len(readers.get(operand, [])) != 1 or len(set(multiply.input)) != 2:
            continue
        for factor_name in multiply.input:
            factor = _single_value(g, stored, factor_name)
            if factor is not None and factor != 0.0 and np.isfinite(factor):
                return add, multiply, _other(multiply, factor_name), factor
    return None


def fold_input_scales(g: _Graph) -> tuple[str, ...]:
    """Rewrite every float ``Conv`` (float32 weight initializer) that reads ``Add(Mul(h, a), b)`` into
    ``Conv(Add(h, b / a), a W)``, in place; returns the convs' output names. The multiplies left unread are pruned
    by the caller."""
    writers, readers = node_maps(g.nodes)
    stored = {tensor.name: tensor for tensor in g.initializers}
    folded = []
    for conv in g.nodes:
        if conv.op_type != "Conv" or conv.input[1] not in stored:
            continue
        if stored[conv.input[1]].data_type != g.onnx.TensorProto.FLOAT:
            continue
        found = _scaled_input(g, conv, writers, readers, stored)
        if found is None:
            continue
        add, multiply, source, factor = found
        shift_name = _other(add, multiply.output[0])
        shift = g.onnx.numpy_helper.to_array(stored[shift_name]).astype(np.float64)
        weight = g.onnx.numpy_helper.to_array(stored[conv.input[1]]).astype(np.float64)
        add.input[list(add.input).index(multiply.output[0])] = source
        add.input[list(add.input).index(shift_name)] = g.const((shift / factor).astype(np.float32), "input_shift")
        conv.input[1] = g.const((weight * factor).astype(np.float32), "input_scaled_weight")
        folded.append(conv.output[0])
    return tuple(folded)
