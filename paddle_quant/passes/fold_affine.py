"""Fold per-channel affine ops that follow a convolution into its weight and bias.

PP-LCNetV3 (the backbone of PP-OCRv4 rec and det) follows every convolution with a bias add
and a "learnable affine block": ``y = a * (conv(x, W) + bias) + b`` with scalar parameters
``a`` and ``b``, written as two more elementwise ops. Paddle Inference folds batch norm into a
convolution but not these, and in oneDNN int8 the chain keeps the convolution from fusing its
activation (``hard_swish`` then runs as a separate float op): on PP-OCRv4 rec at batch 8 the
int8 model ran no faster than fp32 until the chain was folded (bench/deploy.py, docs/deploy.md).

The fold is exact algebra, ``a * (conv(x, W) + bias) + b = conv(x, a W) + (a bias + b)``,
per output channel:

* an int8 weight (``dequantize_linear`` per output channel, ``quant_axis = 0``) keeps its
  integers up to sign, ``q' = sign(a) q``, and takes the scale ``scale * |a|``: nothing is
  re-quantized;
* a float weight is multiplied by ``a`` into a new variable ``{W}@folded``;
* the bias becomes ``{bias}@folded`` = ``a * bias + b``; the chain's last output is renamed onto
  the bias add, and the folded ops go.

Only variables this library created are rewritten in place (``{W}@int8`` and its scale); user
parameters are copied, so a caller's scope keeps its values. A chain stops at anything that is
not a single-consumer ``elementwise_mul``/``elementwise_add`` with a persistable parameter of one
value or one value per output channel along axis 1, at a fetched tensor, or at a tensor that
other ops also read. Observer pairs (``only_observer``) on the folded intermediates are
dropped: their tensors no longer exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.program import is_observer, is_persistable, read_tensor, readers_by_var, write_tensor, writer_by_var

__all__ = ["FoldedConv", "fold_conv_affine", "CONV_TYPES"]

CONV_TYPES = ("conv2d", "depthwise_conv2d")
"""Op types whose output channels (axis 1 of the output, axis 0 of the filter) are folded into."""

_AFFINE_TYPES = ("elementwise_mul", "elementwise_add")
_FOLDED_SUFFIX = "@folded"


@dataclass(frozen=True)
class FoldedConv:
    """One folded chain: the convolution's filter, the ops removed, and the output it now writes."""

    filter: str
    removed: tuple[str, ...]
    output: str


class _Graph:
    """Producer/consumer lookups over one block, refreshed after every fold."""

    def __init__(self, block, fetched: set[str]) -> None:
        self.block = block
        self.fetched = fetched
        self.refresh()

    def refresh(self) -> None:
        self.readers = readers_by_var(self.block)
        self.writer = writer_by_var(self.block)

    def persistable(self, name: str) -> bool:
        return is_persistable(self.block, name)

    def only_reader(self, name: str):
        """The one op reading ``name``, skipping an observer pair; None if several or fetched."""
        if name in self.fetched:
            return None, ()
        readers = self.readers.get(name, [])
        if len(readers) != 1:
            return None, ()
        op = readers[0]
        if op.type == "quantize_linear" and is_observer(op):
            dequant = self.readers.get(op.output("Y")[0], [])
            if len(dequant) == 1 and dequant[0].type == "dequantize_linear":
                following, pairs = self.only_reader(dequant[0].output("Y")[0])
                return following, ((op, dequant[0]),) + pairs
            return None, ()
        return op, ()


def _channel_param(graph: _Graph, scope, op, tensor: str, channels: int):
    """The parameter of an affine op as ``channels`` float64 values, or None when it does not qualify."""
    if tensor not in (op.input("X")[0], op.input("Y")[0]):
        return None
    names = [n for n in (op.input("X")[0], op.input("Y")[0]) if n != tensor]
    if len(names) != 1 or not graph.persistable(names[0]):
        return None
    value = read_tensor(scope, names[0]).astype(np.float64)
    if value.size == 1:
        return np.full(channels, value.reshape(-1)[0])
    along_channels = (value.shape == (1, channels, 1, 1)
                      or (value.shape == (channels,) and op.input("Y")[0] == names[0] and op.attr("axis") == 1))
    return value.reshape(-1) if along_channels else None


@dataclass
class _Chain:
    """What follows one convolution and folds into it."""

    bias_add: object
    bias_input: str  # the name under which the bias add reads the conv output
    ops: list  # the affine ops after the bias add
    observer_pairs: list  # observer (quantize, dequantize) pairs on the folded tensors
    output: str  # the chain's last output, which the bias add writes after the fold
    factor: np.ndarray  # per output channel: the product of the multipliers
    bias: np.ndarray  # per output channel: the folded bias


def _chain(graph: _Graph, scope, conv, channels: int) -> _Chain | None:
    """The foldable chain after ``conv`` (a bias add and at least one affine op), or None."""
    output = conv.output("Output")[0]
    bias_add, pairs = graph.only_reader(output)
    if bias_add is None or bias_add.type != "elementwise_add":
        return None
    bias_input = _dequantized_input(output, pairs)
    bias = _channel_param(graph, scope, bias_add, bias_input, channels)
    if bias is None:
        return None
    factor, ops, dropped, current = np.ones(channels), [], list(pairs), bias_add.output("Out")[0]
    while True:
        op, pairs = graph.only_reader(current)
        if op is None or op.type not in _AFFINE_TYPES:
            break
        value = _channel_param(graph, scope, op, _dequantized_input(current, pairs), channels)
        if value is None:
            break
        if op.type == "elementwise_mul":
            factor, bias = factor * value, bias * value
        else:
            bias = bias + value
        ops.append(op)
        dropped.extend(pairs)
        current = op.output("Out")[0]
    return _Chain(bias_add, bias_input, ops, dropped, current, factor, bias) if ops else None


