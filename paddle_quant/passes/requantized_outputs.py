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
decides what oneDNN fuses). A tensor another op writes (a feed, an activation oneDNN does not fuse) is
quantized by oneDNN for the quantized op alone and left alone here, as are fetches (the model's outputs keep
their names). The graph oneDNN builds is
unchanged. ``quant_post`` runs it for ``deploy_backend='onednn'``
(:attr:`~paddle_quant.common.backends.BackendProfile.round_requantized_outputs`); it is idempotent, so
re-applying the scale table gives the same model.
"""

from __future__ import annotations

from ..common.program import is_observer, readers_by_var, writer_by_var
from .pool_inputs import made_by_quantized_conv, quantized_conv_outputs

__all__ = ["round_requantized_outputs"]


def _rounding_pairs(block) -> dict[str, tuple[object, str]]:
    """Tensor -> (its first rounding quantize_linear, the dequantized copy it feeds), in program order."""
    readers = readers_by_var(block)
    pairs = {}
    for quantizer in block.ops:
        if quantizer.type != "quantize_linear" or is_observer(quantizer) or quantizer.input("X")[0] in pairs:
            continue
        copies = [op.output("Y")[0] for op in readers.get(quantizer.output("Y")[0], [])
                  if op.type == "dequantize_linear"]
        if copies:
            pairs[quantizer.input("X")[0]] = (quantizer, copies[0])
    return pairs


def round_requantized_outputs(program) -> list[str]:
    """Point the float readers of each tensor an int8 convolution requantizes at its rounded copy (module doc),
    in place; returns those tensors, in program order."""
    block = program.global_block()
    readers, writers = readers_by_var(block), writer_by_var(block)
    indices = {name: index for index, op in enumerate(block.ops) for name in op.output_arg_names}
    int8_convs = quantized_conv_outputs(block, writers)
    done = []
    for tensor, (quantizer, rounded) in _rounding_pairs(block).items():
        others = [op for op in readers.get(tensor, []) if op.type not in ("quantize_linear", "fetch")]
        if not others or not made_by_quantized_conv(block, tensor, indices, readers, int8_convs):
            continue
        for op in others:
            op._rename_input(tensor, rounded)
        done.append(tensor)
    program._sync_with_cpp()
    return done
