"""Let the float readers of a runtime-quantized tensor read its rounded copy, as ONNX QDQ graphs do.

In a QDQ program a rounding quantize/dequantize pair feeds only the quantized op that asked for it; the
tensor's other readers (a residual add, a squeeze-and-excite multiply, an op left in float) read it
unrounded. An ONNX graph written so keeps two readers on the tensor, and onnxruntime's QDQ fusion needs
one: it runs ``DequantizeLinear -> Conv -> QuantizeLinear`` as one QLinearConv only when the
QuantizeLinear is the conv output's only reader, and an ``Add`` as QLinearAdd only when both inputs come
from DequantizeLinear and its output goes to a QuantizeLinear alone. On PP-OCR cls (MobileNetV3's
residual blocks: the block's input feeds the next block's expand conv through a quantizer and its
residual add in float) every such conv and add stayed a float op with NCHW/NHWC transposes around it.

:func:`round_float_readers` points those readers at the rounded copy instead, which is what onnxruntime's
own quantizer writes (one QuantizeLinear per tensor, every reader behind a DequantizeLinear). It changes
what the program computes — the readers see the tensor on its int8 grid — so the ONNX export applies it
only when asked (``export_onnx(round_float_readers=...)``) and ``verify`` applies it to its simulation
for the tensors the ``.onnx`` file reads only through their QuantizeLinear.

A tensor's own rounding pair is the non-observer ``quantize_linear`` that writes ``{tensor}.quantized``
and the ``dequantize_linear`` that reads it (an average pool's ``@pool_input`` pair rounds at the pool's
scale and is not one). Fetched tensors keep their fetch of the unrounded value, and a tensor with a float
reader placed before its pair in the program is left alone, all readers unrounded.
"""

from __future__ import annotations

from typing import Collection

from ..common import naming
from ..common.program import is_observer, readers_by_var

__all__ = ["float_read_quantized_tensors", "round_float_readers"]

_NOT_FLOAT_READERS = ("quantize_linear", "fetch")


def float_read_quantized_tensors(block) -> dict[str, str]:
    """Tensor -> its rounded copy, for every tensor with its own rounding pair that an op other than a
    quantizer (or a fetch) also reads, in program order."""
    readers = readers_by_var(block)
    copies = {}
    for quantizer in block.ops:
        if quantizer.type != "quantize_linear" or is_observer(quantizer):
            continue
        tensor = quantizer.input("X")[0]
        if quantizer.output("Y")[0] != naming.quantized(tensor) or tensor in copies:
            continue
        dequantizers = [op for op in readers.get(naming.quantized(tensor), [])
                        if op.type == "dequantize_linear" and not is_observer(op)]
        if dequantizers and any(op.type not in _NOT_FLOAT_READERS for op in readers.get(tensor, [])):
            copies[tensor] = dequantizers[0].output("Y")[0]
    return copies


def round_float_readers(program, tensors: Collection[str] | None = None) -> list[str]:
    """Point the float readers of ``tensors`` (None: every tensor :func:`float_read_quantized_tensors` finds;
    names it does not find are skipped) at their rounded copies, in place; returns the tensors changed, in
    program order."""
    block = program.global_block()
    copies = float_read_quantized_tensors(block)
    named = None if tensors is None else set(tensors)
    wanted = copies if named is None else {name: rounded for name, rounded in copies.items() if name in named}
    position = {id(op): index for index, op in enumerate(block.ops)}
    written_at = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    readers, changed = readers_by_var(block), []
    for tensor, rounded in wanted.items():
        floats = [op for op in readers.get(tensor, []) if op.type not in _NOT_FLOAT_READERS]
        if any(position[id(op)] < written_at[rounded] for op in floats):
            continue  # a reader before the pair: all keep the float tensor, so the .onnx shows it (verify reads that)
        for op in floats:
            op._rename_input(tensor, rounded)
        changed.append(tensor)
    if changed:
        program._sync_with_cpp()
    return changed
