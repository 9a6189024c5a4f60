"""Export a QDQ-quantized Paddle inference model to an int8 QDQ ONNX model for onnxruntime.

Why our own conversion rather than paddle2onnx: paddle2onnx 2.1.0 aborts on Paddle QDQ
models ("Only support e4m3 or e5m2"); exporting the fp32 graph with it and placing
QuantizeLinear/DequantizeLinear afterwards would need a map from Paddle variable names to
its ONNX tensor names, which it does not keep (activations become ``p2o.pd_op.conv2d.0.0``
after a PIR translation) and cannot give per consumer; and it pip-installs packages at run
time (polygraphy's auto-install) when asked to save. The quantized Paddle program already
holds the whole graph with int8 weights and every scale, so this module translates it op by
op, keeping Paddle's variable names as ONNX tensor names:

* ``dequantize_linear`` of a stored weight ``{W}@int8`` -> int8 initializer +
  ``DequantizeLinear(axis=quant_axis)`` (per channel) or per tensor;
* an activation ``quantize_linear``/``dequantize_linear`` pair -> ``QuantizeLinear`` /
  ``DequantizeLinear`` with the same scale;
* observer pairs (``only_observer=True``, an identity in the Paddle Executor) -> nothing
  (``observers='none'``, the default: the graph computes what the Paddle Executor computes), or
  a real QDQ pair on the outputs of ops with int8 weights (``'int8_ops'``: what lets onnxruntime
  run them as QLinearConv/QLinearMatMul) or everywhere (``'all'``);
* every other op by the table :data:`OP_CONVERTERS`.

Scale convention: Paddle's ``real = q * scale / qmax`` is ONNX's ``real = (q - zero_point) * s``
with ``s = scale / qmax`` (float32) and an int8 zero point of 0. Both round half to even and
saturate to [-128, 127], so one quantize step is computed identically up to float rounding.

onnx and onnxruntime are optional dependencies: ``pip install paddle_quant[onnx]``.
"""

from __future__ import annotations

import importlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from paddle.base.data_feeder import convert_dtype

from .._program import is_observer, legacy_ir, read_tensor
from ..errors import ConfigError, MissingDependencyError, ProgramStateError
from .qdq_scales import load_quantized_model, read_qdq_scales

__all__ = [
    "export_onnx",
    "export_float_onnx",
    "ONNXExportResult",
    "MissingDependencyError",
    "OP_CONVERTERS",
    "DEFAULT_OPSET",
    "OBSERVER_MODES",
    "WEIGHT_OP_TYPES",
    "require_onnx",
]

DEFAULT_OPSET = 17
"""ONNX opset written by default (17: the first with LayerNormalization)."""

OBSERVER_MODES = ("none", "int8_ops", "all")
"""Values of ``observers=``: where output-scale observers become QuantizeLinear/DequantizeLinear pairs."""

WEIGHT_OP_TYPES = ("conv2d", "depthwise_conv2d", "conv2d_transpose", "mul", "matmul", "matmul_v2")
"""Op types whose outputs ``observers='int8_ops'`` quantizes when one of their inputs is an int8 weight."""

_EXTRA_HINT = "pip install 'paddle_quant[onnx]' (or: pip install onnx onnxruntime)"
_IGNORED_OPS = ("feed", "fetch")


