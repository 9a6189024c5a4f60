"""What each deployment runtime needs from an emitted model, as data.

``deploy_backend`` on ``quant_aware``/``convert``/``quant_post`` picks a profile:
the options it allows (bits, weight granularity, format), whether output-scale
observers are emitted by default, whether ``quant_post`` folds conv/affine chains
(``fold_affine``; measured on oneDNN only), whether it folds the affine chains a conv reads and
smooths depthwise conv inputs before calibrating (``fold_input_affine``, ``smooth_depthwise``;
oneDNN), whether the program states a runtime's own
requantization of average-pool inputs (``quantize_pool_inputs``, oneDNN) and its unsigned grid for relu outputs
(``unsigned_grid``, oneDNN), and which side files a post-training
run writes next to the model. A config a runtime cannot run is refused when it is
made, naming the backend, the option, the value and what is allowed — instead of
a model that loads and then fails or silently runs in float.

Measured here (see docs/deploy.md): Paddle Inference's oneDNN int8 pass accepts
only 8-bit activations and reads the output-scale pairs to requantize op outputs;
TensorRT takes per-channel weight scales only and reads activation scales from
the QDQ pairs or a calibration cache; the ONNX exporter maps the QDQ pairs on
quantized inputs to QuantizeLinear/DequantizeLinear and drops observer-only pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError

__all__ = ["BackendProfile", "BACKENDS", "ONEDNN_FC_REASON", "ONEDNN_OUTPUT_SCALES_WARNING", "ONEDNN_INT8_OPS_WARNING",
           "NO_BACKEND_OUTPUT_SCALES_WARNING",
           "backend_profile", "check_backend"]


@dataclass(frozen=True)
class BackendProfile:
    """The shape of a model one runtime can run in int8."""

    name: str
    runtime: Optional[str]
    activation_bits: tuple[int, ...]
    weight_bits: tuple[int, ...]
    weight_quantize_types: tuple[str, ...]
    onnx_formats: tuple[bool, ...]
    output_scales: str
    side_files: tuple[str, ...]
    note: str
    fold_affine: bool = False
    fold_input_affine: bool = False
    """Whether ``quant_post`` folds the parameter multiply/add chains an unpadded conv reads into that conv by
    default (:mod:`paddle_quant.passes.input_affine`; exact in fp32, and the runtime then runs no float elementwise
    ops there: PP-OCRv4 rec on oneDNN 0.65 -> 0.52 of fp32's latency, docs/ptq.md)."""
    smooth_depthwise: bool = False
    """Whether ``quant_post`` brings the inputs of quantized depthwise convs to one range per channel by default
    (per-channel weights and re-readable data only; exact in fp32): on oneDNN, PP-OCRv4 rec with PaddleSlim's four
    op types reads 59-72 % without it and up to 88-90 % with it (fp32 88-89 %), cls and det within noise
    (docs/ptq.md)."""
    quantize_pool_inputs: bool = False
    round_requantized_outputs: bool = False
    """Whether the runtime hands every reader of a tensor an int8 convolution writes at its scale the rounded
    tensor, which the emitted program then states (:mod:`paddle_quant.passes.requantized_outputs`)."""
    unsigned_grid: bool = False
    """Whether the runtime stores relu outputs as u8 at ``255 / scale`` (:mod:`paddle_quant.passes.unsigned_grid`),
    which ``quant_post``'s program then states, and reads a signed residual fused before such a relu as u8
    (:mod:`paddle_quant.passes.residual_relu`), which it then keeps from happening."""
    float_readers_bypass_observers: tuple[str, ...] = ()
    """Op types that, left in float, read an observed tensor itself rather than its observer pair: the
    runtime would otherwise run them in int8 (oneDNN's quant_dequant_onednn_pass keeps a conv/matmul in
    float only when one of its inputs does not come from a quantize/dequantize op)."""
    float_op_types: tuple[str, ...] = ()
    """Op types the plan leaves in float for this runtime whatever ``quantizable_op_type`` says, because
    the runtime computes them in int8 differently from any program the plan could write
    (:attr:`float_reason`)."""
    float_reason: str = ""
    """Why :attr:`float_op_types` stay in float (logged, and kept in the plan's skipped ops)."""


ONEDNN_FC_REASON = (
    "Paddle Inference's oneDNN int8 fc (what mul/matmul/matmul_v2 with a weight become) takes each output column's "
    "weight scale from compute_propagate_scales_onednn_pass, which reads the maximum of a contiguous run of the "
    "(in, out) weight instead of the column (Paddle 3.3.1; tests/deploy/test_onednn_fc.py reproduces oneDNN's "
    "output from that rule exactly): oneDNN re-rounds and clips every weight on a grid no per-column program "
    "states (on PP-OCRv4 rec's linears 1.3-3.5 % mean weight error against the program's 0.6-1.0 %; 4.6-7.2 "
    "output steps from the simulation on a CPU with VNNI, docs/deploy.md)")
"""Why a oneDNN model leaves its weight matmuls in float."""

ONEDNN_OUTPUT_SCALES_WARNING = (
    "output_scales='all' with deploy_backend='onednn': oneDNN takes the observed output scales as quantization "
    "points and runs the ops between quantized ones (residual adds, squeeze-and-excite multiplies, pools) in int8, "
    "rounding tensors that the program's observers leave in float (PP-OCRv4 det on an AMX CPU: 1 - cos(deployed, "
    "simulated) 0.029-0.045 over six algorithms, against 0.0009-0.0019 with 'none'; docs/deploy.md); leave "
    "output_scales unset ('none' for oneDNN) unless verify(runtime='onednn') shows the deployed model is what you want")
"""Logged when an explicit output_scales='all' meets deploy_backend='onednn'."""

ONEDNN_INT8_OPS_WARNING = (
    "output_scales='int8_ops' with deploy_backend='onednn': these observers are meant for the outputs an ONNX export "
    "requantizes; oneDNN takes them as quantization points too, rounding the int8 ops' outputs where the program's "
    "observers do not (PP-OCR cls, hist, on an AMX CPU: deployed 94.33 % vs simulated 93.33 %, against 94.33 / 94.33 "
    "with 'none'; bench/onednn_fidelity.py --output-scales int8_ops); leave output_scales unset for Paddle Inference")
"""Logged when an explicit output_scales='int8_ops' meets deploy_backend='onednn'."""

NO_BACKEND_OUTPUT_SCALES_WARNING = (
    "output_scales=%r without deploy_backend: the program states no runtime's arithmetic, and Paddle Inference's "
    "oneDNN int8 runs such a model far from its simulation (among other rules, it requantizes an int8 conv's output "
    "at the scale of a pool that reads it, for every reader; PP-OCR cls, KL, on an AMX CPU: 52.86 %% deployed against "
    "93.87 %% simulated, fp32 94.48 %%, 10000 images); pass deploy_backend='onednn' for Paddle Inference on CPU "
    "(93.20 / 93.13 %% there: deployed as simulated), and check verify(runtime=...) on the runtime you deploy on")
"""Logged (%-formatted with the value) when output_scales 'none' or 'int8_ops' is given without a deploy_backend."""

_ANY_WEIGHT_TYPE = ("channel_wise_abs_max", "abs_max", "range_abs_max", "moving_average_abs_max")
_WEIGHT_BITS = tuple(range(2, 9))
"""Weights of 2..8 bits are stored int8 (narrower grids restated in the int8 convention by freeze)."""

BACKENDS: dict[str, BackendProfile] = {
    "onednn": BackendProfile(
        "onednn", "onednn", (8,), _WEIGHT_BITS, _ANY_WEIGHT_TYPE, (True,), "none", (),
        "Paddle Inference on CPU, enable_onednn() + enable_onednn_int8()", fold_affine=True,
        fold_input_affine=True, smooth_depthwise=True, quantize_pool_inputs=True, round_requantized_outputs=True,
        unsigned_grid=True,
        float_readers_bypass_observers=("conv2d", "depthwise_conv2d", "fused_conv2d", "mul", "matmul", "matmul_v2"),
        float_op_types=("mul", "matmul", "matmul_v2"), float_reason=ONEDNN_FC_REASON),
    "tensorrt": BackendProfile(
        "tensorrt", "tensorrt", (8,), _WEIGHT_BITS, ("channel_wise_abs_max",), (True, False), "all", ("tensorrt_cache",),
        "Paddle Inference with enable_tensorrt_engine(precision_mode=Int8, use_calib_mode=False)"),
    "paddle_lite": BackendProfile(
        "paddle_lite", None, (8,), _WEIGHT_BITS, _ANY_WEIGHT_TYPE, (True, False), "all", (),
        "paddle_lite_opt to .nb (paddle_quant.export.paddle_lite), then the Paddle-Lite runtime"),
    "onnx": BackendProfile(
        "onnx", "onnxruntime", (8,), _WEIGHT_BITS, _ANY_WEIGHT_TYPE, (True,), "none", (),
        "paddle_quant.export.onnx to a QDQ .onnx, then onnxruntime"),
}
"""Backend name -> profile."""


def backend_profile(backend: Optional[str]) -> Optional[BackendProfile]:
    """The profile of ``backend`` (None for None); ConfigError for an unknown name."""
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise ConfigError(f"deploy_backend must be None or one of {sorted(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


def check_backend(backend: Optional[str], *, activation_bits: int, weight_bits: int, weight_quantize_type: str,
                  onnx_format: bool) -> None:
    """Refuse options the backend's runtime cannot run (ConfigError naming option, value and allowed values)."""
    profile = backend_profile(backend)
    if profile is None:
        return
    checks = (("activation_bits", activation_bits, profile.activation_bits),
              ("weight_bits", weight_bits, profile.weight_bits),
              ("weight_quantize_type", weight_quantize_type, profile.weight_quantize_types),
              ("onnx_format", onnx_format, profile.onnx_formats))
    for field, value, allowed in checks:
        if value not in allowed:
            raise ConfigError(f"deploy_backend={backend!r} ({profile.note}) cannot run {field}={value!r}; "
                              f"allowed: {list(allowed)}")
