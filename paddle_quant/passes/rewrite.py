"""Rewrite: apply a :class:`QuantPlan` to a Program (insert ops, create state).

Applying a plan mutates the Program it is given; the public entry points hand
it a clone. Persistable state (scales, moving-average state, zero points) is
created in the scope only where it is missing or has the wrong shape, so
trained scales are never reset by building an eval program later.
"""

from __future__ import annotations

import numpy as np
from paddle.base import core

from ..common import naming
from ..common.program import OP_ROLE_BACKWARD, has_tensor, insert_ops, op_role, read_tensor, write_tensor
from ..common.numerics import abs_max_scale
from .plan import QuantPlan, TensorQuant
from .quantizers import Emission, TensorInfo, emit_global_step, emit_observer, emit_quantizer

__all__ = ["apply_plan", "QUANTIZED_OP_ATTR"]

QUANTIZED_OP_ATTR = "paddle_quant_quantized"
"""Bool attribute marking the ops paddle_quant rewired to read dequantized inputs."""

_DTYPES = {"float32": core.VarDesc.VarType.FP32, "float64": core.VarDesc.VarType.FP64,
           "float16": core.VarDesc.VarType.FP16, "int32": core.VarDesc.VarType.INT32,
           "int64": core.VarDesc.VarType.INT64}


def _dtype_name(var) -> str:
    return {v: k for k, v in _DTYPES.items()}.get(var.dtype, "float32")


def _initial_scale(tensor: TensorQuant, scope) -> np.ndarray:
    if tensor.role == "weight":
        weight = read_tensor(scope, tensor.var)
        scale = abs_max_scale(weight, axis=tensor.axis if tensor.axis >= 0 else None)
        return np.maximum(np.asarray(scale, np.float32).reshape(-1), np.float32(1e-8))
    return np.ones([1], np.float32)


def _tensor_info(block, tensor: TensorQuant, scope) -> TensorInfo:
    var = block.var(tensor.var)
    return TensorInfo(tuple(var.shape), _dtype_name(var), _initial_scale(tensor, scope))


def _create_vars(block, emission: Emission, scope, place) -> None:
    for spec in emission.variables:
        if not block.has_var(spec.name):
            block.create_var(name=spec.name, shape=list(spec.shape), dtype=_DTYPES[spec.dtype],
                             persistable=spec.persistable, stop_gradient=spec.persistable)
        if spec.persistable and not _matches(scope, spec):
            write_tensor(scope, place, spec.name, spec.init)


def _matches(scope, spec) -> bool:
    if not has_tensor(scope, spec.name):
        return False
    return tuple(np.array(scope.find_var(spec.name).get_tensor()).shape) == tuple(spec.init.shape)


def _grad_ops_of(block, forward_op):
    grad_names = {f"{name}@GRAD" for name in forward_op.output_arg_names}
    wanted = f"{forward_op.type}_grad"
    return [op for op in block.ops
            if op.type == wanted and op_role(op) & OP_ROLE_BACKWARD and grad_names & set(op.input_arg_names)]


def _rewire(block, plan: QuantPlan, rewire_backward: bool) -> None:
    ops = list(block.ops)
    for op_quant in plan.ops:
        op = ops[op_quant.index]
        targets = [op] + (_grad_ops_of(block, op) if rewire_backward else [])
        for _slot, name in op_quant.inputs:
            for target in targets:
                target._rename_input(name, naming.dequantized(name))
        op._set_attr("quantization_type", "qat_with_weight" if op_quant.with_weight else "qat_without_weight")
        op._set_attr("with_quant_attr", True)
        op._set_attr(QUANTIZED_OP_ATTR, True)
    for skipped in plan.skipped:
        ops[skipped.index]._set_attr("skip_quant", True)
        ops[skipped.index]._set_attr("with_quant_attr", True)


def apply_plan(program, plan: QuantPlan, config, scope, place, *, mode: str, rewire_backward: bool) -> None:
    """Insert the planned quantizers and observers into ``program`` (in place).

    Args:
        program: legacy Program to rewrite.
        plan: what to quantize (from :func:`plan_quantization` on this program).
        config: the validated QuantConfig.
        scope: scope holding the parameters; new state is created there.
        place: device for new tensors.
        mode: ``"train"`` (fused straight-through quantizers, statistics updated)
            or ``"test"`` (the config format's eval ops).
        rewire_backward: also make existing gradient ops read the dequantized
            tensors (needed when ``minimize()`` already ran).
    """
    block = program.global_block()
    insertions = []
    for tensor in plan.tensors:
        emission = emit_quantizer(tensor, _tensor_info(block, tensor, scope), config, mode)
        insertions.append((tensor.first_consumer, emission))
    quantized_vars = {t.var for t in plan.tensors}
    for observed in plan.observers:
        if observed.var not in quantized_vars:
            insertions.append((observed.producer + 1, emit_observer(observed.var, config, mode)))
    if mode == "train" and any(t.method == "range_abs_max" for t in plan.tensors):
        insertions.append((0, emit_global_step()))
    _rewire(block, plan, rewire_backward)
    for _position, emission in insertions:
        _create_vars(block, emission, scope, place)
    for position, emission in sorted(insertions, key=lambda item: item[0], reverse=True):
        insert_ops(block, position, [(op.type, op.inputs, op.outputs, op.attrs) for op in emission.ops])
    program._sync_with_cpp()