@dataclass(frozen=True)
class ONNXExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        opset: its default-domain opset.
        weights: names of the weights stored int8 (with a DequantizeLinear each).
        activations: names of the activations quantized at run time (QuantizeLinear + DequantizeLinear).
        observers: names of the observer tensors written as QDQ pairs.
        inputs: graph input names (the model's feeds); outputs: graph output names (its fetches).
    """

    path: Path
    opset: int
    weights: tuple[str, ...]
    activations: tuple[str, ...]
    observers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def require_onnx():
    """Import and return the ``onnx`` module, or raise MissingDependencyError naming the extra."""
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise MissingDependencyError(
            f"ONNX export needs the 'onnx' package, which is not installed: {_EXTRA_HINT}") from exc


# ---------------------------------------------------------------- graph builder
class _Graph:
    """Collects ONNX nodes and initializers while the program is walked.

    Every Paddle variable keeps its name as the ONNX tensor name; helper tensors get
    fresh names under ``paddle_quant.onnx/``.
    """

    def __init__(self, onnx, block, scope, scales):
        self.onnx, self.block, self.scope, self.scales = onnx, block, scope, scales
        self.kept_observers: set[str] = set()
        self.written_observers: list[str] = []
        self.by_source = {scale.source_var: scale for scale in scales.values()}
        self.by_dequantized = {scale.dequantized_var: scale for scale in scales.values()}
        self.nodes, self.initializers, self.emitted = [], [], set()
        self._counter = 0

    def fresh(self, hint: str) -> str:
        self._counter += 1
        return f"paddle_quant.onnx/{hint}_{self._counter}"

    def node(self, op_type, inputs, outputs=None, **attrs) -> list[str]:
        outputs = outputs or [self.fresh(op_type)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), list(outputs), **attrs))
        return outputs

    def const(self, value, hint="const", dtype=None) -> str:
        name = self.fresh(hint)
        self.add_initializer(name, np.asarray(value, dtype=dtype))
        return name

    def add_initializer(self, name, array) -> None:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        self.emitted.add(name)

    def param(self, name: str) -> str:
        """``name``, emitted as an initializer from the scope the first time a persistable var is read."""
        if name not in self.emitted and self.block.has_var(name) and self.block.var(name).persistable:
            self.add_initializer(name, read_tensor(self.scope, name))
        return name

    def rank(self, name: str) -> int:
        return len(self.block.var(name).shape)

    def dtype(self, name: str) -> str:
        return convert_dtype(self.block.var(name).dtype)


def _in(g: _Graph, op, slot: str, index: int = 0) -> str:
    return g.param(op.input(slot)[index])


def _out(op, slot: str, index: int = 0) -> str:
    return op.output(slot)[index]


def _attr(op, name, default=None):
    return op.attr(name) if op.has_attr(name) else default


def _has_tensor_inputs(op, slots) -> list[str]:
    """The slots among ``slots`` that ``op`` feeds with tensors."""
    return [slot for slot in slots if slot in op.input_names and op.input(slot)]


def _int64(g: _Graph, values, hint="shape") -> str:
    return g.const(np.asarray(values, dtype=np.int64).reshape(-1), hint)


def _scalar_like(g: _Graph, var: str, value, hint="k") -> str:
    return g.const(np.asarray(value, dtype=g.dtype(var)), hint)


# ---------------------------------------------------------------- QDQ ops
def _nonzero_weight_scale(values: np.ndarray) -> np.ndarray:
    """A weight channel whose abs max is 0 holds only zeros: any positive scale gives them back."""
    return np.where(values > 0, values, np.float32(1.0)).astype(np.float32)


def _onnx_scale(g: _Graph, scale) -> str:
    values = (scale.scale / np.float32(scale.qmax)).astype(np.float32)
    values = _nonzero_weight_scale(values) if scale.kind == "weight" else values
    return g.const(values if scale.axis is not None else values.reshape(()), "scale")


def _onnx_zero_point(g: _Graph, scale) -> str:
    values = scale.zero_point.astype(np.int8)
    return g.const(values if scale.axis is not None else values.reshape(()), "zero_point")


def _axis_attrs(scale) -> dict:
    return {} if scale.axis is None else {"axis": int(scale.axis)}


def _scale_of(g: _Graph, op):
    """The TensorScale of a QDQ op: a quantize op reads the tensor, a dequantize op its int8 source."""
    source = op.input("X")[0]
    found = g.scales.get(source) if op.type == "quantize_linear" else g.by_source.get(source)
    if found is None:
        raise ProgramStateError(f"{op.type} on '{source}' has no scale the reader understood")
    return found


def _dropped(g: _Graph, scale) -> bool:
    return scale.kind == "observer" and scale.name not in g.kept_observers


def _quantize_linear(g: _Graph, op) -> None:
    scale = _scale_of(g, op)
    x, y = _in(g, op, "X"), _out(op, "Y")
    if _dropped(g, scale):
        g.node("Identity", [x], [y])
        return
    if scale.kind == "observer":
        g.written_observers.append(scale.name)
    g.node("QuantizeLinear", [x, _onnx_scale(g, scale), _onnx_zero_point(g, scale)], [y], **_axis_attrs(scale))


def _dequantize_linear(g: _Graph, op) -> None:
    scale = _scale_of(g, op)
    x, y = op.input("X")[0], _out(op, "Y")
    if scale.kind == "weight" and x not in g.emitted:  # a shared weight is stored once
        g.add_initializer(x, scale.int_values.astype(np.int8))
    elif _dropped(g, scale):
        g.node("Identity", [x], [y])
        return
    g.node("DequantizeLinear", [x, _onnx_scale(g, scale), _onnx_zero_point(g, scale)], [y], **_axis_attrs(scale))


# ---------------------------------------------------------------- conv and pooling
def _pads(op, name="paddings") -> list[int]:
    """Paddle [h, w] or [top, bottom, left, right] -> ONNX [top, left, bottom, right]."""
    pads = list(_attr(op, name, [0, 0]))
    if len(pads) == 2:
        return [pads[0], pads[1], pads[0], pads[1]]
    return [pads[0], pads[2], pads[1], pads[3]]


def _spatial_attrs(op) -> dict:
    algorithm = _attr(op, "padding_algorithm", "EXPLICIT")
    if algorithm == "SAME":
        return {"auto_pad": "SAME_UPPER"}
    if algorithm == "VALID":
        return {"pads": [0, 0, 0, 0]}
    return {"pads": _pads(op)}


def _check_nchw(op, attr="data_format") -> None:
    layout = _attr(op, attr, "NCHW")
    if layout not in ("NCHW", "AnyLayout"):
        raise ProgramStateError(f"{op.type} has {attr}={layout!r}; the ONNX export supports NCHW only")


def _conv_attrs(op) -> dict:
    """Conv attributes; with padding_algorithm SAME Paddle ignores the dilations (uses 1)."""
    same = _attr(op, "padding_algorithm", "EXPLICIT") == "SAME"
    dilations = [1, 1] if same else list(_attr(op, "dilations", [1, 1]))
    return {"strides": list(op.attr("strides")), "dilations": dilations, "group": int(_attr(op, "groups", 1)),
            **_spatial_attrs(op)}


def _conv(g: _Graph, op) -> None:
    _check_nchw(op)
    g.node("Conv", [_in(g, op, "Input"), _in(g, op, "Filter")], [_out(op, "Output")], **_conv_attrs(op))


def _pool(g: _Graph, op) -> None:
    _check_nchw(op)
    kind = {"max": "Max", "avg": "Average"}[op.attr("pooling_type")]
    x, out = _in(g, op, "X"), _out(op, "Out")
    ksize = list(op.attr("ksize"))
    if _attr(op, "global_pooling", False) or (_attr(op, "adaptive", False) and ksize == [1, 1]):
        g.node(f"Global{kind}Pool", [x], [out])
        return
    if _attr(op, "adaptive", False):
        raise ProgramStateError(f"pool2d writing '{out}' is adaptive with output size {ksize}; the ONNX export "
                                "supports adaptive pooling to 1x1 only")
    attrs = {"kernel_shape": ksize, "strides": list(op.attr("strides")), **_spatial_attrs(op),
             "ceil_mode": int(bool(_attr(op, "ceil_mode", False)))}
    if kind == "Average":
        attrs["count_include_pad"] = 0 if _attr(op, "exclusive", True) else 1
    g.node(f"{kind}Pool", [x], [out], **attrs)


def _batch_norm(g: _Graph, op) -> None:
    _check_nchw(op, "data_layout")
    inputs = [_in(g, op, slot) for slot in ("X", "Scale", "Bias", "Mean", "Variance")]
    g.node("BatchNormalization", inputs, [_out(op, "Y")], epsilon=float(op.attr("epsilon")))


def _layer_norm(g: _Graph, op) -> None:
    x, axis = _in(g, op, "X"), int(op.attr("begin_norm_axis"))
    if g.rank(x) - axis != 1:
        raise ProgramStateError(f"layer_norm on '{x}' normalises {g.rank(x) - axis} axes; the ONNX export "
                                "supports normalising the last axis only")
    width = g.block.var(x).shape[-1]
    scale = _in(g, op, "Scale") if op.input("Scale") else g.const(np.ones([width], np.float32), "ln_scale")
    inputs = [x, scale] + ([_in(g, op, "Bias")] if op.input("Bias") else [])
    g.node("LayerNormalization", inputs, [_out(op, "Y")], axis=axis, epsilon=float(op.attr("epsilon")))


# ---------------------------------------------------------------- elementwise and activations
def _aligned(g: _Graph, op, x: str, y: str) -> str:
    """``y`` unsqueezed so numpy broadcasting matches Paddle's ``axis`` rule (y aligned at x's ``axis``)."""
    axis, x_rank, y_rank = int(_attr(op, "axis", -1)), g.rank(x), g.rank(y)
    if axis < 0 or y_rank >= x_rank:
        return y
    trailing = x_rank - axis - y_rank
    if trailing <= 0:
        return y
    return g.node("Unsqueeze", [y, _int64(g, list(range(y_rank, y_rank + trailing)), "axes")])[0]


def _elementwise(onnx_type: str) -> Callable:
    def convert(g: _Graph, op) -> None:
        x, y = _in(g, op, "X"), _in(g, op, "Y")
        g.node(onnx_type, [x, _aligned(g, op, x, y)], [_out(op, "Out")])
    return convert


def _unary(onnx_type: str, **fixed) -> Callable:
    def convert(g: _Graph, op) -> None:
        g.node(onnx_type, [_in(g, op, "X")], [_out(op, "Out")], **fixed)
    return convert


def _hard_swish(g: _Graph, op) -> None:
    x, out = _in(g, op, "X"), _out(op, "Out")
    defaults = (("threshold", 6.0), ("scale", 6.0), ("offset", 3.0))
    threshold, scale, offset = (float(_attr(op, key, default)) for key, default in defaults)
    if (threshold, scale, offset) == (6.0, 6.0, 3.0):
        g.node("HardSwish", [x], [out])
        return
    shifted = g.node("Add", [x, _scalar_like(g, x, offset)])[0]
    clipped = g.node("Clip", [shifted, _scalar_like(g, x, 0.0), _scalar_like(g, x, threshold)])[0]
    g.node("Div", [g.node("Mul", [x, clipped])[0], _scalar_like(g, x, scale)], [out])


def _hard_sigmoid(g: _Graph, op) -> None:
    g.node("HardSigmoid", [_in(g, op, "X")], [_out(op, "Out")],
           alpha=float(_attr(op, "slope", 0.2)), beta=float(_attr(op, "offset", 0.5)))


def _swish(g: _Graph, op) -> None:
    x, beta = _in(g, op, "X"), float(_attr(op, "beta", 1.0))
    scaled = x if beta == 1.0 else g.node("Mul", [x, _scalar_like(g, x, beta)])[0]
    g.node("Mul", [x, g.node("Sigmoid", [scaled])[0]], [_out(op, "Out")])


def _gelu(g: _Graph, op) -> None:
    x = _in(g, op, "X")
    if _attr(op, "approximate", False):
        raise ProgramStateError(f"gelu on '{x}' uses approximate=True; the ONNX export supports the erf form only")
    erf = g.node("Erf", [g.node("Div", [x, _scalar_like(g, x, math.sqrt(2.0))])[0]])[0]
    half = g.node("Mul", [x, _scalar_like(g, x, 0.5)])[0]
    g.node("Mul", [half, g.node("Add", [erf, _scalar_like(g, x, 1.0)])[0]], [_out(op, "Out")])


def _relu6(g: _Graph, op) -> None:
    x = _in(g, op, "X")
    g.node("Clip", [x, _scalar_like(g, x, 0.0), _scalar_like(g, x, float(_attr(op, "threshold", 6.0)))],
           [_out(op, "Out")])


def _leaky_relu(g: _Graph, op) -> None:
    g.node("LeakyRelu", [_in(g, op, "X")], [_out(op, "Out")], alpha=float(_attr(op, "alpha", 0.02)))


def _scale(g: _Graph, op) -> None:
    if _has_tensor_inputs(op, ("ScaleTensor",)):
        raise ProgramStateError(f"scale writing '{_out(op, 'Out')}' takes its factor from a tensor; not supported")
    x, out = _in(g, op, "X"), _out(op, "Out")
    factor, bias = float(op.attr("scale")), float(op.attr("bias"))
    if bias == 0.0:
        g.node("Mul", [x, _scalar_like(g, x, factor)], [out])
    elif op.attr("bias_after_scale"):
        g.node("Add", [g.node("Mul", [x, _scalar_like(g, x, factor)])[0], _scalar_like(g, x, bias)], [out])
    else:
        g.node("Mul", [g.node("Add", [x, _scalar_like(g, x, bias)])[0], _scalar_like(g, x, factor)], [out])


def _dropout(g: _Graph, op) -> None:
    x, out = _in(g, op, "X"), _out(op, "Out")
    if _attr(op, "dropout_implementation", "downgrade_in_infer") == "upscale_in_train":
        g.node("Identity", [x], [out])
    else:
        g.node("Mul", [x, _scalar_like(g, x, 1.0 - float(op.attr("dropout_prob")))], [out])


def _softmax(g: _Graph, op) -> None:
    g.node("Softmax", [_in(g, op, "X")], [_out(op, "Out")], axis=int(_attr(op, "axis", -1)))


# ---------------------------------------------------------------- matmul
def _transposed_last(g: _Graph, name: str) -> str:
    perm = list(range(g.rank(name)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return g.node("Transpose", [name], perm=perm)[0]


def _matmul_v2(g: _Graph, op) -> None:
    x, y = _in(g, op, "X"), _in(g, op, "Y")
    x = _transposed_last(g, x) if _attr(op, "trans_x", False) else x
    y = _transposed_last(g, y) if _attr(op, "trans_y", False) else y
    g.node("MatMul", [x, y], [_out(op, "Out")])


def _matmul(g: _Graph, op) -> None:
    x, y, out = _in(g, op, "X"), _in(g, op, "Y"), _out(op, "Out")
    x = _transposed_last(g, x) if _attr(op, "transpose_X", False) else x
    y = _transposed_last(g, y) if _attr(op, "transpose_Y", False) else y
    alpha = float(_attr(op, "alpha", 1.0))
    if alpha == 1.0:
        g.node("MatMul", [x, y], [out])
    else:
        g.node("Mul", [g.node("MatMul", [x, y])[0], _scalar_like(g, out, alpha)], [out])


def _mul(g: _Graph, op) -> None:
    """``mul``: flatten X at x_num_col_dims and Y at y_num_col_dims, MatMul, restore the leading/trailing dims."""
    x, y, out = _in(g, op, "X"), _in(g, op, "Y"), _out(op, "Out")
    x_cols, y_cols = int(_attr(op, "x_num_col_dims", 1)), int(_attr(op, "y_num_col_dims", 1))
    if (g.rank(x), g.rank(y), x_cols, y_cols) == (2, 2, 1, 1):
        g.node("MatMul", [x, y], [out])
        return
    product = g.node("MatMul", [g.node("Flatten", [x], axis=x_cols)[0], g.node("Flatten", [y], axis=y_cols)[0]])[0]
    shape = g.node("Concat", [g.node("Shape", [x], end=x_cols)[0], g.node("Shape", [y], start=y_cols)[0]], axis=0)[0]
    g.node("Reshape", [product, shape], [out])


# ---------------------------------------------------------------- shapes
def _as_int64_vector(g: _Graph, name: str) -> str:
    return g.node("Reshape", [g.node("Cast", [name], to=g.onnx.TensorProto.INT64)[0], _int64(g, [-1])])[0]


def _reshape2(g: _Graph, op) -> None:
    x, out = _in(g, op, "X"), _out(op, "Out")
    if _has_tensor_inputs(op, ("Shape",)):
        shape = _as_int64_vector(g, _in(g, op, "Shape"))
    elif _has_tensor_inputs(op, ("ShapeTensor",)):
        parts = [_as_int64_vector(g, g.param(name)) for name in op.input("ShapeTensor")]
        shape = g.node("Concat", parts, axis=0)[0]
    else:
        shape = _int64(g, op.attr("shape"))
    g.node("Reshape", [x, shape], [out])


def _flatten_range(g: _Graph, op) -> None:
    x, out = _in(g, op, "X"), _out(op, "Out")
    rank = g.rank(x)
    start, stop = (int(op.attr(k)) % max(rank, 1) for k in ("start_axis", "stop_axis"))
    parts = [g.node("Shape", [x], end=start)[0]] if start > 0 else []
    parts.append(_int64(g, [-1]))
    if stop + 1 < rank:
        parts.append(g.node("Shape", [x], start=stop + 1)[0])
    g.node("Reshape", [x, g.node("Concat", parts, axis=0)[0]], [out])


def _transpose2(g: _Graph, op) -> None:
    g.node("Transpose", [_in(g, op, "X")], [_out(op, "Out")], perm=[int(a) for a in op.attr("axis")])


def _squeeze2(g: _Graph, op) -> None:
    axes = [int(a) for a in _attr(op, "axes", [])]
    inputs = [_in(g, op, "X")] + ([_int64(g, axes, "axes")] if axes else [])
    g.node("Squeeze", inputs, [_out(op, "Out")])


def _unsqueeze2(g: _Graph, op) -> None:
    g.node("Unsqueeze", [_in(g, op, "X"), _int64(g, [int(a) for a in op.attr("axes")], "axes")], [_out(op, "Out")])


def _concat(g: _Graph, op) -> None:
    inputs = [g.param(name) for name in op.input("X")]
    g.node("Concat", inputs, [_out(op, "Out")], axis=int(_attr(op, "axis", 0)))


def _shape(g: _Graph, op) -> None:
    out = _out(op, "Out")
    shape = g.node("Shape", [_in(g, op, "Input")])[0]
    g.node("Cast", [shape], [out], to=g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(g.dtype(out))))


def _slice(g: _Graph, op) -> None:
    tensors = _has_tensor_inputs(op, ("StartsTensor", "EndsTensor", "StartsTensorList", "EndsTensorList"))
    x, out = _in(g, op, "Input"), _out(op, "Out")
    if tensors:
        raise ProgramStateError(f"slice writing '{out}' takes {tensors} from tensors; the ONNX export supports "
                                "constant starts/ends only")
    bounds = [_int64(g, op.attr(key)) for key in ("starts", "ends", "axes")]
    sliced = g.node("Slice", [x, *bounds])[0]
    decrease = [int(a) for a in _attr(op, "decrease_axis", [])]
    if decrease and g.rank(out) < g.rank(x):
        g.node("Squeeze", [sliced, _int64(g, decrease, "axes")], [out])
    else:
        g.node("Identity", [sliced], [out])


def _fill_constant(g: _Graph, op) -> None:
    tensors = _has_tensor_inputs(op, ("ShapeTensor", "ShapeTensorList", "ValueTensor"))
    out = _out(op, "Out")
    if tensors:
        raise ProgramStateError(f"fill_constant writing '{out}' takes {tensors} from tensors; not supported")
    text = _attr(op, "str_value", "")
    value = float(text) if text else float(op.attr("value"))
    array = np.full([int(d) for d in op.attr("shape")], value, dtype=g.dtype(out))
    g.node("Constant", [], [out], value=g.onnx.numpy_helper.from_array(array))


def _assign(g: _Graph, op) -> None:
    g.node("Identity", [_in(g, op, "X")], [_out(op, "Out")])


OP_CONVERTERS: dict[str, Callable] = {
    "quantize_linear": _quantize_linear,
    "dequantize_linear": _dequantize_linear,
    "conv2d": _conv,
    "depthwise_conv2d": _conv,
    "pool2d": _pool,
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "elementwise_add": _elementwise("Add"),
    "elementwise_sub": _elementwise("Sub"),
    "elementwise_mul": _elementwise("Mul"),
    "elementwise_div": _elementwise("Div"),
    "elementwise_max": _elementwise("Max"),
    "elementwise_min": _elementwise("Min"),
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "sqrt": _unary("Sqrt"),
    "exp": _unary("Exp"),
    "abs": _unary("Abs"),
    "hard_swish": _hard_swish,
    "hard_sigmoid": _hard_sigmoid,
    "swish": _swish,
    "silu": _swish,
    "gelu": _gelu,
    "relu6": _relu6,
    "leaky_relu": _leaky_relu,
    "scale": _scale,
    "dropout": _dropout,
    "softmax": _softmax,
    "matmul_v2": _matmul_v2,
    "matmul": _matmul,
    "mul": _mul,
    "reshape2": _reshape2,
    "flatten_contiguous_range": _flatten_range,
    "transpose2": _transpose2,
    "squeeze2": _squeeze2,
    "unsqueeze2": _unsqueeze2,
    "concat": _concat,
    "shape": _shape,
    "slice": _slice,
    "fill_constant": _fill_constant,
    "assign": _assign,
}
"""Paddle op type -> converter ``(graph, op) -> None`` emitting the ONNX nodes that write its outputs."""


# ---------------------------------------------------------------- conv folding (bias, batch_norm)
@dataclass(frozen=True)
class _FoldedConv:
    """A conv2d whose following bias add / batch_norm ops become its weights and bias.

    ``y = multiplier * conv(x, W) + bias`` per output channel, written to ``output``;
    ``absorbed`` are the op indices no longer emitted (the adds, batch norms, observer
    pairs between them and the weight's dequantize op).
    """

    output: str
    multiplier: np.ndarray
    bias: np.ndarray
    absorbed: frozenset


def _index_maps(block):
    consumers, producer = {}, {}
    for index, op in enumerate(block.ops):
        for name in op.input_arg_names:
            consumers.setdefault(name, []).append(index)
        for name in op.output_arg_names:
            producer[name] = index
    return consumers, producer


def _is_observer_quant(op) -> bool:
    return op.type == "quantize_linear" and is_observer(op)


def _through_observer(block, consumers, var):
    """(var, absorbed) past an observer QDQ pair that is ``var``'s only consumer, else (var, [])."""
    users = consumers.get(var, [])
    if len(users) != 1 or not _is_observer_quant(block.ops[users[0]]):
        return var, []
    quantized = block.ops[users[0]].output("Y")[0]
    after = consumers.get(quantized, [])
    if len(after) != 1 or block.ops[after[0]].type != "dequantize_linear":
        return var, []
    return block.ops[after[0]].output("Y")[0], [users[0], after[0]]


def _constant(block, scope, producer, var):
    """Value of ``var`` when it is a stored tensor, possibly through reshape2/assign and observer pairs."""
    if block.has_var(var) and block.var(var).persistable:
        return read_tensor(scope, var)
    op = block.ops[producer[var]] if var in producer else None
    if op is None:
        return None
    if op.type == "dequantize_linear" and op.input("X")[0] in producer:
        quant = block.ops[producer[op.input("X")[0]]]
        return _constant(block, scope, producer, quant.input("X")[0]) if _is_observer_quant(quant) else None
    if op.type in ("reshape2", "assign") and not _has_tensor_inputs(op, ("Shape", "ShapeTensor")):
        return _constant(block, scope, producer, op.input("X")[0])
    return None


def _channel_bias(block, scope, producer, op, channels):
    """The per-channel vector an ``elementwise_add`` adds to an NCHW conv output, or None."""
    y = op.input("Y")[0]
    value = _constant(block, scope, producer, y)
    if value is None or value.size != channels:
        return None
    shape, axis = tuple(block.var(y).shape), int(_attr(op, "axis", -1))
    if (len(shape) == 1 and axis == 1) or shape in ((1, channels, 1, 1), (channels, 1, 1)):
        return value.astype(np.float64).reshape(-1)
    return None


def _fold_step(block, scope, producer, op, var, multiplier, bias):
    """(multiplier, bias) after applying ``op`` to ``var``, or None when ``op`` cannot be folded."""
    if op.type == "batch_norm" and op.input("X") == [var]:
        gamma, beta, mean, variance = (read_tensor(scope, op.input(k)[0]).astype(np.float64)
                                       for k in ("Scale", "Bias", "Mean", "Variance"))
        factor = gamma / np.sqrt(variance + float(op.attr("epsilon")))
        return multiplier * factor, (bias - mean) * factor + beta
    if op.type == "elementwise_add" and op.input("X") == [var]:
        added = _channel_bias(block, scope, producer, op, multiplier.size)
        return None if added is None else (multiplier, bias + added)
    return None


def _plan_conv(block, scope, consumers, producer, index):
    op = block.ops[index]
    channels = int(block.var(op.input("Filter")[0]).shape[0])
    var, multiplier, bias = op.output("Output")[0], np.ones(channels), np.zeros(channels)
    absorbed = []
    while True:
        past, pair = _through_observer(block, consumers, var)
        users = consumers.get(past, [])
        if len(users) != 1:
            break
        step = _fold_step(block, scope, producer, block.ops[users[0]], past, multiplier, bias)
        if step is None:
            break
        multiplier, bias = step
        absorbed += pair + users
        var = block.ops[users[0]].output("Y" if block.ops[users[0]].type == "batch_norm" else "Out")[0]
    weight_dq = producer.get(op.input("Filter")[0])
    if weight_dq is not None and consumers.get(op.input("Filter")[0]) == [index]:
        absorbed.append(weight_dq)
    return _FoldedConv(var, multiplier, bias, frozenset(absorbed))


def _foldable_weight(g: _Graph, op, multiplier) -> bool:
    if not np.all(np.isfinite(multiplier) & (multiplier != 0)):
        return False
    scale = g.by_dequantized.get(op.input("Filter")[0])
    if scale is None:
        return g.block.var(op.input("Filter")[0]).persistable
    if scale.int_values is None:  # not frozen: refused by _check_scales with the tensor's name
        return False
    flips = (multiplier < 0).reshape([-1] + [1] * (scale.int_values.ndim - 1))
    return scale.axis in (0, None) and not np.any(flips & (scale.int_values == -128))


def _plan_conv_folds(g: _Graph) -> dict:
    """Conv op index -> _FoldedConv for every conv2d whose bias add or batch_norm can be folded."""
    block = g.block
    consumers, producer = _index_maps(block)
    plans = {}
    for index, op in enumerate(block.ops):
        if op.type not in ("conv2d", "depthwise_conv2d"):
            continue
        plan = _plan_conv(block, g.scope, consumers, producer, index)
        if plan.output != op.output("Output")[0] and _foldable_weight(g, op, plan.multiplier):
            plans[index] = plan
    return plans


def _folded_weight(g: _Graph, op, multiplier):
    """(weight tensor name, ONNX weight scale per channel or None) with ``multiplier`` folded in."""
    name = op.input("Filter")[0]
    scale = g.by_dequantized.get(name)
    channels = multiplier.size
    if scale is None:
        values = read_tensor(g.scope, name) * multiplier.reshape([-1, 1, 1, 1])
        return g.const(values.astype(np.float32), "folded_weight"), None
    sign = np.where(multiplier < 0, -1, 1).reshape([-1, 1, 1, 1])
    ints = (scale.int_values.astype(np.int16) * sign).astype(np.int8)
    onnx_scale = _nonzero_weight_scale((np.broadcast_to(scale.scale, [channels]).astype(np.float64)
                                        * np.abs(multiplier) / scale.qmax).astype(np.float32))
    zero = g.const(np.zeros([channels], np.int8), "zero_point")
    weight = g.node("DequantizeLinear", [g.const(ints, "folded_weight_int8"), g.const(onnx_scale, "scale"), zero],
                    axis=0)[0]
    return weight, onnx_scale


def _folded_bias(g: _Graph, op, bias, weight_scale, requantized: bool):
    """Bias as int32 + DequantizeLinear (scale x_scale * w_scale, what QLinearConv needs) or float32.

    int32 only where onnxruntime can fuse a QLinearConv (``requantized``: a QuantizeLinear follows
    the conv); elsewhere the conv runs in float and rounding the bias would only add error.
    """
    x_scale = g.by_dequantized.get(op.input("Input")[0])
    if requantized and weight_scale is not None and x_scale is not None and x_scale.kind != "weight":
        step = (weight_scale * np.float32(x_scale.scale[0] / np.float32(x_scale.qmax))).astype(np.float32)
        ints = np.round(bias / step.astype(np.float64))
        if np.all(np.abs(ints) < 2 ** 31 - 1):
            zero = g.const(np.zeros(step.shape, np.int32), "zero_point")
            return g.node("DequantizeLinear", [g.const(ints.astype(np.int32), "bias_int32"),
                                               g.const(step, "bias_scale"), zero], axis=0)[0]
    return g.const(bias.astype(np.float32), "folded_bias")


def _emit_folded_conv(g: _Graph, op, plan: _FoldedConv) -> None:
    _check_nchw(op)
    weight, weight_scale = _folded_weight(g, op, plan.multiplier)
    bias = _folded_bias(g, op, plan.bias, weight_scale, plan.output in g.kept_observers)
    g.node("Conv", [_in(g, op, "Input"), weight, bias], [plan.output], **_conv_attrs(op))


# ---------------------------------------------------------------- checks
def _check_supported(block) -> None:
    missing = sorted({op.type for op in block.ops if op.type not in OP_CONVERTERS and op.type not in _IGNORED_OPS})
    if missing:
        raise ProgramStateError(f"the ONNX export has no converter for op types {missing}; supported: "
                                f"{sorted(OP_CONVERTERS)}")


def _check_scales(scales, kept_observers) -> None:
    """Every quantized tensor must fit ONNX int8 QDQ: 8 bits, zero point 0, positive finite scales, frozen weights."""
    bad = []
    for scale in scales.values():
        if scale.kind == "observer" and scale.name not in kept_observers:
            continue
        if scale.bits != 8:
            bad.append(f"'{scale.name}' ({scale.kind}): bits={scale.bits}, ONNX int8 QDQ needs 8")
        elif np.any(scale.zero_point != 0):
            bad.append(f"'{scale.name}' ({scale.kind}): non-zero zero point {scale.zero_point.tolist()[:4]}")
        elif not np.all(np.isfinite(scale.scale) & ((scale.scale > 0) | (scale.kind == "weight"))):
            bad.append(f"'{scale.name}' ({scale.kind}): scale must be finite and, for activations, positive; "
                       f"got {scale.scale.tolist()[:4]}")
        elif scale.kind == "weight" and scale.int_values is None:
            bad.append(f"'{scale.name}' (weight): not frozen (still a quantize_linear); export the model saved by "
                       "quant_post or convert")
    if bad:
        raise ProgramStateError("these quantized tensors cannot be written as ONNX int8 QDQ: " + "; ".join(bad))


def _check_observers(observers) -> None:
    if observers not in OBSERVER_MODES:
        raise ConfigError(f"observers must be one of {list(OBSERVER_MODES)}, got {observers!r}")


def _check_opset(opset) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < DEFAULT_OPSET:
        raise ConfigError(f"opset must be an int >= {DEFAULT_OPSET} (LayerNormalization, per-axis QDQ), got {opset!r}")
    return opset


def _check_output(output_path, model) -> Path:
    target = Path(output_path).resolve()
    inputs = {Path(model.model_file).resolve()} | ({Path(model.params_file).resolve()} if model.params_file else set())
    if target in inputs:
        raise ConfigError(f"output_path {str(output_path)!r} is an input model file; choose another path")
    if target.exists() and target.is_dir():
        raise ConfigError(f"output_path {str(output_path)!r} is a directory; give a file path such as model.onnx")
    if not target.parent.is_dir():
        raise ConfigError(f"output_path {str(output_path)!r}: folder {str(target.parent)!r} does not exist")
    return target


# ---------------------------------------------------------------- graph assembly
def _value_info(g: _Graph, name: str, batch_dim: str):
    var = g.block.var(name)
    dims = [batch_dim if i == 0 and d < 0 else (f"{name}_dim{i}" if d < 0 else int(d)) for i, d in enumerate(var.shape)]
    elem = g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(convert_dtype(var.dtype)))
    return g.onnx.helper.make_tensor_value_info(name, elem, dims)


