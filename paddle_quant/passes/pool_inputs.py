"""Run an average pool at one scale on both sides, as oneDNN's int8 pool does, in the program itself.

Paddle Inference's oneDNN int8 passes run ``pool2d`` in int8 whenever its output has a scale (a
quantizer or an observer reads it). ``compute_propagate_scales_onednn_pass`` treats the pool as
scale-preserving: the pool's input keeps its own scale if it has one and the output is given that
scale (the output's calibrated scale is dropped); an input without a scale takes the output's.
``cpu_quantize_pass`` then quantizes the input at that scale before pooling. For a max pool with
no scale of its own on the input nothing changes (rounding commutes with max); for an average pool
every input value is clipped and rounded where the QDQ program rounds only the average. PP-OCRv4
rec has such a pool at the squeeze of every squeeze-and-excite block: without this pass the
Executor's simulation and an ONNX export of the program read 0.8-6 points of exact match below
the deployed oneDNN model on 1000 lines over five calibration algorithms; with it, within 1 point
(docs/deploy_onnx.md).

This pass writes oneDNN's arithmetic into the program, for every average pool whose output is
quantized or observed:

* the pool reads its input through a new quantize/dequantize pair (``{input}@pool_input``) at
  the input's own scale variable (of its quantizer, or its observer) or, without one, the
  output's;
* when that is the input's scale, the output's quantize/dequantize (or observer) pair reads the
  same scale variable instead of its calibrated one.

The Executor, onnxruntime and oneDNN then run the same arithmetic; the graph oneDNN builds is
unchanged. ``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.backends.BackendProfile.quantize_pool_inputs`). The scale table keeps the
calibrated scales, so re-applying it runs this pass again and gives the same model.

Not reproduced: oneDNN also rounds a pool's output when only an observer carries its scale (the
observer pair stays an identity here), runs a pool whose output has no scale but whose input has
one in int8, and, when the pool input is produced by an int8 convolution, requantizes it there,
so the input's other readers see it quantized too (PP-OCR cls with ``output_scales='none'``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import naming
from .._program import is_observer, readers_by_var, writer_by_var
from .quantizers import insert_qdq_pair, qdq_attrs

__all__ = ["QuantizedPoolInput", "quantize_pool_inputs"]


@dataclass(frozen=True)
class QuantizedPoolInput:
    """One average pool changed: its output, its input, the scale variable both sides now use, and
    whether the output's own scale was replaced by it."""

    pool_output: str
    pool_input: str
    scale: str
    output_rescaled: bool


def _quantizer_of(readers, name: str):
    """The ``quantize_linear`` (quantizer or observer) reading ``name``, or None."""
    quantizers = [op for op in readers.get(name, []) if op.type == "quantize_linear"]
    return quantizers[0] if quantizers else None


def _input_scale(readers, writers, pool):
    """The scale variable of the pool input's own quantizer or observer, and whether the pool already
    reads it through a quantizer; (None, False) when the input has no scale."""
    producer = writers.get(pool.input("X")[0])
    if producer is not None and producer.type == "dequantize_linear":
        return producer.input("Scale")[0], not is_observer(producer)
    quantizer = _quantizer_of(readers, pool.input("X")[0])
    return (quantizer.input("Scale")[0] if quantizer is not None else None), False


def _rescale_pair(readers, quantizer, scale: str) -> None:
    """Point a quantize_linear and the dequantize_linear after it at the scale variable ``scale``."""
    pair = [quantizer] + [op for op in readers.get(quantizer.output("Y")[0], []) if op.type == "dequantize_linear"]
    for op in pair:
        op._rename_input(op.input("Scale")[0], scale)


def _is_average_pool(op) -> bool:
    return op.type == "pool2d" and op.attr("pooling_type") == "avg"


def _insert_pair(block, scope, place, pool, scale: str, bits: int) -> None:
    source = pool.input("X")[0]
    dequantized = insert_qdq_pair(block, scope, place, list(block.ops).index(pool), source,
                                  naming.pool_input(source), scale, qdq_attrs(bits, -1))
    pool._rename_input(source, dequantized)


def quantize_pool_inputs(program, scope, place) -> list[QuantizedPoolInput]:
    """Make every average ``pool2d`` whose output is quantized or observed run at one scale, read through a
    quantizer (see the module docstring).

    Args:
        program: legacy-IR QDQ inference program (as ``quant_post`` saves it); changed in place.
        scope: the scope holding its scales; the new zero points are written to it.
        place: where to write them.

    Returns:
        One :class:`QuantizedPoolInput` per pool changed, in program order.
    """
    block = program.global_block()
    readers, writers = readers_by_var(block), writer_by_var(block)
    changed = []
    for pool in [op for op in block.ops if _is_average_pool(op)]:
        output, source = pool.output("Out")[0], pool.input("X")[0]
        output_quantizer = _quantizer_of(readers, output)
        if output_quantizer is None:
            continue
        own_scale, quantized = _input_scale(readers, writers, pool)
        scale = own_scale or output_quantizer.input("Scale")[0]
        rescale = scale != output_quantizer.input("Scale")[0]
        if quantized and not rescale:
            continue
        if not quantized:
            _insert_pair(block, scope, place, pool, scale, output_quantizer.attr("bit_length"))
        if rescale:
            _rescale_pair(readers, output_quantizer, scale)
        changed.append(QuantizedPoolInput(output, source, scale, rescale))
    program._sync_with_cpp()
    return changed
