"""Which Paddle ops simulate each quantizer: a table of small emitters.

An emitter turns one planned :class:`~paddle_quant.passes.plan.TensorQuant` into
an :class:`Emission`: the op descriptions to insert before the first consumer,
the variables they need (with initial values for persistable state) and the
name of the tensor consumers read instead.

Three families:
- ``qdq``: inference/eval programs in the QDQ format (``quantize_linear`` +
  ``dequantize_linear``), as PaddleSlim 2.6 with ``onnx_format=True``.
- ``fake``: inference/eval programs in the old format (``fake_quantize_*`` +
  ``fake_dequantize_*``), as PaddleSlim with ``onnx_format=False``.
- ``train``: training programs in either format. Each quantizer is one fused
  quantize-dequantize op whose gradient op is the identity (straight-through
  estimator), so ``minimize()`` may run before or after ``quant_aware``; the scale
  variables have the same names as in the eval program, which therefore sees
  the trained scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from paddle.base import core

from ..common import naming
from ..common.program import insert_ops, write_tensor
from ..common.numerics import qmax
from .plan import TensorQuant

__all__ = ["VarSpec", "InsertedOp", "Emission", "ROUND_TYPE", "qdq_attrs", "insert_qdq_pair", "emit_quantizer",
           "emit_observer", "emit_global_step"]

ROUND_TYPE = {"qdq": 0, "fake": 1}
"""``round_type`` attribute per format: 0 ties to even (quantize_linear), 1 ties away from zero (fake_*)."""


@dataclass(frozen=True)
class VarSpec:
    """A variable an emission needs. ``init`` is the initial value of a persistable one."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    persistable: bool
    init: np.ndarray | None = None


@dataclass(frozen=True)
class InsertedOp:
    """Arguments of ``Block._insert_op`` for one op."""

    type: str
    inputs: dict
    outputs: dict
    attrs: dict


@dataclass
class Emission:
    """Ops and variables that implement one quantizer or observer."""

    ops: list[InsertedOp] = field(default_factory=list)
    variables: list[VarSpec] = field(default_factory=list)
    output: str | None = None


@dataclass(frozen=True)
class TensorInfo:
    """What the emitters need to know about the source tensor."""

    shape: tuple[int, ...]
    dtype: str
    initial_scale: np.ndarray


def _scale_var(tensor: TensorQuant, info: TensorInfo) -> VarSpec:
    return VarSpec(naming.scale(tensor.var), tuple(info.initial_scale.shape), "float32", True, info.initial_scale)


def _temp(name: str, info: TensorInfo) -> VarSpec:
    return VarSpec(name, info.shape, info.dtype, False)


def _zero_point(name: str, scale: VarSpec) -> VarSpec:
    return VarSpec(naming.zero_point(name), scale.shape, "int32", True, np.zeros(scale.shape, np.int32))


def _moving_state(name: str) -> list[VarSpec]:
    zero = np.zeros([1], np.float32)
    return [VarSpec(naming.state(name), (1,), "float32", True, zero), VarSpec(naming.accum(name), (1,), "float32", True, zero)]


def qdq_attrs(bits: int, axis: int, *, only_observer: bool = False) -> dict:
    """Attributes of an eval ``quantize_linear``/``dequantize_linear`` pair.

    The kernels read their integer range from ``qmin``/``qmax`` and ignore
    ``bit_length`` (which only the runtimes read), so all three are set: Paddle's
    own pass sets only ``bit_length`` and silently quantizes 4-bit tensors on
    the 8-bit grid.
    """
    return {"quant_axis": axis, "bit_length": bits, "qmin": -qmax(bits) - 1, "qmax": qmax(bits),
            "round_type": ROUND_TYPE["qdq"], "is_test": True, "only_observer": only_observer}


