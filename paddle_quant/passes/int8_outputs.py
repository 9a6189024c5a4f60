"""The outputs of quantized weight ops, past the ops that fold into them: what ``output_scales='int8_ops'``
observes.

A runtime fuses an int8 convolution or matmul with the bias add, batch norm and per-channel or scalar
affine ops that follow it (``passes/fold_affine.py``, the ONNX export's conv folding), and requantizes
the fused op's output where an observed scale says how. ``output_scales='int8_ops'`` plans observers
on those tensors only, so an export such as ``export_onnx(observers='int8_ops')`` or
``select_requantized_outputs`` can requantize the outputs of int8 ops while every other tensor keeps
the arithmetic of ``output_scales='none'`` (with ``'all'`` the observers on, say, a squeeze-and-excite
pool's input change what ``deploy_backend='onednn'`` states for that pool: ``passes/pool_inputs.py``).
"""

from __future__ import annotations

from ..common.program import is_persistable, readers_by_var

__all__ = ["int8_op_outputs"]

_AFFINE_TYPES = ("elementwise_add", "elementwise_mul", "scale", "batch_norm")


def _folds_in(block, op, var: str) -> bool:
    """True when ``op`` applies a parameter-only affine map to ``var`` (a bias, a scale, a batch norm)."""
    if op.type == "scale":
        return op.input("X") == [var] and not ("ScaleTensor" in op.input_names and op.input("ScaleTensor"))
    if op.type == "batch_norm":
        return op.input("X") == [var]
    operands = op.input("X") + op.input("Y")
    return operands.count(var) == 1 and all(is_persistable(block, name) for name in operands if name != var)


def _folding_reader(block, readers, var: str):
    """The op that reads ``var`` alone and folds into its producer (a bias, a scale, a batch norm), or None."""
    found = readers.get(var, [])
    if len(found) != 1 or found[0].type not in _AFFINE_TYPES or not _folds_in(block, found[0], var):
        return None
    return found[0]


def int8_op_outputs(block, plan) -> set[str]:
    """Every tensor from a quantized weight op's output along its single-reader chain of bias / scale /
    batch-norm ops (the chain a runtime folds into the int8 op), for the ops of ``plan`` that read a weight."""
    readers = readers_by_var(block)
    outputs = set()
    for planned in plan.ops:
        if not planned.with_weight:
            continue
        op = block.ops[planned.index]
        var = op.output("Output" if "Output" in op.output_names else "Out")[0]
        outputs.add(var)
        while (reader := _folding_reader(block, readers, var)) is not None:
            var = reader.output("Y" if reader.type == "batch_norm" else "Out")[0]
            outputs.add(var)
    return outputs
