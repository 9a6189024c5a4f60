"""Read the quantization scales of a QDQ-format Paddle program (graph reading only, no numerics).

A model written by ``quant_post`` or ``convert`` (``onnx_format=True``, see
:mod:`paddle_quant.passes.freeze`) carries three kinds of quantized tensor:

* weight ``W``: an int8 tensor ``{W}@int8`` read by a ``dequantize_linear`` op;
  ``real = q * scale / qmax`` with ``qmax = 2**(bits-1) - 1``, per channel along
  ``quant_axis`` or per tensor (``quant_axis == -1``);
* activation ``X``: a ``quantize_linear`` -> ``dequantize_linear`` pair with a
  per-tensor scale var, read by the quantized op;
* observer ``X``: the same pair with ``only_observer=True``, an identity in the
  Paddle Executor whose scale tells a runtime how to quantize the tensor.

:func:`read_qdq_scales` returns one :class:`TensorScale` per quantized tensor, named
as in the fp32 model, for the exporters (ONNX, TensorRT, Paddle-Lite, scale tables)
to share. :func:`load_quantized_model` loads a saved model into a fresh scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import paddle

from ..common.program import check_program, is_observer, is_persistable, legacy_ir, read_tensor, writer_by_var
from ..common.errors import ConfigError, ProgramStateError
from ..common.model_files import model_files
from ..common.model_files import load_inference_program as _load  # the loader quant_post uses
from ..passes.unsigned_grid import UNSIGNED_QMAX, is_unsigned_grid

__all__ = ["TensorScale", "QuantizedModel", "read_qdq_scales", "load_quantized_model"]

_INT8_SUFFIX = "@int8"


@dataclass(frozen=True, eq=False)
class TensorScale:
    """How one tensor of the fp32 model is quantized in a QDQ program.

    Attributes:
        name: tensor name as in the fp32 model (``conv2d_0.w_0``, ``relu_0.tmp_0``).
        kind: ``'weight'`` (int8 values stored in the model), ``'activation'`` (quantized
            at run time, read by a quantized op) or ``'observer'`` (scale only; identity
            in the Paddle Executor).
        scale: float32 array, Paddle convention: the abs-max range, ``real = q * scale / qmax``;
            shape ``[1]`` per tensor, ``[C]`` per channel.
        zero_point: int32 array shaped like ``scale`` (zeros: symmetric quantization).
        bits: ``bit_length`` of the dequantize op.
        axis: channel axis, or None per tensor.
        int_values: the stored integer weight (int8) for frozen weights; None for
            activations, observers and weights not frozen yet (still a ``quantize_linear``).
        scale_var: the Paddle variable holding ``scale``.
        dequantized_var: the variable the consumers read (``{X}.quantized.dequantized``).
        source_var: the variable the dequantize op reads (``{W}@int8`` for a frozen weight,
            ``{X}.quantized`` for an activation).
        unsigned: the pair rounds on oneDNN's u8 grid (``qmin=0, qmax=255``,
            :mod:`paddle_quant.passes.unsigned_grid`): ``real = q * scale / 255``, ``q`` in 0..255.
    """

    name: str
    kind: Literal["weight", "activation", "observer"]
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    axis: int | None
    int_values: np.ndarray | None = field(default=None, repr=False)
    scale_var: str = ""
    dequantized_var: str = ""
    source_var: str = ""
    unsigned: bool = False

    @property
    def qmax(self) -> int:
        """Largest integer of the grid: ``2**(bits-1) - 1``, or 255 on the u8 grid."""
        return UNSIGNED_QMAX if self.unsigned else 2 ** (self.bits - 1) - 1


@dataclass(frozen=True)
class QuantizedModel:
    """A saved inference model loaded into its own scope."""

    program: paddle.static.Program
    scope: object
    feed_names: tuple[str, ...]
    fetch_names: tuple[str, ...]
    model_file: Path
    params_file: Path | None


def _axis(op) -> int | None:
    axis = int(op.attr("quant_axis")) if op.has_attr("quant_axis") else -1
    return None if axis < 0 else axis


def _zero_point(op, scope, scale: np.ndarray) -> np.ndarray:
    names = op.input("ZeroPoint") if "ZeroPoint" in op.input_names else []
    if not names or scope.find_var(names[0]) is None:
        return np.zeros(scale.shape, np.int32)
    return read_tensor(scope, names[0]).astype(np.int32).reshape(scale.shape)


def _weight_name(source: str) -> str:
    return source[: -len(_INT8_SUFFIX)] if source.endswith(_INT8_SUFFIX) else source


def _from_dequant(block, scope, op, kind, name, int_values) -> TensorScale:
    scale = read_tensor(scope, op.input("Scale")[0]).astype(np.float32).reshape(-1)
    return TensorScale(
        name=name, kind=kind, scale=scale, zero_point=_zero_point(op, scope, scale),
        bits=int(op.attr("bit_length")), axis=_axis(op), int_values=int_values,
        scale_var=op.input("Scale")[0], dequantized_var=op.output("Y")[0], source_var=op.input("X")[0],
        unsigned=is_unsigned_grid(op))


def _read_one(block, scope, op, producers) -> TensorScale:
    """The TensorScale of one ``dequantize_linear`` op."""
    source = op.input("X")[0]
    if is_persistable(block, source):
        return _from_dequant(block, scope, op, "weight", _weight_name(source), read_tensor(scope, source))
    quant = producers.get(source)
    if quant is None or quant.type != "quantize_linear":
        raise ProgramStateError(
            f"dequantize_linear reads '{source}', which is neither a stored weight nor the output of a "
            "quantize_linear op; the program is not in paddle_quant's QDQ format")
    name = quant.input("X")[0]
    kind = "weight" if is_persistable(block, name) else ("observer" if is_observer(quant) else "activation")
    return _from_dequant(block, scope, op, kind, name, None)


def _check_same(previous: TensorScale, found: TensorScale) -> None:
    if previous.kind != found.kind or not np.array_equal(previous.scale, found.scale):
        raise ProgramStateError(
            f"tensor '{found.name}' is quantized twice with different scales or kinds "
            f"({previous.kind} {previous.scale.tolist()} and {found.kind} {found.scale.tolist()}); "
            "one tensor must have one quantizer")


def read_qdq_scales(program, scope) -> dict[str, TensorScale]:
    """Every quantized tensor of a QDQ program, keyed by its fp32 name, in program order.

    Args:
        program: legacy-IR inference Program in the QDQ format.
        scope: the scope holding its parameters (scales, zero points, int8 weights).

    Returns:
        ``{name: TensorScale}``; empty when the program has no ``dequantize_linear`` op.

    Raises:
        UnsupportedProgramError: ``program`` is not a legacy Program.
        ScopeError: a scale or weight is missing from the scope.
        ProgramStateError: a dequantize op reads neither a weight nor a quantize op, or one
            tensor has two different quantizers.
    """
    with legacy_ir():
        block = check_program(program).global_block()
        producers = writer_by_var(block)
        found: dict[str, TensorScale] = {}
        for op in block.ops:
            if op.type != "dequantize_linear":
                continue
            scale = _read_one(block, scope, op, producers)
            if scale.name in found:
                _check_same(found[scale.name], scale)
                continue
            found[scale.name] = scale
        return found


def _model_files(model_dir, model_filename, params_filename) -> tuple[Path, Path | None]:
    if not Path(model_dir).exists():
        raise ConfigError(f"model_dir {str(model_dir)!r} does not exist")
    return model_files(model_dir, model_filename, params_filename)


def load_quantized_model(model_dir, *, model_filename: str | None = None,
                         params_filename: str | None = None) -> QuantizedModel:
    """Load a saved inference model (quantized or not) into a new scope.

    Args:
        model_dir: folder holding one ``*.pdmodel`` (and its ``.pdiparams``).
        model_filename: model file name inside ``model_dir`` when it holds several.
        params_filename: parameters file name inside ``model_dir``.

    Raises:
        ConfigError: the folder or a file is missing, or the model cannot be loaded.
    """
    model, params = _model_files(model_dir, model_filename, params_filename)
    scope = paddle.static.Scope()
    with legacy_ir():
        exe = paddle.static.Executor(paddle.CPUPlace())
        program, feeds, fetches = _load(exe, scope, model, params)
    return QuantizedModel(program, scope, tuple(feeds), tuple(fetches), model, params)

