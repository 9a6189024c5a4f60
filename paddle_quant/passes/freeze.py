"""Freeze: turn a quantized eval program into an inference program.

QDQ format (``onnx_format=True``)
    Each weight ``quantize_linear`` is folded: the weight is quantized once into
    an int8 (int16 above 8 bits) tensor ``{W}@int8`` that the remaining
    ``dequantize_linear`` reads. Activation quantize/dequantize pairs stay.
    Output observers become ``quantize_linear``/``dequantize_linear`` pairs with
    ``only_observer=True`` carrying ``{out}@scale`` (an identity at run time; the
    runtime reads the scale), except on tensors that already have a pair.

Old format (``onnx_format=False``)
    Weights become integer values stored as float32 (``{W}@frozen``), the weight
    quantizers are removed, the op reads the quantized activation directly and a
    dequantizer after the op rescales its output (``fake_channel_wise_dequantize_max_abs``
    with [channel scales, activation scale], or ``fake_dequantize_max_abs`` with
    ``max_range = qmax_w * qmax_a / w_scale``). Observer scales become the
    ``out_threshold`` / ``{Slot}{i}_threshold`` attributes of the producing op.

The input program is cloned and the float parameters in the scope stay as
they were, so the eval program keeps running after ``convert``.
"""

from __future__ import annotations

import numpy as np
from paddle.base import core

from ..common import naming
from ..common.backends import backend_profile
from ..common.program import insert_ops, is_persistable, read_tensor, write_tensor
from ..common.errors import ProgramStateError
from ..common.numerics import abs_max_scale, qmax, weight_to_int
from .quantizers import insert_qdq_pair, qdq_attrs
from .rewrite import QUANTIZED_OP_ATTR

__all__ = ["freeze_program", "freeze_in_place"]

_TRAIN_ONLY_OPS = {
    "fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
}
_FAKE_WEIGHT_QUANT_OPS = {
    "fake_channel_wise_quantize_abs_max", "fake_quantize_abs_max",
    "fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max",
}
_FAKE_DEQUANT_OPS = {"fake_dequantize_max_abs", "fake_channel_wise_dequantize_max_abs"}
_INT_DTYPES = {8: (np.int8, core.VarDesc.VarType.INT8), 16: (np.int16, core.VarDesc.VarType.INT16)}


def _check_format(ops, config) -> None:
    qdq = any(op.type in ("quantize_linear", "dequantize_linear") for op in ops)
    fake = any(op.type.startswith("fake_") for op in ops)
    if (config.onnx_format and fake and not qdq) or (not config.onnx_format and qdq):
        found = "QDQ (quantize_linear)" if qdq else "old fake_* ops"
        raise ProgramStateError(
            f"config key 'onnx_format' is {config.onnx_format} but the program was quantized in the {found} "
            "format; pass convert the config given to quant_aware"
        )


def _check_quantized_eval_program(program, config) -> None:
    ops = program.global_block().ops
    if not any(op.has_attr(QUANTIZED_OP_ATTR) for op in ops):
        raise ProgramStateError(
            "convert needs the eval program returned by quant_aware(..., for_test=True); this program "
            "has no op quantized by paddle_quant"
        )
    training = sorted({op.type for op in ops if op.type in _TRAIN_ONLY_OPS or
                       (op.has_attr("is_test") and not op.attr("is_test") and "quant" in op.type)})
    if training:
        raise ProgramStateError(
            f"convert got a training program (it contains {training}); pass the program returned by "
            "quant_aware(..., for_test=True)"
        )
    _check_format(ops, config)


def _consumers(block, name, start):
    return [op for op in block.ops[start:] if name in op.input_arg_names]


def _producer_index(block, name) -> int:
    for index, op in enumerate(block.ops):
        if name in op.output_arg_names:
            return index
    raise KeyError(name)


def _given_integers(weight, values, shape, bits) -> np.ndarray:
    """Integers a caller chose for ``weight`` (AdaRound), checked against its shape and the grid."""
    values = np.asarray(values)
    if values.shape != tuple(shape) or values.dtype.kind not in "iu":
        raise ProgramStateError(f"integers given for weight '{weight}' have shape {values.shape} and dtype "
                                f"{values.dtype}; the weight is {list(shape)}, integers needed")
    if values.size and (values.min() < -qmax(bits) - 1 or values.max() > qmax(bits)):
        raise ProgramStateError(f"integers given for weight '{weight}' leave the {bits}-bit grid "
                                f"[{-qmax(bits) - 1}, {qmax(bits)}]")
    return values