def insert_qdq_pair(block, scope, place, index: int, source: str, name: str, scale: str, attrs: dict) -> str:
    """Insert ``quantize_linear(source) -> dequantize_linear`` reading the scale variable ``scale`` before
    ``block.ops[index]`` into a frozen program. The int8 tensor and its dequantized copy are named from
    ``name`` (:func:`naming.quantized`, :func:`naming.dequantized`; shaped like ``source``) and created with
    their zero-filled int32 zero points where missing. Returns the dequantized name; readers are not
    rewired."""
    quantized, dequantized = naming.quantized(name), naming.dequantized(name)
    var = block.var(source)
    for temporary in (quantized, dequantized):
        if not block.has_var(temporary):
            block.create_var(name=temporary, shape=var.shape, dtype=var.dtype)
    zero_points = (naming.zero_point(quantized), naming.zero_point(dequantized))
    for zero_point in zero_points:
        if not block.has_var(zero_point):
            block.create_var(name=zero_point, shape=[1], dtype=core.VarDesc.VarType.INT32, persistable=True)
        write_tensor(scope, place, zero_point, np.zeros([1], np.int32))
    insert_ops(block, index, [
        ("quantize_linear", {"X": [source], "Scale": [scale], "ZeroPoint": [zero_points[0]]}, {"Y": [quantized]},
         dict(attrs)),
        ("dequantize_linear", {"X": [quantized], "Scale": [scale], "ZeroPoint": [zero_points[1]]},
         {"Y": [dequantized]}, dict(attrs)),
    ])
    return dequantized


def _qdq(tensor: TensorQuant, info: TensorInfo, config) -> Emission:
    scale = _scale_var(tensor, info)
    q_name, dq_name = naming.quantized(tensor.var), naming.dequantized(tensor.var)
    zp_q, zp_dq = _zero_point(q_name, scale), _zero_point(dq_name, scale)
    attrs = qdq_attrs(tensor.bits, tensor.axis)
    quant = InsertedOp("quantize_linear", {"X": [tensor.var], "Scale": [scale.name], "ZeroPoint": [zp_q.name]},
                       {"Y": [q_name]}, dict(attrs))
    dequant = InsertedOp("dequantize_linear", {"X": [q_name], "Scale": [scale.name], "ZeroPoint": [zp_dq.name]},
                         {"Y": [dq_name]}, dict(attrs))
    return Emission([quant, dequant], [scale, zp_q, zp_dq, _temp(q_name, info), _temp(dq_name, info)], dq_name)


def _fake_dequant(tensor: TensorQuant, scale: VarSpec, q_name: str, dq_name: str) -> InsertedOp:
    if tensor.axis >= 0:
        return InsertedOp("fake_channel_wise_dequantize_max_abs", {"X": [q_name], "Scales": [scale.name]},
                          {"Out": [dq_name]}, {"quant_axis": tensor.axis, "quant_bits": [tensor.bits]})
    return InsertedOp("fake_dequantize_max_abs", {"X": [q_name], "Scale": [scale.name]}, {"Out": [dq_name]},
                      {"max_range": float(qmax(tensor.bits))})


def _fake_quant_op(tensor: TensorQuant, scale: VarSpec, q_name: str, config) -> InsertedOp:
    attrs = {"bit_length": tensor.bits, "round_type": ROUND_TYPE["fake"], "is_test": True}
    outputs = {"Out": [q_name], "OutScale": [scale.name]}
    if tensor.axis >= 0:
        return InsertedOp("fake_channel_wise_quantize_abs_max", {"X": [tensor.var]}, outputs, {**attrs, "quant_axis": tensor.axis})
    if tensor.method == "abs_max":
        return InsertedOp("fake_quantize_abs_max", {"X": [tensor.var]}, outputs, attrs)
    if tensor.method == "range_abs_max":
        return InsertedOp("fake_quantize_range_abs_max", {"X": [tensor.var], "InScale": [scale.name]}, outputs,
                          {**attrs, "window_size": config.window_size})
    return InsertedOp("fake_quantize_moving_average_abs_max", {"X": [tensor.var], "InScale": [scale.name]}, outputs,
                      {**attrs, "moving_rate": config.moving_rate})


def _fake(tensor: TensorQuant, info: TensorInfo, config) -> Emission:
    scale = _scale_var(tensor, info)
    q_name, dq_name = naming.quantized(tensor.var), naming.dequantized(tensor.var)
    ops = [_fake_quant_op(tensor, scale, q_name, config), _fake_dequant(tensor, scale, q_name, dq_name)]
    return Emission(ops, [scale, _temp(q_name, info), _temp(dq_name, info)], dq_name)


