"""Anchor each channel's weight scale on a zero input channel, so oneDNN's half-scale conv weights are exact.

On a CPU without VNNI/AMX, oneDNN reorders the int8 weights of a convolution with signed inputs at
half scale (``onednn_cpu="avx2"``, :mod:`paddle_quant.ptq.onednn_cpu`): the integer it multiplies is
``q / 2`` of the weight Paddle restores and rescales to each output channel's largest ``|w|``. Even
integers halve exactly, but the channel's largest one must stay ``±127`` for that rescaling to be the
program's, and ``127 / 2 = 63.5`` is a tie that oneDNN's float rounding sends to 126 or 128: one
weight per channel that no program states (0.27 output steps on one 3x3 conv; on PP-OCRv4 rec's first
1x1 conv, ``conv2d_158``, enough to move the deployed exact match up to 15 points from the simulation).

This pass gives the ``127`` to a weight that multiplies nothing: the convolution reads its input with
one more channel of zeros (``concat(x, 0·x[:, :1])``, quantized at the input's scale) and its weight
gets one more input channel holding ``127`` at its first tap, ``0`` elsewhere. Every output channel's
largest weight is then that anchor, oneDNN's derived scale is the program's, the real weights can all
be even (``|q| <= 126``) and are halved exactly, and the tie lands on the anchor, whose input is zero.
One 3x3 conv then deviates ``4e-5`` output steps from the program (float rounding), instead of 0.27.
It also makes per-tensor weight scales exact there (oneDNN derives one scale per output channel, now
the anchor's).

It applies to ``conv2d`` with ``groups == 1`` whose input is read through a quantize/dequantize pair
(a depthwise or grouped convolution has no input channel shared by all its filters); its weight
integers must already be on the even grid without ``±127`` (``quant_post`` computes them so). Cost:
a slice, a scale and a concat before each such convolution and one more input channel (PP-OCRv4 rec:
docs/deploy.md). Where oneDNN would write the input in int8 (a pool, concat, reshape... that takes the
concat's scale back: their int8 output and the float-quantized zero channel make oneDNN fail to build the
concat), the concat reads ``x + 0`` instead, a float op that takes no scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import numpy as np

from ..common import naming
from ..common.numerics import qmax
from ..common.program import insert_ops, read_tensor, readers_by_var, write_tensor, writer_by_var
from .quantizers import insert_qdq_pair, qdq_attrs

__all__ = ["AnchoredConv", "anchor_convs", "anchorable"]


@dataclass(frozen=True)
class AnchoredConv:
    """One convolution given a zero input channel: its weight (float name), the tensor it quantized, and the
    anchored input it reads now."""

    weight: str
    source: str
    anchored_input: str


def anchorable(conv_op) -> bool:
    """Whether ``conv_op`` can be anchored: a ``conv2d`` with one group, NCHW."""
    groups = int(conv_op.attr("groups")) if conv_op.has_attr("groups") else 1
    layout = conv_op.attr("data_format") if conv_op.has_attr("data_format") else "NCHW"
    return conv_op.type == "conv2d" and groups == 1 and layout in ("NCHW", "AnyLayout")


def _weight_name(name: str) -> str:
    return name.split("@", 1)[0]


def _anchored_input(block, scope, place, index: int, source: str, scale: str, bits: int, writers: dict) -> str:
    """Insert ``concat(source, 0·source[:, :1])`` and its quantize/dequantize pair before ``block.ops[index]``;
    returns the dequantized name."""
    var = block.var(source)
    shape = list(var.shape)
    one = shape[:1] + [1] + shape[2:]
    widened = shape[:1] + [shape[1] + 1 if shape[1] >= 0 else -1] + shape[2:]
    sliced, zero, joined = (naming.anchor_slice(source), naming.anchor_zero(source), naming.anchored(source))
    bridged = naming.anchor_bridge(source) if _written_in_int8(writers, source) else source
    for name, var_shape in ((sliced, one), (zero, one), (joined, widened), (bridged, shape)):
        if not block.has_var(name):
            block.create_var(name=name, shape=var_shape, dtype=var.dtype)
    ops = [("slice", {"Input": [source]}, {"Out": [sliced]},
            {"axes": [1], "starts": [0], "ends": [1], "decrease_axis": [], "infer_flags": [1]}),
           ("scale", {"X": [sliced]}, {"Out": [zero]}, {"scale": 0.0, "bias": 0.0, "bias_after_scale": True})]
    if bridged != source:
        ops.append(("elementwise_add", {"X": [source], "Y": [zero]}, {"Out": [bridged]}, {"axis": -1}))
    ops.append(("concat", {"X": [bridged, zero]}, {"Out": [joined]}, {"axis": 1}))
    insert_ops(block, index, ops)
    return insert_qdq_pair(block, scope, place, index + len(ops), joined, joined, scale, qdq_attrs(bits, -1))


_INT8_DATA_OPS = ("pool2d", "concat", "split", "slice", "transpose2", "reshape2", "nearest_interp",
                  "nearest_interp_v2")
"""Ops oneDNN runs on int8 data once the anchored concat hands its scale back to their output
(compute_propagate_scales_onednn_pass); their int8 output cannot join the concat's other input in oneDNN
("could not create a primitive descriptor for a concat primitive", measured on relu -> max pool -> conv)."""


def _written_in_int8(writers: dict, source: str) -> bool:
    """Whether oneDNN could write ``source`` in int8 for the anchored concat: its writer is one of
    :data:`_INT8_DATA_OPS`. Such a source is read through ``source + 0`` (a float op that takes no scale),
    so the concat quantizes a float tensor as it does elsewhere."""
    writer = writers.get(source)
    return writer is not None and writer.type in _INT8_DATA_OPS


def _anchor_weight(block, scope, place, filter_dequantize) -> None:
    """Give the int8 weight read by ``filter_dequantize`` one more input channel: ``qmax`` at its first tap."""
    name = filter_dequantize.input("X")[0]
    integers = read_tensor(scope, name)
    bits = int(filter_dequantize.attr("bit_length")) if filter_dequantize.has_attr("bit_length") else 8
    out_channels, in_channels = integers.shape[:2]
    anchored = np.zeros((out_channels, in_channels + 1) + integers.shape[2:], integers.dtype)
    anchored[:, :in_channels] = integers
    anchored[(slice(None), in_channels) + (0,) * (integers.ndim - 2)] = qmax(bits)
    write_tensor(scope, place, name, anchored)
    for var_name in (name, filter_dequantize.output("Y")[0]):
        block.var(var_name).desc.set_shape(list(anchored.shape))


def anchor_convs(program, scope, place, weights: Collection[str]) -> list[AnchoredConv]:
    """Anchor the convolutions whose weights are ``weights`` (float names) in a frozen QDQ program.

    Args:
        program: legacy-IR QDQ inference program (as ``quant_post`` freezes it); changed in place.
        scope: where its parameters are; the widened weights and new zero points are written to it.
        place: where to write them.
        weights: the float names of the conv weights to anchor; each must be the int8 weight of a
            :func:`anchorable` conv that reads its input through a quantize/dequantize pair, else ValueError
            (quant_post chooses them so).

    Returns:
        One :class:`AnchoredConv` per convolution, in program order.
    """
    block = program.global_block()
    wanted = {_weight_name(w): w for w in weights}  # a smoothed weight is named "<float name>@smoothed"
    done, inputs, former = [], {}, []
    writers = writer_by_var(block)  # the names looked up below are the frozen program's, never rewritten here
    for conv in [op for op in block.ops if op.type == "conv2d"]:
        filter_dq = writers.get(conv.input("Filter")[0])
        if filter_dq is None or filter_dq.type != "dequantize_linear" or \
                _weight_name(filter_dq.input("X")[0]) not in wanted:
            continue
        weight = wanted[_weight_name(filter_dq.input("X")[0])]
        input_dq = writers.get(conv.input("Input")[0])
        input_q = writers.get(input_dq.input("X")[0]) if input_dq is not None else None
        if not anchorable(conv) or input_dq is None or input_dq.type != "dequantize_linear" or \
                input_q is None or input_q.type != "quantize_linear":
            raise ValueError(f"conv2d reading {weight!r} cannot be anchored: it needs groups=1, NCHW and an input "
                             "read through a quantize/dequantize pair")
        source, scale = input_q.input("X")[0], input_q.input("Scale")[0]
        key = (source, scale)
        if key not in inputs:
            inputs[key] = _anchored_input(block, scope, place, list(block.ops).index(conv), source, scale,
                                          int(input_q.attr("bit_length")), writers)
        former.append(input_dq)
        conv._rename_input(conv.input("Input")[0], inputs[key])
        _anchor_weight(block, scope, place, filter_dq)
        done.append(AnchoredConv(weight, source, inputs[key]))
    missing = sorted(set(wanted.values()) - {conv.weight for conv in done})
    if missing:
        raise ValueError(f"no conv2d reads the int8 weights {missing[:10]} through a dequantize_linear; "
                         "anchor_convs takes a frozen QDQ program and the float names of its conv weights")
    _drop_unread_pairs(block, former)
    program._sync_with_cpp()
    return done


def _drop_unread_pairs(block, dequantizers) -> None:
    """Remove each of ``dequantizers`` (the pairs the anchored convs read before) that nothing reads any more,
    with its quantize_linear when that fed it alone."""
    for dequantize in dict.fromkeys(dequantizers):
        readers = readers_by_var(block)
        if readers.get(dequantize.output("Y")[0]):
            continue
        quantized = dequantize.input("X")[0]
        quantizer = writer_by_var(block).get(quantized)
        ops = list(block.ops)
        block._remove_op(ops.index(dequantize), sync=False)
        if quantizer is not None and quantizer.type == "quantize_linear" and len(readers.get(quantized, [])) == 1:
            block._remove_op(list(block.ops).index(quantizer), sync=False)