def _int_weight_var(block, scope, place, weight, scale, bits, axis, round_half, integers=None):
    dtype, var_type = _INT_DTYPES[8 if bits <= 8 else 16]
    float_values = read_tensor(scope, weight)
    values = (weight_to_int(float_values, scale, bits, axis, round_half=round_half) if integers is None
              else _given_integers(weight, integers, float_values.shape, bits))
    name = naming.int_weight(weight)
    write_tensor(scope, place, name, values.astype(dtype))
    if not block.has_var(name):
        block.create_var(name=name, shape=list(values.shape), dtype=var_type, persistable=True)
    return name


# ---------------------------------------------------------------- QDQ format
def _fold_qdq_weights(block, scope, place, integers) -> None:
    for op in [op for op in block.ops if op.type == "quantize_linear" and is_persistable(block, op.input("X")[0])]:
        weight, quantized = op.input("X")[0], op.output("Y")[0]
        scale = read_tensor(scope, op.input("Scale")[0]).reshape(-1)
        axis, bits = op.attr("quant_axis"), op.attr("bit_length")
        if bits > 8:
            raise ProgramStateError(
                f"weight '{weight}' is quantized to {bits} bits, but the QDQ format stores weights as int8 and "
                "Paddle 3.3.1 has no int16 dequantize_linear kernel; use weight_bits <= 8 or onnx_format=False"
            )
        int_name = _int_weight_var(block, scope, place, weight, scale, bits, axis, "even", integers.get(weight))
        for consumer in _consumers(block, quantized, 0):
            consumer._rename_input(quantized, int_name)
            if bits < 8:
                _as_int8_convention(block, scope, place, consumer, weight, scale, bits)
        block._remove_op(list(block.ops).index(op), sync=False)


def _as_int8_convention(block, scope, place, dequant, weight, scale, bits) -> None:
    """Express a sub-8-bit weight in int8 terms: same integers, scale ``s·127/qmax(bits)``.

    ``q·s/qmax(bits) == q·s'/127``, so the values are unchanged, and runtimes
    that assume int8 weights with a 127 range (oneDNN) dequantize them right.
    """
    name = naming.int8_scale(weight)
    write_tensor(scope, place, name, (scale * np.float32(qmax(8) / qmax(bits))).astype(np.float32))
    if not block.has_var(name):
        block.create_var(name=name, shape=list(scale.shape), dtype=core.VarDesc.VarType.FP32, persistable=True)
    dequant._rename_input(dequant.input("Scale")[0], name)
    for attr, value in qdq_attrs(8, dequant.attr("quant_axis")).items():
        if attr in ("bit_length", "qmin", "qmax"):
            dequant._set_attr(attr, value)


def _replace_observers_qdq(block, scope, place, bits, float_readers=()) -> None:
    """Observers -> only_observer QDQ pairs whose output the tensor's readers read, except readers of the
    types ``float_readers`` that stay in float (the deploy backend's ``float_readers_bypass_observers``)."""
    quantized = {op.input("X")[0] for op in block.ops if op.type == "quantize_linear"}
    for op in [op for op in block.ops if op.type == "moving_average_abs_max_scale"]:
        var = op.input("X")[0]
        index = list(block.ops).index(op)
        block._remove_op(index, sync=False)
        if var in quantized:
            continue
        quantized.add(var)
        for consumer in _consumers(block, var, index):
            if consumer.type not in float_readers or consumer.has_attr(QUANTIZED_OP_ATTR):
                consumer._rename_input(var, naming.dequantized(var))
        _insert_observer_pair(block, scope, place, index, var, bits)


def _insert_observer_pair(block, scope, place, index, var, bits):
    insert_qdq_pair(block, scope, place, index, var, var, naming.scale(var),
                    qdq_attrs(bits, -1, only_observer=True))


