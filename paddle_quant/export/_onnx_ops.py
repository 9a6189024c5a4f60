"""The ONNX export's graph builder and its Paddle op converters (:data:`OP_CONVERTERS`).

Each converter ``(graph, op) -> None`` emits the ONNX nodes (and initializers) that write one
Paddle op's outputs under the same tensor names; :mod:`paddle_quant.export.onnx` walks the
program and calls them. Private to the exporter.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from paddle.base.data_feeder import convert_dtype

from ..common.program import read_tensor
from ..common.errors import ProgramStateError


# ---------------------------------------------------------------- graph builder
class _Graph:
    """Collects ONNX nodes and initializers while the program is walked.

    Every Paddle variable keeps its name as the ONNX tensor name; helper tensors get
    fresh names under ``paddle_quant.onnx/``.
    """

    def __init__(self, onnx, block, scope, scales, *, opset: int, activation_type="int8", weight_type="int8"):
        self.onnx, self.block, self.scope, self.scales, self.opset = onnx, block, scope, scales, opset
        self.activation_type, self.weight_type = activation_type, weight_type
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
        # np.require keeps a 0-d array 0-d (np.ascontiguousarray makes it 1-d): onnxruntime fuses a QDQ
        # Mul/Add into QLinearMul/QLinearAdd only when the per-tensor scale and zero point are rank 0
        self.initializers.append(self.onnx.numpy_helper.from_array(np.require(array, requirements="C"), name))
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


def node_maps(nodes) -> tuple[dict, dict]:
    """(tensor name -> the node writing it, tensor name -> the nodes reading it) of ONNX ``nodes``."""
    writers, readers = {}, {}
    for node in nodes:
        for name in node.output:
            writers[name] = node
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return writers, readers


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


def storage_type(g: _Graph, kind: str) -> str:
    """'int8' or 'uint8': how the export stores tensors of ``kind`` ('weight', 'activation', 'observer')."""
    return g.weight_type if kind == "weight" else g.activation_type


def stored_integers(values: np.ndarray, storage: str) -> np.ndarray:
    """Paddle's symmetric int8 values as stored: int8 as they are, or uint8 shifted by 128 (zero point 128).

    The shift keeps the grid: ``(q + 128 - 128) * s`` is ``q * s``, and QuantizeLinear's rounding and
    saturation to [0, 255] with zero point 128 equal int8's to [-128, 127] plus 128.
    """
    return values.astype(np.int8) if storage == "int8" else (values.astype(np.int16) + 128).astype(np.uint8)


def zero_point_const(g: _Graph, storage: str, shape=()) -> str:
    """A zero-point initializer: int8 0 or uint8 128 (the same grid), of ``shape``."""
    return g.const(stored_integers(np.zeros(shape, np.int8), storage), "zero_point")


def _onnx_zero_point(g: _Graph, scale) -> str:
    shape = scale.zero_point.shape if scale.axis is not None else ()
    if scale.unsigned:  # oneDNN's u8 grid: 0..255 at scale / 255, zero point 0 whatever activation_type says
        return g.const(np.zeros(shape, np.uint8), "zero_point")
    return zero_point_const(g, storage_type(g, scale.kind), shape)


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
        g.add_initializer(x, stored_integers(scale.int_values, g.weight_type))
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
    """Conv attributes; with padding_algorithm SAME Paddle ignores the dilations (uses 1). ``kernel_shape`` is
    optional in ONNX; written as paddle2onnx writes it, so onnxruntime optimizes our PP-OCR cls export into the
    graph it makes of paddle2onnx's, attribute for attribute (timed the same with or without it: 3.33 / 3.42 /
    3.56 ms against 3.32 / 3.39 / 3.53, 300 interleaved runs each)."""
    same = _attr(op, "padding_algorithm", "EXPLICIT") == "SAME"
    dilations = [1, 1] if same else list(_attr(op, "dilations", [1, 1]))
    kernel = [int(d) for d in op.block.var(op.input("Filter")[0]).shape[2:]]
    return {"kernel_shape": kernel, "strides": list(op.attr("strides")), "dilations": dilations,
            "group": int(_attr(op, "groups", 1)), **_spatial_attrs(op)}


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


def _reduce_mean(g: _Graph, op) -> None:
    """Paddle's mean over ``dim`` (every axis with ``reduce_all`` or no ``dim``); the axes are an attribute up to
    opset 17 and an input from 18."""
    axes = [] if _attr(op, "reduce_all", False) else [int(a) for a in _attr(op, "dim", [])]
    keepdims = int(bool(_attr(op, "keep_dim", False)))
    x, out = _in(g, op, "X"), _out(op, "Out")
    if not axes:
        g.node("ReduceMean", [x], [out], keepdims=keepdims)
    elif g.opset >= 18:
        g.node("ReduceMean", [x, _int64(g, axes, "axes")], [out], keepdims=keepdims)
    else:
        g.node("ReduceMean", [x], [out], axes=axes, keepdims=keepdims)


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
    "reduce_mean": _reduce_mean,
    "shape": _shape,
    "slice": _slice,
    "fill_constant": _fill_constant,
    "assign": _assign,
}
"""Paddle op type -> converter ``(graph, op) -> None`` emitting the ONNX nodes that write its outputs."""
