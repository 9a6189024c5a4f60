"""Find the bias of each quantized linear op and swap in a corrected copy after freezing.

Planning (:func:`bias_corrections`) reads the fp32 program: which op, weight,
input and bias. Applying (:func:`apply_bias_corrections`) computes the shift
from the frozen integer weights and the calibration means, writes
``{bias}@corrected`` to the scope and makes the bias add read it; the original
bias tensor is left untouched.

The shift is the weight's alone, ``(Ŵ - W) · E[x]``, or, given the means of the
input as its quantizer leaves it (:func:`quantized_input_reducers`,
``bias_correction_inputs``), the whole mean error of the op's output,
``Ŵ · E[Q(x)] - W · E[x]``: the input's clipping at its scale shifts the mean of
every output channel too.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..common import naming
from ..common.program import read_tensor, write_tensor
from ..ptq.bias_correction import conv_input_mean, conv_output_shift, matmul_input_mean, matmul_output_shift
from ..common.numerics import dequantize_linear, fake_quant_dequant
from .plan import QuantPlan

__all__ = ["BiasCorrection", "bias_corrections", "quantized_input_reducers", "apply_bias_corrections"]

_logger = logging.getLogger(__name__)
_CONV = ("conv2d", "depthwise_conv2d")
_MATMUL = ("mul", "matmul", "matmul_v2")


@dataclass(frozen=True)
class BiasCorrection:
    """One weight op whose bias absorbs the weight-quantization shift."""

    op_type: str
    weight: str
    input: str
    bias: str
    groups: int
    transposed: bool
    input_mean: Callable[[np.ndarray], np.ndarray]


_RESHAPES = ("reshape2", "reshape", "unsqueeze2", "unsqueeze")


def _persistable_vector(block, name: str) -> str | None:
    """``name`` if it is a 1-D parameter, or the 1-D parameter a reshape turned into ``name``."""
    var = block.var(name)
    if var.persistable:
        return name if len(var.shape) == 1 else None
    producers = [op for op in block.ops if name in op.output_arg_names]
    if len(producers) == 1 and producers[0].type in _RESHAPES:
        return _persistable_vector(block, producers[0].input("X")[0])
    return None


def _bias_add(block, output: str):
    """The bias parameter added to ``output`` (``nn.Conv2D`` reshapes it to [1, C, 1, 1] first)."""
    readers = [op for op in block.ops if output in op.input_arg_names]
    if len(readers) != 1 or readers[0].type != "elementwise_add" or readers[0].input("X") != [output]:
        return None
    return _persistable_vector(block, readers[0].input("Y")[0])


def _correction(block, op, weight: str):
    activation = next(n for slot in op.input_names for n in op.input(slot) if n != weight)
    bias = _bias_add(block, op.output_arg_names[0])
    if bias is None:
        return None
    if op.type in _CONV:
        return BiasCorrection(op.type, weight, activation, bias, int(op.attr("groups")), False, conv_input_mean)
    leading = int(op.attr("x_num_col_dims")) if op.type == "mul" else len(block.var(activation).shape) - 1
    transposed = bool(op.attr("trans_y")) if op.type == "matmul_v2" else (
        bool(op.attr("transpose_Y")) if op.type == "matmul" else False)
    mean = functools.partial(matmul_input_mean, leading_dims=leading)
    return BiasCorrection(op.type, weight, activation, bias, 1, transposed, mean)


def bias_corrections(program, plan: QuantPlan) -> list[BiasCorrection]:
    """The planned weight ops (conv2d, depthwise_conv2d, mul, matmul, matmul_v2) followed by a bias add."""
    block, found = program.global_block(), []
    for op_quant in plan.ops:
        op = block.ops[op_quant.index]
        weights = [name for _, name in op_quant.inputs if block.var(name).persistable]
        if not weights or op.type not in _CONV + _MATMUL:
            continue
        correction = _correction(block, op, weights[0])
        if correction is None:
            _logger.info("bias correction: %s reading %s has no bias add; left as is", op.type, weights[0])
        else:
            found.append(correction)
    return found


def _shift(correction: BiasCorrection, delta: np.ndarray, mean: np.ndarray) -> np.ndarray:
    if correction.op_type in _CONV:
        return conv_output_shift(delta, mean, correction.groups)
    return matmul_output_shift(delta, mean, transposed=correction.transposed)


def _dequantized_weight(block, scope, weight: str) -> np.ndarray:
    dequant = next(op for op in block.ops if op.type == "dequantize_linear" and op.input("X") == [naming.int_weight(weight)])
    return dequantize_linear(read_tensor(scope, naming.int_weight(weight)).astype(np.float32),
                             read_tensor(scope, dequant.input("Scale")[0]), dequant.attr("bit_length"),
                             dequant.attr("quant_axis"))


def quantized_input_reducers(corrections, scales: dict[str, np.ndarray], bits: int) -> dict[str, Callable]:
    """``{input: reducer}`` giving a batch's per-feature mean of each corrected op's input after its quantizer
    (``bits``, the per-tensor ``scales[input]``, on the signed grid: a tensor oneDNN stores unsigned clips at the
    same scale and rounds on a finer grid, which moves its mean by far less); inputs without a scale are left out."""
    reducers = {}
    for correction in corrections:
        if correction.input in scales:
            scale = np.asarray(scales[correction.input], np.float32).reshape(-1)
            reducers[correction.input] = functools.partial(_quantized_mean, correction.input_mean, scale, bits)
    return reducers


def _quantized_mean(input_mean, scale: np.ndarray, bits: int, x: np.ndarray) -> np.ndarray:
    return input_mean(fake_quant_dequant(x, scale, bits, axis=None))


def apply_bias_corrections(frozen, corrections, means: dict[str, np.ndarray], scope, place,
                           quantized_means: dict[str, np.ndarray] | None = None) -> None:
    """Write ``{bias}@corrected = bias - shift`` and point each bias add of ``frozen`` at it. With
    ``quantized_means`` (input -> mean after its quantizer) the shift of an op whose input is there is
    ``Ŵ · E[Q(x)] - W · E[x]``, else ``(Ŵ - W) · E[x]``."""
    block, quantized_means = frozen.global_block(), quantized_means or {}
    for correction in corrections:
        weight = read_tensor(scope, correction.weight)
        delta = _dequantized_weight(block, scope, correction.weight) - weight
        bias = read_tensor(scope, correction.bias)
        mean = means[correction.input]
        if correction.input in quantized_means:
            quantized = quantized_means[correction.input]
            shift = _shift(correction, delta, quantized) + _shift(correction, weight, quantized - mean)
        else:
            shift = _shift(correction, delta, mean)
        corrected = (bias - shift).astype(bias.dtype)
        name = naming.corrected_bias(correction.bias)
        write_tensor(scope, place, name, corrected)
        if not block.has_var(name):
            block.create_var(name=name, shape=list(bias.shape), dtype=block.var(correction.bias).dtype, persistable=True)
        for op in block.ops:
            if correction.bias in op.input_arg_names:
                op._rename_input(correction.bias, name)
