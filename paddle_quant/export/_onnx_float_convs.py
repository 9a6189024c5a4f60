"""Float weights for the convolutions onnxruntime runs in float: ``export_onnx(float_conv_weights=True)``.

onnxruntime runs ``DequantizeLinear -> Conv -> QuantizeLinear`` as one QLinearConv. A conv whose output is not
requantized (an output the selection leaves unrounded, every conv with ``observers='none'``) runs as a float
``Conv`` on its dequantized weight, and because that weight is a ``DequantizeLinear`` node's output rather than an
initializer, onnxruntime neither pre-packs it nor moves the conv to its NCHWc kernels (which also fuse the
activation after it): it dequantizes the weight on every run and takes its generic convolution. Storing such a
weight as the float32 values of its int8 grid, ``(q - zero_point) * scale`` computed as onnxruntime's
DequantizeLinear computes it, changes no value the graph computes (the unoptimized graph gives the same bits) and
lets onnxruntime take its fast float path; the file grows by 3 bytes per such weight value.

A conv that reads a DequantizeLinear and whose output leads to a QuantizeLinear (through Relu / Clip alone) keeps
its int8 weight: onnxruntime runs it as QLinearConv, or, when it cannot (a relu the u8 zero point does not make
redundant), its ``WeightBiasQuantization`` would quantize a float weight per tensor at a scale of its own and the
conv would compute something else (a conv -> relu -> quantizer net: 3.06 output steps from the simulation).
Private to the exporter.
"""

from __future__ import annotations

import numpy as np

from ._onnx_ops import _Graph, node_maps


def _leads_to_quantize(readers, name: str, graph_outputs) -> bool:
    """Whether ``name`` reaches a QuantizeLinear along a path without branches through Relu, Clip and Identity
    nodes (onnxruntime's ``IsNoBranchPathToQuantizeLinear``, with the Identity nodes it removes first)."""
    while name not in graph_outputs and len(readers.get(name, [])) == 1:
        reader = readers[name][0]
        if reader.op_type == "QuantizeLinear":
            return True
        if reader.op_type not in ("Relu", "Clip", "Identity"):
            return False
        name = reader.output[0]
    return False


def _quantized_by_onnxruntime(conv, writers, readers, graph_outputs) -> bool:
    """Whether onnxruntime quantizes ``conv`` itself: it reads a DequantizeLinear and its output leads to a
    QuantizeLinear. onnxruntime then fuses it into QLinearConv, or (its ``WeightBiasQuantization``) quantizes a
    float weight per tensor at a scale of its own, which would change what the conv computes."""
    source = writers.get(conv.input[0])
    return (source is not None and source.op_type == "DequantizeLinear"
            and _leads_to_quantize(readers, conv.output[0], graph_outputs))


def _dequantized(g: _Graph, dequantize, stored: dict) -> np.ndarray | None:
    """The float32 values ``dequantize`` (a DequantizeLinear of initializers) writes, as onnxruntime computes them:
    ``float(int32(q) - int32(zero_point)) * scale``; None when an input is not an initializer."""
    if not all(name in stored for name in dequantize.input):
        return None
    values, scale, zero = (g.onnx.numpy_helper.to_array(stored[name]) for name in dequantize.input)
    axis = next((attribute.i for attribute in dequantize.attribute if attribute.name == "axis"), 1)
    shape = [1] * values.ndim
    if scale.ndim:
        shape[axis] = -1
    shifted = (values.astype(np.int32) - zero.astype(np.int32).reshape(shape)).astype(np.float32)
    return shifted * scale.astype(np.float32).reshape(shape)


def store_float_conv_weights(g: _Graph, graph_outputs) -> tuple[str, ...]:
    """Point every Conv that onnxruntime runs in float (and leaves in float) at a float32 initializer holding its
    dequantized weight, in place; returns those convs' output names. The DequantizeLinear nodes left unread are
    pruned by the caller."""
    writers, readers = node_maps(g.nodes)
    stored = {tensor.name: tensor for tensor in g.initializers}
    changed = []
    for conv in g.nodes:
        if conv.op_type != "Conv" or _quantized_by_onnxruntime(conv, writers, readers, set(graph_outputs)):
            continue
        dequantize = writers.get(conv.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        values = _dequantized(g, dequantize, stored)
        if values is not None:
            conv.input[1] = g.const(values, "float_conv_weight")
            changed.append(conv.output[0])
    return tuple(changed)
