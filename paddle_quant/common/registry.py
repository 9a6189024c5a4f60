"""What each quantizable op type looks like: data, not ``if`` chains.

The tables reproduce ``paddle.static.quantization.quant_config`` of Paddle 3.3.1
(same op types, same order, same slots), so the exported op-type lists equal
PaddleSlim's. On top of Paddle's table each weight op records which input slot
holds the weight and along which axis its output channels lie.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "OpSpec",
    "WEIGHT_OP_SPECS",
    "ACTIVATION_OP_SPECS",
    "TENSORRT_OP_TYPES",
    "TRANSFORM_PASS_OP_TYPES",
    "QUANT_DEQUANT_PASS_OP_TYPES",
    "SUPPORTED_OP_TYPES",
    "LAYER_OP_TYPES",
    "op_spec",
    "weight_channel_axis",
]


@dataclass(frozen=True)
class OpSpec:
    """Slots of one quantizable op type.

    Attributes:
        op_type: Paddle op type, e.g. ``"conv2d"``.
        inputs: input slot names whose tensors get quantized.
        outputs: output slot names (observed for output scales).
        weight_slot: the input slot holding the weight, or None for activation-only ops.
        channel_axis: output-channel axis of the weight tensor (per-channel scales).
        transpose_attr: bool attribute that, when set, moves the channel axis to 0.
    """

    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weight_slot: str | None = None
    channel_axis: int = 0
    transpose_attr: str | None = None


def _weight(op_type, inputs, outputs, weight_slot, axis, transpose_attr=None):
    return OpSpec(op_type, tuple(inputs), tuple(outputs), weight_slot, axis, transpose_attr)


_WEIGHT_SPECS = (
    _weight("conv2d", ["Input", "Filter"], ["Output"], "Filter", 0),
    _weight("depthwise_conv2d", ["Input", "Filter"], ["Output"], "Filter", 0),
    _weight("conv2d_transpose", ["Input", "Filter"], ["Output"], "Filter", 1),
    _weight("mul", ["X", "Y"], ["Out"], "Y", 1),
    _weight("matmul", ["X", "Y"], ["Out"], "Y", 1, "transpose_Y"),
    _weight("matmul_v2", ["X", "Y"], ["Out"], "Y", 1, "trans_y"),
)

# Paddle 3.3.1 SUPPORT_ACT_QUANTIZATION_OP_DICT, in its order: (op type, inputs, outputs).
_ACTIVATION_TABLE = (
    ("mul", ["X", "Y"], ["Out"]), ("matmul", ["X", "Y"], ["Out"]),
    ("matmul_v2", ["X", "Y"], ["Out"]), ("pool2d", ["X"], ["Out"]),
    ("elementwise_add", ["X", "Y"], ["Out"]), ("concat", ["X"], ["Out"]),
    ("softmax", ["X"], ["Out"]), ("argmax", ["X"], ["Out"]),
    ("transpose", ["X"], ["Out"]), ("equal", ["X", "Y"], ["Out"]),
    ("gather", ["X"], ["Out"]), ("greater_equal", ["X", "Y"], ["Out"]),
    ("greater_than", ["X", "Y"], ["Out"]), ("less_equal", ["X", "Y"], ["Out"]),
    ("less_than", ["X", "Y"], ["Out"]), ("mean", ["X"], ["Out"]),
    ("not_equal", ["X", "Y"], ["Out"]), ("reshape", ["X"], ["Out"]),
    ("reshape2", ["X"], ["Out"]), ("transpose2", ["X"], ["Out"]),
    ("nearest_interp", ["X"], ["Out"]), ("trilinear_interp", ["X"], ["Out"]),
    ("slice", ["Input"], ["Out"]), ("squeeze", ["X"], ["Out"]),
    ("elementwise_sub", ["X", "Y"], ["Out"]), ("relu", ["X"], ["Out"]),
    ("relu6", ["X"], ["Out"]), ("leaky_relu", ["X"], ["Out"]),
    ("prelu", ["X", "Alpha"], ["Out"]), ("tanh", ["X"], ["Out"]),
    ("swish", ["X"], ["Out"]), ("dropout", ["X"], ["Out"]),
    ("batch_norm", ["X"], ["Y"]), ("layer_norm", ["X"], ["Y"]),
    ("sigmoid", ["X"], ["Out"]), ("elementwise_mul", ["X", "Y"], ["Out"]),
    ("elementwise_pow", ["X", "Y"], ["Out"]), ("hard_swish", ["X"], ["Out"]),
    ("hard_sigmoid", ["X"], ["Out"]), ("gru", ["Input", "Weight"], ["Hidden"]),
    ("lstm", ["Input", "Weight"], ["Hidden"]), ("pad2d", ["X"], ["Out"]),
    ("pad3d", ["X"], ["Out"]), ("flatten", ["X"], ["Out"]),
    ("flatten2", ["X"], ["Out"]), ("unsqueeze2", ["X"], ["Out"]),
    ("flatten_contiguous_range", ["X"], ["Out"]), ("split", ["X"], ["Out"]),
    ("squeeze2", ["X"], ["Out"]), ("nearest_interp_v2", ["X"], ["Out"]),
    ("bilinear_interp", ["X"], ["Out"]), ("bilinear_interp_v2", ["X"], ["Out"]),
    ("fill_constant_batch_size_like", ["Input"], ["Out"]), ("arg_max", ["X"], ["Out"]),
    ("abs", ["X"], ["Out"]), ("assign", ["X"], ["Out"]),
    ("cast", ["X"], ["Out"]), ("clip", ["X"], ["Out"]),
    ("box_coder", ["PriorBox"], ["OutputBox"]), ("crop", ["X"], ["Out"]),
    ("cumsum", ["X"], ["Out"]), ("expand_v2", ["X"], ["Out"]),
    ("fill_any_like", ["X"], ["Out"]), ("fill_constant", [], ["Out"]),
    ("gelu", ["X"], ["Out"]), ("instance_norm", ["X"], ["Y"]),
    ("lookup_table", ["W", "Ids"], ["Out"]), ("lookup_table_v2", ["W", "Ids"], ["Out"]),
    ("norm", ["X"], ["Norm"]), ("p_norm", ["X"], ["Out"]),
    ("pow", ["X"], ["Out"]), ("reduce_mean", ["X"], ["Out"]),
    ("stack", ["X"], ["Y"]), ("top_k_v2", ["X"], ["Out", "Indices"]),
    ("logical_and", ["X", "Y"], ["Out"]), ("logical_not", ["X"], ["Out"]),
    ("meshgrid", ["X"], ["Out"]), ("roi_align", ["X", "ROIs"], ["Out"]),
    ("strided_slice", ["Input"], ["Out"]), ("where", ["Condition", "X", "Y"], ["Out"]),
    ("grid_sampler", ["X", "Grid"], ["Output"]), ("tile", ["X"], ["Out"]),
    ("group_norm", ["X"], ["Y", "Mean", "Variance"]), ("reduce_sum", ["X"], ["Out"]),
    ("square", ["X"], ["Out"]), ("softplus", ["X"], ["Out"]),
    ("shuffle_channel", ["X"], ["Out"]), ("reduce_max", ["X"], ["Out"]),
    ("scale", ["X"], ["Out"]),
)

WEIGHT_OP_SPECS: Mapping[str, OpSpec] = MappingProxyType({s.op_type: s for s in _WEIGHT_SPECS})
"""Ops that carry a weight (Paddle's SUPPORT_WEIGHT_QUANTIZATION_OP_DICT)."""

ACTIVATION_OP_SPECS: Mapping[str, OpSpec] = MappingProxyType(
    {name: OpSpec(name, tuple(ins), tuple(outs)) for name, ins, outs in _ACTIVATION_TABLE}
)
"""Ops whose inputs are activations (Paddle's SUPPORT_ACT_QUANTIZATION_OP_DICT)."""

TENSORRT_OP_TYPES: tuple[str, ...] = (
    "mul", "conv2d", "pool2d", "depthwise_conv2d", "elementwise_add", "leaky_relu",
)
"""Op types quantized when ``for_tensorrt`` is set (PaddleSlim's TENSORRT_OP_TYPES)."""

TRANSFORM_PASS_OP_TYPES: tuple[str, ...] = tuple(WEIGHT_OP_SPECS)
"""Weight op types (PaddleSlim 2.6 / Paddle 3.3.1 TRANSFORM_PASS_OP_TYPES)."""

QUANT_DEQUANT_PASS_OP_TYPES: tuple[str, ...] = tuple(ACTIVATION_OP_SPECS)
"""Activation op types (PaddleSlim 2.6 / Paddle 3.3.1 QUANT_DEQUANT_PASS_OP_TYPES, 89 types)."""

SUPPORTED_OP_TYPES: frozenset[str] = frozenset(TRANSFORM_PASS_OP_TYPES + QUANT_DEQUANT_PASS_OP_TYPES)
"""Every op type a config may name in ``quantize_op_types``."""

LAYER_OP_TYPES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Conv2D": ("conv2d", "depthwise_conv2d"),
    "Conv2DTranspose": ("conv2d_transpose",),
    "Linear": ("matmul_v2", "mul"),
})
"""Dygraph layer type (``quantizable_layer_type``) -> the static op types its weight op becomes when saved."""


def op_spec(op_type: str, *, as_weight_op: bool) -> OpSpec | None:
    """Return the spec of ``op_type`` as a weight op or as an activation op, None if unsupported."""
    table = WEIGHT_OP_SPECS if as_weight_op else ACTIVATION_OP_SPECS
    return table.get(op_type)


def weight_channel_axis(spec: OpSpec, attrs: Mapping[str, object]) -> int:
    """Output-channel axis of the weight of an op with ``attrs``.

    ``matmul_v2(trans_y=True)`` and ``matmul(transpose_Y=True)`` hold the weight as
    ``[out, in]``, so the channel axis is 0, not 1 (Paddle's V2 pass ignores this).
    """
    if spec.transpose_attr is not None and bool(attrs.get(spec.transpose_attr, False)):
        return 0
    return spec.channel_axis
