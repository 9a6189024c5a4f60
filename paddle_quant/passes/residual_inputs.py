"""Make a residual add that oneDNN fuses into an int8 convolution read its residual quantized.

Paddle 3.3.1's ``conv_elementwise_add_onednn_fuse_pass`` folds ``conv (+ bias, batch norm) + r`` into the
convolution (``fused_conv2d`` with ``ResidualData``), and ``cpu_quantize_pass`` quantizes ``r`` at its own
scale when the convolution runs in int8: oneDNN adds the residual rounded to the int8 grid of ``r``,
where the QDQ program adds the float ``r``. On PP-OCR cls (MobileNetV3's residual blocks, whose
residual a quantized convolution also reads) that was the first place the deployed model left the
simulation: 0.0003 -> 0.2 mean steps across the first residual add (abs_max, AMX CPU, docs/deploy.md).

This pass writes that rounding into the program: in a frozen QDQ program, an ``elementwise_add`` of two
tensors, one written by a quantized convolution through ops oneDNN fuses into it (bias add, batch
norm; :func:`~paddle_quant.passes.pool_inputs.made_by_quantized_conv`) and read by the add alone, reads the
other one, the residual, through the rounding quantize/dequantize pair a quantized op already reads it
through. A residual without such a pair (oneDNN has no scale for it then) and adds of two convolution
branches (which one oneDNN fuses is its choice) are left alone. The graph oneDNN builds is unchanged.
``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.quantize_residual_inputs`); it is idempotent, so
re-applying the scale table gives the same model.
"""

from __future__ import annotations

from ..common.program import is_observer, is_persistable, readers_by_var, writer_by_var
from .pool_inputs import ACTIVATIONS, made_by_quantized_conv, quantized_conv_outputs

__all__ = ["quantize_residual_inputs"]


def _rounded_copy(readers: dict, name: str) -> str | None:
    """The output of a rounding quantize/dequantize pair reading ``name``, or None."""
    for quantizer in readers.get(name, []):
        if quantizer.type != "quantize_linear" or is_observer(quantizer):
            continue
        for dequantizer in readers.get(quantizer.output("Y")[0], []):
            if dequantizer.type == "dequantize_linear":
                return dequantizer.output("Y")[0]
    return None


def _conv_branch(block, name: str, indices: dict, readers: dict, convs: set[str]) -> bool:
    """Whether oneDNN fuses the add reading ``name`` into the int8 convolution writing it."""
    writer = block.ops[indices[name]] if name in indices else None
    return (writer is not None and writer.type not in ACTIVATIONS and len(readers.get(name, [])) == 1
            and made_by_quantized_conv(block, name, indices, readers, convs))


def quantize_residual_inputs(program) -> list[str]:
    """Point each residual add oneDNN fuses into an int8 convolution at its residual's rounded copy (module
    doc), in place; returns the residuals, in program order."""
    block = program.global_block()
    readers, writers = readers_by_var(block), writer_by_var(block)
    indices = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    convs = quantized_conv_outputs(block, writers)
    done = []
    for add in [op for op in block.ops if op.type == "elementwise_add"]:
        operands = [add.input("X")[0], add.input("Y")[0]]
        if any(is_persistable(block, name) for name in operands):
            continue
        branches = [_conv_branch(block, name, indices, readers, convs) for name in operands]
        if branches.count(True) != 1:
            continue
        residual = operands[branches.index(False)]
        rounded = _rounded_copy(readers, residual)
        if rounded is not None:
            add._rename_input(residual, rounded)
            done.append(residual)
    program._sync_with_cpp()
    return done