# ---------------------------------------------------------------- old format
def _fake_weight_scale(op, scope, weight_values):
    """The scale the eval op uses: stored channel scales (is_test), abs max, or the trained InScale."""
    if op.type == "fake_channel_wise_quantize_abs_max":
        return read_tensor(scope, op.output("OutScale")[0]).reshape(-1), op.attr("quant_axis")
    if op.type == "fake_quantize_abs_max":
        return abs_max_scale(weight_values), -1
    return read_tensor(scope, op.input("InScale")[0]).reshape(-1), -1


def _output_channel_dims(block, op, out) -> int:
    """``x_num_col_dims`` of the post-op channel dequantizer: where the output channels start."""
    if op.has_attr("x_num_col_dims"):
        return int(op.attr("x_num_col_dims"))
    if op.type in ("mul", "matmul", "matmul_v2"):
        return len(block.var(out).shape) - 1
    return 1


def _dequant_after(axis, out, weight_scale_name, act_scale, w_scale, w_bits, a_bits, col_dims):
    dq = naming.dequantized(out)
    if axis >= 0:
        return ("fake_channel_wise_dequantize_max_abs", {"X": [out], "Scales": [weight_scale_name, act_scale]},
                {"Out": [dq]}, {"quant_axis": axis, "quant_bits": [w_bits, a_bits], "x_num_col_dims": col_dims})
    max_range = float(qmax(w_bits) * qmax(a_bits) / float(w_scale[0]))
    return ("fake_dequantize_max_abs", {"X": [out], "Scale": [act_scale]}, {"Out": [dq]}, {"max_range": max_range})


def _freeze_fake_weight(block, scope, place, quant_op) -> None:
    weight, quantized = quant_op.input("X")[0], quant_op.output("Out")[0]
    dequant_op = _consumers(block, quantized, 0)[0]
    dequantized = dequant_op.output("Out")[0]
    values = read_tensor(scope, weight)
    w_scale, axis = _fake_weight_scale(quant_op, scope, values)
    bits = quant_op.attr("bit_length")
    frozen = naming.frozen_weight(weight)
    write_tensor(scope, place, frozen, weight_to_int(values, w_scale, bits, axis, round_half="away").astype(np.float32))
    if not block.has_var(frozen):
        block.create_var(name=frozen, shape=list(values.shape), dtype=core.VarDesc.VarType.FP32, persistable=True)
    channel_scale = naming.channel_scale(weight)
    write_tensor(scope, place, channel_scale, w_scale.astype(np.float32))
    if not block.has_var(channel_scale):
        block.create_var(name=channel_scale, shape=list(w_scale.shape), dtype=core.VarDesc.VarType.FP32, persistable=True)
    for op in _consumers(block, dequantized, 0):
        op._rename_input(dequantized, frozen)
        _fold_activation_and_dequant_output(block, op, axis, channel_scale, w_scale, bits)
    for dead in (dequant_op, quant_op):
        block._remove_op(list(block.ops).index(dead), sync=False)


def _quantized_activation_input(block, op):
    """(slot arg dequantized, quantized arg, scale name, bits) of the op's quantized activation input."""
    for name in op.input_arg_names:
        producers = [p for p in block.ops if name in p.output_arg_names and p.type == "fake_dequantize_max_abs"]
        if producers:
            dequant = producers[0]
            quant_name = dequant.input("X")[0]
            quant_op = [p for p in block.ops if quant_name in p.output_arg_names][0]
            return name, quant_name, quant_op.output("OutScale")[0], quant_op.attr("bit_length")
    return None


def _fold_activation_and_dequant_output(block, op, axis, channel_scale, w_scale, w_bits) -> None:
    found = _quantized_activation_input(block, op)
    if found is None:
        raise ProgramStateError(f"{op.type} has a quantized weight but no quantized activation input")
    dequantized_act, quantized_act, act_scale, a_bits = found
    op._rename_input(dequantized_act, quantized_act)
    out = op.output_arg_names[0]
    index = list(block.ops).index(op)
    op_type, inputs, outputs, attrs = _dequant_after(axis, out, channel_scale, act_scale, w_scale, w_bits, a_bits,
                                                     _output_channel_dims(block, op, out))
    source = block.var(out)
    block.create_var(name=outputs["Out"][0], shape=source.shape, dtype=source.dtype)
    for consumer in _consumers(block, out, index + 1):
        consumer._rename_input(out, outputs["Out"][0])
    insert_ops(block, index + 1, [(op_type, inputs, outputs, attrs)])


