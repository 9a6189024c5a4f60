"""Make every reader of a tensor an int8 convolution requantizes read it rounded, as in oneDNN.

When a quantized tensor (one a rounding quantize/dequantize pair reads, for a quantized op) is written by
an int8 convolution through ops oneDNN fuses into it (bias add, batch norm, one activation),
Paddle 3.3.1's ``cpu_quantize_pass`` gives the convolution that tensor's scale as its output scale: the
convolution writes it in int8, and ``cpu_quantize_squash_pass`` leaves one ``dequantize`` for the readers
that run in float. Every reader then sees the tensor rounded to its int8 grid, where the QDQ program
rounds it only for the quantized op and hands the float tensor to the others: a residual add (whether
or not oneDNN fuses it into the next convolution), a squeeze-and-excite multiply, an output. On PP-OCR
cls (MobileNetV3's residual blocks, whose residual a quantized convolution also reads) that was the
first place the deployed model left the simulation: 0.0003 -> 0.2 mean steps across the first residual
add (abs_max, AMX CPU, docs/deploy.md).

This pass writes that rounding into a frozen QDQ program: the other readers of such a tensor read the
output of its rounding pair instead (:func:`~paddle_quant.passes.pool_inputs.made_by_quantized_conv`
decides what oneDNN fuses). A residual add oneDNN fuses into an int8 convolution
(``conv_elementwise_add_onednn_fuse_pass``: the add of a convolution's output, through its bias add or
batch norm, and a residual that is not that convolution's own input) makes its output one too, as in
MobileNetV3's chained residual blocks. A tensor another op writes (a feed, an activation oneDNN does not fuse) is
quantized by oneDNN for the quantized op alone and left alone here, as are fetches (the model's outputs keep
their names). The graph oneDNN builds is
unchanged. ``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.round_requantized_outputs`); it is idempotent, so
re-applying the scale table gives the same model.
"""

from __future__ import annotations

from ..common.program import is_observer, is_persistable, readers_by_var, writer_by_var
from .fold_affine import CONV_TYPES
from .pool_inputs import ACTIVATIONS, made_by_quantized_conv, quantized_conv_outputs
from .unsigned_grid import through_qdq

__all__ = ["round_requantized_outputs"]


def _rounded_copies(block, readers: dict) -> dict[str, str]:
    """Tensor -> the dequantized copy its first rounding quantize/dequantize pair makes, in program order."""
    copies = {}
    for quantizer in block.ops:
        if quantizer.type != "quantize_linear" or is_observer(quantizer) or quantizer.input("X")[0] in copies:
            continue
        dequantized = [op.output("Y")[0] for op in readers.get(quantizer.output("Y")[0], [])
                       if op.type == "dequantize_linear"]
        if dequantized:
            copies[quantizer.input("X")[0]] = dequantized[0]
    return copies


def _fused_branch_input(block, name: str, indices: dict, readers: dict, int8_convs: set[str]) -> str | None:
    """When oneDNN can fuse an add reading ``name`` into the int8 convolution writing it (through its bias add or
    batch norm, no activation; ``name`` read by the add alone), that convolution's input; None otherwise."""
    writer = block.ops[indices[name]] if name in indices else None
    if writer is None or writer.type in ACTIVATIONS or len(readers.get(name, [])) != 1 \
            or not made_by_quantized_conv(block, name, indices, readers, int8_convs):
        return None
    while writer.type not in CONV_TYPES:
        tensor = next(n for n in writer.input_arg_names if not is_persistable(block, n))  # not the bias/bn stats
        writer = block.ops[indices[tensor]]
    return writer.input("Input")[0]


def _written_by_int8_conv(block, name: str, indices: dict, readers: dict, int8_convs: set[str], writers) -> bool:
    """Whether an int8 convolution writes ``name`` in oneDNN: through the ops it fuses (bias, batch norm, one
    activation), or as ``conv + residual`` (+ activation) with the add fused into it, which oneDNN does when the
    residual is not that convolution's own input (``conv(x) + x`` stays a float add)."""
    if made_by_quantized_conv(block, name, indices, readers, int8_convs):
        return True
    writer = block.ops[indices[name]] if name in indices else None
    if writer is not None and writer.type in ACTIVATIONS:
        source = writer.input("X")[0]
        writer = block.ops[indices[source]] if source in indices and len(readers.get(source, [])) == 1 else None
    if writer is None or writer.type != "elementwise_add":
        return False
    operands = [writer.input("X")[0], writer.input("Y")[0]]
    if any(is_persistable(block, n) for n in operands):
        return False
    for branch, residual in (operands, operands[::-1]):
        conv_input = _fused_branch_input(block, branch, indices, readers, int8_convs)
        if conv_input is not None and through_qdq(writers, conv_input) != through_qdq(writers, residual):
            return True
    return False


def round_requantized_outputs(program) -> list[str]:
    """Point the float readers of each tensor an int8 convolution requantizes at its rounded copy (module doc),
    in place; returns those tensors, in program order."""
    block = program.global_block()
    readers, writers = readers_by_var(block), writer_by_var(block)
    indices = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    int8_convs = quantized_conv_outputs(block, writers)
    done = []
    for tensor, rounded in _rounded_copies(block, readers).items():
        others = [op for op in readers.get(tensor, []) if op.type not in ("quantize_linear", "fetch")]
        if not others or not _written_by_int8_conv(block, tensor, indices, readers, int8_convs, writers):
            continue
        for op in others:
            op._rename_input(tensor, rounded)
        done.append(tensor)
    program._sync_with_cpp()
    return done