def _dequantized_input(tensor: str, pairs) -> str:
    """The name the next op reads ``tensor`` under: the last observer pair's output, if any."""
    return pairs[-1][1].output("Y")[0] if pairs else tensor


def _scale_weight(graph: _Graph, scope, place, conv, factor: np.ndarray) -> bool:
    """Multiply the filter by ``factor`` per output channel; False when it cannot be done safely."""
    filter_name = conv.input("Filter")[0]
    if len(graph.readers.get(filter_name, [])) != 1:
        return False
    producer = graph.writer.get(filter_name)
    if producer is None and graph.persistable(filter_name):  # float weight: a folded copy
        values = read_tensor(scope, filter_name)
        folded = (values * factor.reshape([-1] + [1] * (values.ndim - 1))).astype(values.dtype)
        name = filter_name + _FOLDED_SUFFIX
        write_tensor(scope, place, name, folded)
        var = graph.block.var(filter_name)
        if not graph.block.has_var(name):
            graph.block.create_var(name=name, shape=list(values.shape), dtype=var.dtype, persistable=True)
        conv._rename_input(filter_name, name)
        return True
    if producer is None or producer.type != "dequantize_linear" or producer.attr("quant_axis") != 0:
        return False
    ints, scale = producer.input("X")[0], producer.input("Scale")[0]
    if any(len(graph.readers.get(n, [])) != 1 for n in (ints, scale)) or not ints.endswith("@int8"):
        return False  # only our own int8 tensors are rewritten in place
    values, scales = read_tensor(scope, ints), read_tensor(scope, scale)
    if scales.size != factor.size:
        return False
    sign = np.where(factor < 0, -1, 1).reshape([-1] + [1] * (values.ndim - 1))
    write_tensor(scope, place, ints, (values.astype(np.int32) * sign).astype(values.dtype))
    write_tensor(scope, place, scale, (scales.astype(np.float64).reshape(scales.shape)
                                       * np.abs(factor).reshape(scales.shape)).astype(scales.dtype))
    return True


def _write_bias(graph: _Graph, scope, place, chain: _Chain) -> None:
    """Point the bias add at ``{bias}@folded`` holding the folded values."""
    bias_add = chain.bias_add
    old = [n for n in (bias_add.input("X")[0], bias_add.input("Y")[0]) if n != chain.bias_input][0]
    shape = read_tensor(scope, old).shape
    name = old + _FOLDED_SUFFIX
    while graph.block.has_var(name):
        name += "_"
    write_tensor(scope, place, name, chain.bias.reshape(shape).astype(np.float32))
    graph.block.create_var(name=name, shape=list(shape), dtype=graph.block.var(old).dtype, persistable=True)
    bias_add._rename_input(old, name)


def fold_conv_affine(program, scope, place) -> list[FoldedConv]:
    """Fold ``conv -> bias add -> (mul | add by a parameter)+`` chains into the convolution.

    Args:
        program: legacy-IR inference program (fp32, or QDQ as ``quant_post`` saves it); changed
            in place.
        scope: the scope holding its parameters; the ``@folded`` variables are written to it.
        place: where to write them.

    Returns:
        One :class:`FoldedConv` per folded chain, in program order.
    """
    block = program.global_block()
    fetched = {name for op in block.ops if op.type == "fetch" for name in op.input_arg_names}
    graph = _Graph(block, fetched)
    folded = []
    for conv in [op for op in block.ops if op.type in CONV_TYPES]:
        channels = _output_channels(graph, conv)
        chain = _chain(graph, scope, conv, channels) if channels else None
        filter_name = conv.input("Filter")[0]
        if chain is None or not _scale_weight(graph, scope, place, conv, chain.factor):
            continue
        _write_bias(graph, scope, place, chain)
        output = conv.output("Output")[0]
        if chain.bias_input != output:
            chain.bias_add._rename_input(chain.bias_input, output)
        chain.bias_add._rename_output(chain.bias_add.output("Out")[0], chain.output)
        removed = chain.ops + [op for pair in chain.observer_pairs for op in pair]
        folded.append(FoldedConv(filter_name, tuple(op.type for op in removed), chain.output))
        for op in removed:
            block._remove_op(list(block.ops).index(op), sync=False)
        graph.refresh()
    return folded


def _output_channels(graph: _Graph, conv) -> int:
    """Output channels of an NCHW ``conv`` from its filter (int8 source or float weight); 0 if unknown."""
    if conv.has_attr("data_format") and conv.attr("data_format") not in ("NCHW", "AnyLayout"):
        return 0
    filter_name = conv.input("Filter")[0]
    producer = graph.writer.get(filter_name)
    source = producer.input("X")[0] if producer is not None and producer.type == "dequantize_linear" else filter_name
    if not graph.persistable(source):
        return 0
    shape = graph.block.var(source).shape
    return int(shape[0]) if shape and shape[0] > 0 else 0