def _train_fused(tensor: TensorQuant, info: TensorInfo, config, round_type: int, is_test: bool = False) -> Emission:
    """One fused quantize-dequantize op with an identity gradient; ``is_test`` freezes a moving scale."""
    scale = _scale_var(tensor, info)
    dq_name = naming.dequantized(tensor.var)
    attrs = {"bit_length": tensor.bits, "round_type": round_type, "is_test": is_test}
    outputs = {"Out": [dq_name], "OutScale": [scale.name]}
    variables = [scale, _temp(dq_name, info)]
    if tensor.axis >= 0:
        op = InsertedOp("fake_channel_wise_quantize_dequantize_abs_max", {"X": [tensor.var]}, outputs,
                        {**attrs, "quant_axis": tensor.axis})
    elif tensor.method == "abs_max":
        op = InsertedOp("fake_quantize_dequantize_abs_max", {"X": [tensor.var]}, outputs, attrs)
    else:
        inputs = {"X": [tensor.var], "InScale": [scale.name]}
        if not is_test:  # the moving average needs its state only while it updates
            state, accum = _moving_state(tensor.var)
            inputs.update(InState=[state.name], InAccum=[accum.name])
            outputs = {**outputs, "OutState": [state.name], "OutAccum": [accum.name]}
            variables += [state, accum]
        op = InsertedOp("fake_quantize_dequantize_moving_average_abs_max", inputs, outputs,
                        {**attrs, "moving_rate": config.moving_rate})
    return Emission([op], variables, dq_name)


def _train_range(tensor: TensorQuant, info: TensorInfo, config, round_type: int) -> Emission:
    """range_abs_max in training: the window statistics op, then a fused fixed-scale quant-dequant."""
    scale = _scale_var(tensor, info)
    window = VarSpec(naming.range_window(tensor.var), (config.window_size,), "float32", True,
                     np.zeros([config.window_size], np.float32))
    scratch = _temp(naming.range_scratch(tensor.var), info)
    stats = InsertedOp("fake_quantize_range_abs_max",
                       {"X": [tensor.var], "InScale": [scale.name], "Iter": [naming.global_step()]},
                       {"Out": [scratch.name], "OutScale": [scale.name], "OutScales": [window.name]},
                       {"bit_length": tensor.bits, "window_size": config.window_size, "is_test": False,
                        "round_type": round_type})
    fixed = _train_fused(tensor, info, config, round_type, is_test=True)
    return Emission([stats] + fixed.ops, [window, scratch] + fixed.variables, fixed.output)


def emit_quantizer(tensor: TensorQuant, info: TensorInfo, config, mode: str) -> Emission:
    """Ops simulating ``tensor``'s quantizer in ``mode`` ('train' or 'test') and the config's format.

    With ``scale_trainable=False`` a training program keeps the stored scales of
    ``range_abs_max``/``moving_average_abs_max`` quantizers fixed (as PaddleSlim).
    """
    fmt = "qdq" if config.onnx_format else "fake"
    if mode == "test":
        return _qdq(tensor, info, config) if fmt == "qdq" else _fake(tensor, info, config)
    if not config.scale_trainable and tensor.method in ("range_abs_max", "moving_average_abs_max"):
        return _train_fused(tensor, info, config, ROUND_TYPE[fmt], is_test=True)
    if tensor.method == "range_abs_max":
        return _train_range(tensor, info, config, ROUND_TYPE[fmt])
    return _train_fused(tensor, info, config, ROUND_TYPE[fmt])


def emit_observer(var: str, config, mode: str) -> Emission:
    """``moving_average_abs_max_scale`` recording the range of output ``var`` into ``{var}@scale``."""
    scale = VarSpec(naming.scale(var), (1,), "float32", True, np.ones([1], np.float32))
    frozen = mode == "test" or not config.scale_trainable
    attrs = {"moving_rate": config.moving_rate, "is_test": frozen}
    if frozen:
        return Emission([InsertedOp("moving_average_abs_max_scale", {"X": [var]}, {"OutScale": [scale.name]}, attrs)], [scale])
    state, accum = _moving_state(var)
    op = InsertedOp("moving_average_abs_max_scale", {"X": [var], "InState": [state.name], "InAccum": [accum.name]},
                    {"OutScale": [scale.name], "OutState": [state.name], "OutAccum": [accum.name]}, attrs)
    return Emission([op], [scale, state, accum])


def emit_global_step() -> Emission:
    """The int64 step counter ``range_abs_max`` windows are indexed by, incremented once per run."""
    step = VarSpec(naming.global_step(), (1,), "int64", True, np.zeros([1], np.int64))
    op = InsertedOp("increment", {"X": [step.name]}, {"Out": [step.name]}, {"step": 1.0})
    return Emission([op], [step])
