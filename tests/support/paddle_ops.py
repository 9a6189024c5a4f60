"""Run one Paddle operator in a fresh legacy static Program (test helper).

Builds a one-op ``paddle.static.Program`` under the legacy IR, writes the input
arrays straight into a fresh ``paddle.static.Scope``, runs it on the CPU and
returns the outputs as numpy arrays. Used as the oracle for the numpy kernel
references in ``paddle_quant.common.numerics``.

Example:
    >>> out = run_op(
    ...     "quantize_linear",
    ...     inputs={"X": x, "Scale": s, "ZeroPoint": np.zeros(1, np.int32)},
    ...     outputs={"Y": "float32"},
    ...     attrs={"bit_length": 8, "quant_axis": -1, "is_test": True},
    ... )
    >>> out["Y"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import paddle

from paddle_quant.common.program import legacy_ir

__all__ = ["run_op"]

_ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]  # not X | Y: Python 3.9 evaluates it


def _as_list(value: Any) -> tuple[list[Any], bool]:
    """Return ``(items, was_list)`` for a slot value that may be one or several."""
    if isinstance(value, (list, tuple)):
        return list(value), True
    return [value], False


def _declare_inputs(block, inputs: Mapping[str, _ArrayOrList]) -> tuple[dict, dict]:
    """Create one persistable var per input array; return slot->names, name->array."""
    slot_names: dict[str, list[str]] = {}
    values: dict[str, np.ndarray] = {}
    for slot, value in inputs.items():
        arrays, _ = _as_list(value)
        names = []
        for i, arr in enumerate(arrays):
            arr = np.asarray(arr)
            name = f"in_{slot}_{i}"
            block.create_var(name=name, shape=arr.shape, dtype=arr.dtype, persistable=True)
            names.append(name)
            values[name] = arr
        slot_names[slot] = names
    return slot_names, values


def _declare_outputs(
    block,
    outputs: Mapping[str, Any],
    in_names: Mapping[str, list[str]],
    inplace: Mapping[str, str],
) -> tuple[dict, dict]:
    """Create output vars (or reuse input vars for in-place slots)."""
    slot_names: dict[str, list[str]] = {}
    is_list: dict[str, bool] = {}
    for slot, spec in outputs.items():
        if slot in inplace:
            slot_names[slot] = list(in_names[inplace[slot]])
            is_list[slot] = isinstance(spec, (list, tuple))
            continue
        dtypes, is_list[slot] = _as_list(spec)
        names = []
        for i, dtype in enumerate(dtypes):
            name = f"out_{slot}_{i}"
            block.create_var(name=name, dtype=np.dtype(dtype), persistable=True)
            names.append(name)
        slot_names[slot] = names
    return slot_names, is_list


def run_op(
    op_type: str,
    inputs: Mapping[str, _ArrayOrList],
    outputs: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    *,
    inplace: Mapping[str, str] | None = None,
    preset: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Build and run one operator; return its outputs as numpy arrays.

    Args:
        op_type: Paddle operator type, e.g. ``"fake_quantize_abs_max"``.
        inputs: input slot -> array, or list of arrays for multi-var slots
            (e.g. ``Scales`` of ``fake_channel_wise_dequantize_max_abs``).
        outputs: output slot -> dtype (a list of dtypes for multi-var slots).
        attrs: operator attributes; unspecified ones take the op's defaults.
        inplace: output slot -> input slot whose variable the output reuses, as
            Paddle's passes do for state variables (``OutState`` -> ``InState``).
        preset: output slot -> initial contents of that output variable, for
            kernels that read their output buffer (``OutScales`` of
            ``fake_quantize_range_abs_max``).

    Returns:
        Output slot -> array (list of arrays where the slot was given a list).
    """
    inplace = dict(inplace or {})
    preset = dict(preset or {})
    with legacy_ir():
        program = paddle.static.Program()
        block = program.global_block()
        in_names, values = _declare_inputs(block, inputs)
        out_names, is_list = _declare_outputs(block, outputs, in_names, inplace)
        for slot, arr in preset.items():
            values[out_names[slot][0]] = np.asarray(arr)
        block.append_op(
            type=op_type,
            inputs=in_names,
            outputs=out_names,
            attrs=dict(attrs or {}),
        )
        scope = paddle.static.Scope()
        place = paddle.CPUPlace()
        with paddle.static.scope_guard(scope):
            for name, arr in values.items():
                scope.var(name).get_tensor().set(arr, place)
            exe = paddle.static.Executor(place)
            exe.run(program)
            result = {
                slot: [np.array(scope.find_var(n).get_tensor()) for n in names]
                for slot, names in out_names.items()
            }
    return {slot: arrs if is_list[slot] else arrs[0] for slot, arrs in result.items()}