def _int8_op_outputs(g: _Graph, plans) -> set[str]:
    """Outputs of ops reading an int8 weight (the end of the folded chain for a folded conv)."""
    outputs = set()
    for index, op in enumerate(g.block.ops):
        weighted = any(g.by_dequantized.get(name) is not None and g.by_dequantized[name].kind == "weight"
                       for name in op.input_arg_names)
        if op.type in WEIGHT_OP_TYPES and weighted:
            outputs.add(plans[index].output if index in plans else op.output_arg_names[0])
    return outputs


def _kept_observers(g: _Graph, plans, observers) -> set[str]:
    names = {s.name for s in g.scales.values() if s.kind == "observer"}
    if observers == "all":
        return names
    return names & _int8_op_outputs(g, plans) if observers == "int8_ops" else set()


def _emit_ops(g: _Graph, plans) -> None:
    absorbed = set().union(*(plan.absorbed for plan in plans.values()))
    for index, op in enumerate(g.block.ops):
        if op.type in _IGNORED_OPS or index in absorbed:
            continue
        if index in plans:
            _emit_folded_conv(g, op, plans[index])
        else:
            OP_CONVERTERS[op.type](g, op)


def _prune(nodes, initializers, outputs):
    """Drop nodes whose outputs nothing reads (repeatedly), then initializers nothing reads."""
    nodes = list(nodes)
    while True:
        used = {name for node in nodes for name in node.input} | set(outputs)
        kept = [node for node in nodes if any(name in used for name in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    used = {name for node in nodes for name in node.input}
    return nodes, [tensor for tensor in initializers if tensor.name in used]


def _build_graph(onnx, model, scales, *, observers, fold, name):
    """(ONNX graph, names of the observers written as QDQ pairs)."""
    g = _Graph(onnx, model.program.global_block(), model.scope, scales)
    plans = _plan_conv_folds(g) if fold else {}
    g.kept_observers = _kept_observers(g, plans, observers)
    _check_scales(scales, g.kept_observers)
    _emit_ops(g, plans)
    nodes, initializers = _prune(g.nodes, g.initializers, model.fetch_names)
    inputs = [_value_info(g, n, "batch") for n in model.feed_names]
    outputs = [_value_info(g, n, "batch") for n in model.fetch_names]
    graph = onnx.helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    return graph, tuple(g.written_observers)


def _write_atomic(data: bytes, target: Path) -> None:
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _export(model_dir, output_path, *, require_quantized, opset, observers, fold, model_filename, params_filename):
    onnx = require_onnx()
    _check_observers(observers)
    opset = _check_opset(opset)
    model = load_quantized_model(model_dir, model_filename=model_filename, params_filename=params_filename)
    target = _check_output(output_path, model)
    with legacy_ir():
        block = model.program.global_block()
        scales = read_qdq_scales(model.program, model.scope)
        if require_quantized and not scales:
            found = sorted({op.type for op in block.ops if op.type.startswith("fake_")})
            hint = f" (it has old-format ops {found}: quantize with onnx_format=True)" if found else ""
            raise ProgramStateError(f"model {str(model.model_file)!r} has no quantize_linear/dequantize_linear op"
                                    f"{hint}; export_onnx needs a model saved by quant_post or convert")
        _check_supported(block)
        graph, written = _build_graph(onnx, model, scales, observers=observers, fold=fold,
                                      name=Path(model.model_file).stem)
    opsets = [onnx.helper.make_opsetid("", opset)]
    # the oldest IR that carries the opset, so older onnxruntime releases load the file too
    proto = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="paddle_quant",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    _write_atomic(proto.SerializeToString(), target)
    return _result(target, opset, scales, written, model)


def _result(target, opset, scales, observers, model) -> ONNXExportResult:
    """The ExportResult; ``observers`` are the observer tensors actually written as QDQ pairs."""
    def names(kind):
        return tuple(s.name for s in scales.values() if s.kind == kind)
    return ONNXExportResult(path=target, opset=opset, weights=names("weight"), activations=names("activation"),
                            observers=tuple(observers),
                            inputs=model.feed_names, outputs=model.fetch_names)


def export_onnx(quantized_model_dir, output_path, *, opset: int = DEFAULT_OPSET,
                observers: Literal["none", "int8_ops", "all"] = "none", fold_conv: bool = True,
                model_filename: str | None = None, params_filename: str | None = None) -> ONNXExportResult:
    """Write a quantized Paddle inference model as an int8 QDQ ONNX model.

    The quantized model alone is enough: it holds the whole graph, the int8 weights and every
    scale, so no fp32 model is needed (a separate fp32 export would have to be matched to it
    tensor by tensor). Weights become int8 initializers read by ``DequantizeLinear`` (per channel
    with ``axis`` = Paddle's ``quant_axis``); quantized activations become
    ``QuantizeLinear``/``DequantizeLinear`` pairs with ``s = scale / 127``.

    Args:
        quantized_model_dir: folder written by ``quant_post`` or saved after ``convert`` (QDQ format).
        output_path: the ``.onnx`` file to write (atomically: a temporary file renamed into place).
            It may not be one of the input files.
        opset: ONNX opset, at least :data:`DEFAULT_OPSET`.
        observers: where the output-scale observers (identities in the Paddle Executor) become
            real QDQ pairs. ``'none'`` (default): nowhere, so the graph computes what the Paddle
            Executor computes. ``'int8_ops'``: on the outputs of ops that read an int8 weight (after
            folding, the end of the conv-bias-batch_norm chain), which onnxruntime needs to run them
            as QLinearConv/QLinearMatMul (faster) but which rounds those outputs to the observer
            scale (measured: PP-OCR cls 92.5 % against 95.7 % with ``'none'``, see
            docs/deploy_onnx.md). ``'all'``: everywhere.
        fold_conv: fold the bias ``elementwise_add`` and ``batch_norm`` that follow a conv2d into
            its weight and bias, as Paddle Inference does before running int8: the int8 weight
            values stay (a negative batch-norm factor flips their sign), the channel scales are
            multiplied by ``|gamma / sqrt(var + eps)|``, the bias is stored int32 at scale
            ``x_scale * w_scale`` where a QuantizeLinear follows the conv (float32 elsewhere) and
            observer pairs between the folded ops are dropped. This is what
            lets onnxruntime run the conv as one QLinearConv. ``False`` keeps every Paddle op.
        model_filename / params_filename: file names inside the folder when it holds several models.

    Returns:
        ONNXExportResult naming the quantized tensors.

    Raises:
        MissingDependencyError: onnx is not installed.
        ConfigError: a file is missing, an argument is out of range, or output_path is an input.
        ProgramStateError: the model has no QDQ op, has an op type without converter, or a
            quantized tensor ONNX int8 QDQ cannot express (the message names each).
    """
    return _export(quantized_model_dir, output_path, require_quantized=True, opset=opset, observers=observers,
                   fold=fold_conv, model_filename=model_filename, params_filename=params_filename)


def export_float_onnx(model_dir, output_path, *, opset: int = DEFAULT_OPSET, fold_conv: bool = True,
                      model_filename: str | None = None, params_filename: str | None = None) -> ONNXExportResult:
    """Write an fp32 Paddle inference model as ONNX with the same converter (the baseline for int8).

    Arguments and errors as :func:`export_onnx`, except that a model without quant ops is accepted.
    """
    return _export(model_dir, output_path, require_quantized=False, opset=opset, observers="none",
                   fold=fold_conv, model_filename=model_filename, params_filename=params_filename)