def _remove_unused_dequants(block) -> None:
    for op in [op for op in block.ops if op.type in _FAKE_DEQUANT_OPS]:
        if not _consumers(block, op.output("Out")[0], 0):
            block._remove_op(list(block.ops).index(op), sync=False)


def _observers_to_thresholds(block, scope) -> None:
    for op in [op for op in block.ops if op.type == "moving_average_abs_max_scale"]:
        var = op.input("X")[0]
        threshold = float(read_tensor(scope, op.output("OutScale")[0]).reshape(-1)[0])
        block._remove_op(list(block.ops).index(op), sync=False)
        producer = block.ops[_producer_index(block, var)]
        producer._set_attr("out_threshold", threshold)
        producer._set_attr("with_quant_attr", True)
        for slot in producer.output_names:
            if var in producer.output(slot):
                producer._set_attr(f"{slot}{producer.output(slot).index(var)}_threshold", threshold)


def _fake_weight_quant_ops(block):
    return [op for op in block.ops if op.type in _FAKE_WEIGHT_QUANT_OPS and is_persistable(block, op.input("X")[0])]


def _freeze_fake(block, scope, place) -> None:
    _observers_to_thresholds(block, scope)
    for quant_op in _fake_weight_quant_ops(block):
        _freeze_fake_weight(block, scope, place, quant_op)
    _remove_unused_dequants(block)


def _int8_fake_program(frozen_program, scope, place):
    """Old format: a copy whose frozen weights are stored int8 and cast to float at run time."""
    program = frozen_program.clone()
    block = program.global_block()
    for name in [v.name for v in block.vars.values() if v.name.endswith("@frozen") and v.persistable]:
        weight = name[: -len("@frozen")]
        values = read_tensor(scope, name)
        int_name = naming.int_weight(weight)
        write_tensor(scope, place, int_name, values.astype(np.int8))
        block.create_var(name=int_name, shape=list(values.shape), dtype=core.VarDesc.VarType.INT8, persistable=True)
        block.var(name).persistable = False
        block.var(name).desc.set_persistable(False)
        insert_ops(block, 0, [("cast", {"X": [int_name]}, {"Out": [name]},
                               {"in_dtype": core.VarDesc.VarType.INT8, "out_dtype": core.VarDesc.VarType.FP32})])
    program._sync_with_cpp()
    return program


def freeze_in_place(program, config, scope, place, integers=None):
    """Freeze the quantized eval ``program`` itself and return it (see :func:`freeze_program`).

    For callers that own a temporary copy (``quant_post``): it saves the clone
    :func:`freeze_program` makes to keep the caller's program runnable.

    ``integers`` (QDQ format only) maps weight names to the integers to store instead of
    rounding the float weight to nearest (AdaRound's); they must have the weight's shape and
    lie on its grid (ProgramStateError otherwise).
    """
    integers = dict(integers or {})
    if integers and not config.onnx_format:
        raise ProgramStateError("freeze: chosen weight integers need the QDQ format (onnx_format=True)")
    _check_quantized_eval_program(program, config)
    block = program.global_block()
    if config.onnx_format:
        _fold_qdq_weights(block, scope, place, integers)
        profile = backend_profile(config.deploy_backend)
        _replace_observers_qdq(block, scope, place, config.activation_bits,
                               profile.float_readers_bypass_observers if profile else ())
    else:
        _freeze_fake(block, scope, place)
    program._sync_with_cpp()
    return program


def freeze_program(program, config, scope, place):
    """Return ``(inference_program, int8_program)`` frozen from the eval ``program``.

    In the QDQ format both programs are runnable and store int8 weights (the
    second is a copy). In the old format the second stores int8 weights and casts
    them to float32 at run time, so it runs and saves at a quarter of the size.
    """
    _check_quantized_eval_program(program, config)
    frozen = freeze_in_place(program.clone(for_test=True), config, scope, place)
    if config.onnx_format:
        return frozen, frozen.clone()
    return frozen, _int8_fake_program(frozen, scope, place)
